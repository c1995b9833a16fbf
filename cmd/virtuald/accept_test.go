package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// Accept mode under inetd's "wait": every address from its own root with
// its entry's credentials, the hostile roots refused, one line per
// connection with the service's exit status and duration.
func TestAcceptInetd(t *testing.T) {
	w := newWorld(t)
	line := func(proto string) string {
		return "7300 stream " + proto + " wait root " + w.bin["virtuald"] + " virtuald -accept " + w.conf + " " + whoami
	}
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf", line("tcp"), line("tcp6")))
	w.ns.WaitListening("tcp", 7300)
	n := w.checkServed(t, 7300, 80, nil)
	t.Logf("%d connections through inetd to virtuald -accept", n)
	// Every connection gets its line, when its service has exited.
	if got := w.log.AwaitCount(n, 10*time.Second, ":7300 ", "outcome=exited status=0"); got != n {
		t.Errorf("%d exit lines for %d connections", got, n)
	}
	w.checkHostile(t, 7300)
	if l, ok := w.log.WaitFor(5*time.Second, "local=192.0.2.16:7300", "outcome=exited", "status=0", "duration="); !ok || !strings.Contains(l, "user=2001(2001:2002)") {
		t.Errorf("no exit line with status, duration and user for 192.0.2.16: %q", l)
	}
}

// Accept mode under systemd's socket passing (Accept=no): the listening
// socket arrives as fd 3 with LISTEN_FDS.
func TestAcceptSystemd(t *testing.T) {
	w := newWorld(t)
	w.ns.Start(w.log, "systemd-socket-activate", "-l", "7301", w.bin["virtuald"], "-accept", w.conf, whoami)
	w.ns.WaitListening("tcp", 7301)
	n := w.checkServed(t, 7301, 80, nil)
	t.Logf("%d connections through systemd-socket-activate to virtuald -accept", n)
	w.checkHostile(t, 7301)
	// The service must not see systemd's variables (checked through the
	// log line: the environment reaches the service unchanged otherwise).
	if _, ok := w.log.WaitFor(5*time.Second, "serving 1 listening socket(s)"); !ok {
		t.Errorf("virtuald did not take the socket systemd passed; log ends:\n%s", w.log.Tail(5))
	}
}

// holdRoot makes a root whose service keeps the connection until the
// client closes it.
func holdRoot(t *testing.T, w *world, name string) string {
	r := w.roots.Root(name, w.bin["whoami"])
	testbed.Must(t, os.WriteFile(filepath.Join(r, "HOLD"), nil, 0o644))
	return r
}

// openHeld connects and reads the service's line, leaving the connection
// open; it returns nil when the connection was refused (closed, no byte).
func openHeld(t *testing.T, w *world, addr string) net.Conn {
	t.Helper()
	c, err := w.ns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if line == "" {
		c.Close()
		return nil
	}
	if err != nil || !strings.HasPrefix(line, "root=") {
		t.Fatalf("%s: %q %v", addr, line, err)
	}
	return c
}

// inetdAccept starts inetd with one line for port: "wait", virtuald
// -accept with args (flags and the conf) and the test service.
func inetdAccept(w *world, port int, args string) {
	p := strconv.Itoa(port)
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		p+" stream tcp wait root "+w.bin["virtuald"]+" virtuald -accept "+args+" "+whoami))
	w.ns.WaitListening("tcp", port)
}

// closeAll closes the connections a test holds.
func closeAll(held *[]net.Conn) {
	for _, c := range *held {
		c.Close()
	}
}

