package main

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// An entry's max=, per-source= and rate= hold per connection (inetd's nowait,
// a virtuald each), in every way a service is started (issue 23): under
// the limit a connection is served, past it closed at once with zero
// bytes and a log line that says which limit and how many the entry
// refused; a place is free again once its service ended. The service
// never gets the descriptor that holds its places when it is isolated.
func TestEntryLimits(t *testing.T) {
	w := newWorld(t)
	for _, a := range []string{"203.0.113.51", "203.0.113.52", "203.0.113.53", "203.0.113.54", "203.0.113.55", "198.51.100.41", "198.51.100.42"} {
		w.ns.AddAddr(a)
	}
	conf := w.roots.WriteConf("conf-slots",
		"203.0.113.51 "+holdRoot(t, w, "max-all")+" max=2",
		"203.0.113.52 "+holdRoot(t, w, "max-none")+" max=2 isolate=none",
		"203.0.113.53 "+holdRoot(t, w, "max-user")+" max=2 isolate=all,user",
		"203.0.113.54 "+holdRoot(t, w, "per-source")+" per-source=1",
		"203.0.113.55 "+w.roots.Root("rated", w.bin["whoami"])+" rate=1/m")
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		"7310 stream tcp nowait root "+w.bin["virtuald"]+" virtuald "+conf+" "+whoami))
	w.ns.WaitListening("tcp", 7310)

	var held []net.Conn
	defer closeAll(&held)
	// hold connects from src and returns the service's line, keeping the
	// connection open; "" when it was refused.
	hold := func(src, addr string) string {
		t.Helper()
		c := dialFrom(t, w, src, addr)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if line == "" {
			c.Close()
			return ""
		}
		if err != nil || !strings.HasPrefix(line, "root=") {
			t.Fatalf("%s: %q %v", addr, line, err)
		}
		held = append(held, c)
		return line
	}

	for _, c := range []struct {
		addr, root string
		fds        int
	}{
		{"203.0.113.51", "max-all", 3},
		{"203.0.113.52", "max-none", 4}, // without isolation, the service holds its places
		{"203.0.113.53", "max-user", 3},
	} {
		addr := c.addr + ":7310"
		for i := 0; i < 2; i++ {
			line := hold("198.51.100.41", addr)
			if !strings.HasPrefix(line, "root="+c.root+" ") {
				t.Fatalf("connection %d to %s under max=2: %q; log ends:\n%s", i+1, c.root, line, w.log.Tail(3))
			}
			_, fds, _ := strings.Cut(strings.TrimSpace(line), " fds=")
			if n := len(strings.Split(fds, ",")); !strings.HasPrefix(fds, "0,1,2") || n != c.fds {
				t.Errorf("%s: the service was given descriptors %s, want 0-2 and %d more", c.root, fds, c.fds-3)
			}
		}
		if hold("198.51.100.42", addr) != "" {
			t.Fatalf("%s: a third connection served past max=2", c.root)
		}
		if l, ok := w.log.WaitFor(5*time.Second, "local="+addr, "outcome=refused", "at once (max=2)"); !ok || !strings.Contains(l, "refused=1 ") {
			t.Errorf("%s: no log line for max=2 with its count: %q; log ends:\n%s", c.root, l, w.log.Tail(3))
		}
		// A place given back (its service ended) is taken again.
		held[len(held)-1].Close()
		held = held[:len(held)-1]
		deadline := time.Now().Add(10 * time.Second)
		for hold("198.51.100.42", addr) == "" {
			if time.Now().After(deadline) {
				t.Fatalf("%s: max=2 still refuses after a service ended", c.root)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// per-source=1, and rate=1/m, in virtuald itself (ipwatchd, which
	// would shed them in the kernel, is absent).
	checkPerSourceOne(t, w, func(src, addr string) bool { return hold(src, addr) != "" }, "203.0.113.54:7310")
	checkRateOneAMinute(t, w, "203.0.113.55:7310")
}