// The concurrency limits hold: per entry, then in all; a refused
// connection gets no byte; once services end, connections are served again.
func TestAcceptLimits(t *testing.T) {
	w := newWorld(t)
	w.ns.AddAddr("203.0.113.21")
	w.ns.AddAddr("203.0.113.22")
	conf := w.roots.WriteConf("conf-hold", "203.0.113.21 "+holdRoot(t, w, "hold-a"), "203.0.113.22 "+holdRoot(t, w, "hold-b"))
	inetdAccept(w, 7302, "-max-children 5 -max-per-entry 3 "+conf)
	var held []net.Conn
	defer closeAll(&held)
	for i := 0; i < 3; i++ {
		c := openHeld(t, w, "203.0.113.21:7302")
		if c == nil {
			t.Fatalf("connection %d to the first entry refused under the limit; log ends:\n%s", i+1, w.log.Tail(5))
		}
		held = append(held, c)
	}
	if c := openHeld(t, w, "203.0.113.21:7302"); c != nil {
		c.Close()
		t.Fatal("a fourth connection to one entry was served past -max-per-entry 3")
	}
	if _, ok := w.log.WaitFor(5*time.Second, "local=203.0.113.21:7302", "outcome=refused", "-max-per-entry 3"); !ok {
		t.Errorf("no log line for the per-entry limit; log ends:\n%s", w.log.Tail(3))
	}
	for i := 0; i < 2; i++ {
		c := openHeld(t, w, "203.0.113.22:7302")
		if c == nil {
			t.Fatalf("connection %d to the second entry refused under the limit", i+1)
		}
		held = append(held, c)
	}
	if c := openHeld(t, w, "203.0.113.22:7302"); c != nil {
		c.Close()
		t.Fatal("a sixth connection was served past -max-children 5")
	}
	if _, ok := w.log.WaitFor(5*time.Second, "outcome=refused", "-max-children 5"); !ok {
		t.Errorf("no log line for the total limit; log ends:\n%s", w.log.Tail(3))
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c := openHeld(t, w, "203.0.113.21:7302"); c != nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connections are still refused after every service ended")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startAccept starts virtuald -accept with args on a listening socket of
// its own at laddr in the namespace (as inetd's "wait" passes one, on fd
// 0), and returns the command and a channel that gets its exit. It is
// killed at cleanup.
func startAccept(t *testing.T, w *world, laddr string, args ...string) (*exec.Cmd, chan error) {
	t.Helper()
	return startAcceptUnder(t, w, laddr, nil, args...)
}

// startAcceptUnder is startAccept with virtuald run by the command in
// under (for example setpriv, to start it with fewer capabilities).
func startAcceptUnder(t *testing.T, w *world, laddr string, under []string, args ...string) (*exec.Cmd, chan error) {
	t.Helper()
	var lnFile *os.File
	if err := w.ns.Do(func() error {
		ln, err := net.Listen("tcp", laddr)
		if err != nil {
			return err
		}
		lnFile, err = ln.(*net.TCPListener).File()
		ln.Close()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lnFile.Close() })
	argv := append(append(under, w.bin["virtuald"], "-accept"), args...)
	cmd := w.ns.Command(w.log, argv[0], argv[1:]...)
	cmd.Stdin = lnFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, exited
}

// startHeldAccept starts virtuald -accept (with extra flags) for a root
// whose service holds its connection, and returns the command, a channel
// that gets its exit, and one held connection.
func startHeldAccept(t *testing.T, w *world, addr string, flags ...string) (*exec.Cmd, chan error, net.Conn) {
	t.Helper()
	w.ns.AddAddr(addr)
	conf := w.roots.WriteConf("conf-hold", addr+" "+holdRoot(t, w, "hold-a"))
	cmd, exited := startAccept(t, w, addr+":7303", append(flags, conf, whoami)...)
	c := openHeld(t, w, addr+":7303")
	if c == nil {
		t.Fatal("refused")
	}
	return cmd, exited, c
}

// SIGTERM stops accepting and lets running services finish, then exits 0.
func TestAcceptStop(t *testing.T) {
	w := newWorld(t)
	cmd, exited, c := startHeldAccept(t, w, "203.0.113.21")
	cmd.Process.Signal(unix.SIGTERM)
	if _, ok := w.log.WaitFor(5*time.Second, "no new connections; waiting up to 30s for 1 running service(s)"); !ok {
		t.Fatalf("no stopping line; log ends:\n%s", w.log.Tail(3))
	}
	select {
	case err := <-exited:
		t.Fatalf("exited (%v) while a service was still running", err)
	default:
	}
	c.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after its last service ended")
	}
	if _, ok := w.log.WaitFor(5*time.Second, "local=203.0.113.21:7303", "outcome=exited"); !ok {
		t.Errorf("the running service's line is missing; log ends:\n%s", w.log.Tail(3))
	}
}

// A service that never ends cannot hold a stop for ever: past
// -stop-timeout it is killed, with its session, and virtuald exits 0; a
// second SIGTERM does the same at once.
func TestAcceptStopTimeout(t *testing.T) {
	for _, second := range []bool{false, true} {
		w := newWorld(t)
		cmd, exited, c := startHeldAccept(t, w, "203.0.113.22", "-stop-timeout", map[bool]string{false: "1s", true: "1h"}[second])
		defer c.Close()
		cmd.Process.Signal(unix.SIGTERM)
		if second {
			if _, ok := w.log.WaitFor(5*time.Second, "no new connections"); !ok {
				t.Fatalf("no stopping line; log ends:\n%s", w.log.Tail(3))
			}
			cmd.Process.Signal(unix.SIGTERM)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("second SIGTERM %v: still running with a stuck service; log ends:\n%s", second, w.log.Tail(3))
		}
		if _, ok := w.log.WaitFor(5*time.Second, "killing 1 running service(s)"); !ok {
			t.Errorf("second SIGTERM %v: no line about the kill; log ends:\n%s", second, w.log.Tail(3))
		}
		if _, ok := w.log.WaitFor(5*time.Second, "local=203.0.113.22:7303", "outcome=killed", "signal=killed"); !ok {
			t.Errorf("second SIGTERM %v: the killed service's line is missing; log ends:\n%s", second, w.log.Tail(3))
		}
	}
}

// dialFrom connects from the local address src to addr in the namespace,
// so that a test can be several clients.
func dialFrom(t *testing.T, w *world, src, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := w.ns.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		var err error
		c, err = d.Dial("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// served reads the service's first line on c and leaves c open; false
// when the connection was closed without a byte (a refusal: anything
// else, a byte or a wait to the deadline, fails the test).
func served(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case line == "" && err == io.EOF:
		return false
	case err != nil || !strings.HasPrefix(line, "root="):
		t.Fatalf("%s: %q %v", c.LocalAddr(), line, err)
	}
	return true
}

// An entry's max=, per-source= and rate= (issue 23) hold in accept mode
// under inetd, each for its own entry: under the limit a connection is
// served, past it closed at once with zero bytes and a log line that
// says which limit and how many the entry refused; once a service ends
// its place is free again.
func TestAcceptEntryLimits(t *testing.T) {
	w := newWorld(t)
	for _, a := range []string{"203.0.113.31", "203.0.113.32", "203.0.113.33", "198.51.100.41", "198.51.100.42"} {
		w.ns.AddAddr(a)
	}
	conf := w.roots.WriteConf("conf-limits",
		"203.0.113.31 "+holdRoot(t, w, "hold-max")+" max=2",
		"203.0.113.32 "+holdRoot(t, w, "hold-source")+" per-source=1",
		"203.0.113.33 "+w.roots.Root("rated", w.bin["whoami"])+" rate=1/m")
	inetdAccept(w, 7304, conf)
	var held []net.Conn
	defer closeAll(&held)
	hold := func(src, addr string) bool {
		c := dialFrom(t, w, src, addr)
		if !served(t, c) {
			c.Close()
			return false
		}
		held = append(held, c)
		return true
	}

	// max=2: two at once, from any clients; the third refused.
	if !hold("198.51.100.41", "203.0.113.31:7304") || !hold("198.51.100.42", "203.0.113.31:7304") {
		t.Fatal("refused under max=2")
	}
	if hold("198.51.100.42", "203.0.113.31:7304") {
		t.Fatal("a third connection served past max=2")
	}
	if l, ok := w.log.WaitFor(5*time.Second, "local=203.0.113.31:7304", "outcome=refused", "at once (max=2)"); !ok || !strings.Contains(l, "refused=1 ") {
		t.Errorf("no log line for max=2 with its count: %q; log ends:\n%s", l, w.log.Tail(3))
	}

	checkPerSourceOne(t, w, hold, "203.0.113.32:7304")
	checkRateOneAMinute(t, w, "203.0.113.33:7304")

	// A place given back is taken again.
	held[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for !hold("198.51.100.41", "203.0.113.31:7304") {
		if time.Now().After(deadline) {
			t.Fatal("max=2 still refuses after a service ended")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkPerSourceOne checks an entry with per-source=1 at addr: one
// connection at once from each client (198.51.100.41 and .42, which
// hold dials from), past it a refusal with its log line.
func checkPerSourceOne(t *testing.T, w *world, hold func(src, addr string) bool, addr string) {
	t.Helper()
	if !hold("198.51.100.41", addr) {
		t.Fatal("refused under per-source=1")
	}
	if hold("198.51.100.41", addr) {
		t.Fatal("a second connection from one client served past per-source=1")
	}
	if !hold("198.51.100.42", addr) {
		t.Fatal("another client refused: per-source= is per client")
	}
	if _, ok := w.log.WaitFor(5*time.Second, "local="+addr, "remote=198.51.100.41:", "outcome=refused", "from 198.51.100.41 (per-source=1)"); !ok {
		t.Errorf("no log line for per-source=1; log ends:\n%s", w.log.Tail(3))
	}
}

// checkRateOneAMinute checks an entry with rate=1/m at addr, served from
// the root "rated": a burst of one, then nothing for a minute, logged
// one line a second at most (the others are counted in the next).
func checkRateOneAMinute(t *testing.T, w *world, addr string) {
	t.Helper()
	if got, err := w.ns.Ask(addr); err != nil || !strings.HasPrefix(got, "root=rated") {
		t.Fatalf("refused under rate=1/m: %q %v", got, err)
	}
	for i := 0; i < 3; i++ {
		if got, err := w.ns.Ask(addr); got != "" || err != nil {
			t.Fatalf("connection %d served past rate=1/m: %q %v", i+2, got, err)
		}
	}
	if _, ok := w.log.WaitFor(5*time.Second, "local="+addr, "outcome=refused", "new connections to this entry (rate=1/m)"); !ok {
		t.Errorf("no log line for rate=1/m; log ends:\n%s", w.log.Tail(3))
	}
	if n := w.log.Count("local="+addr, "outcome=refused"); n < 1 || n > 3 {
		t.Errorf("%d refusal lines for 3 refusals", n)
	}
}
