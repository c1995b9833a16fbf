package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// With -cpu-share service, accept mode favours the service of an entry
// below its share (issue 23 item 1): a quiet entry's service beside a busy entry's runs with its
// session at a negative nice, a busy entry's (alone, then ahead of the others)
// never; the favour is taken back before the service is reaped, so that
// a process it leaves in its session (a tenant keeping the favour past
// its connection) has none, and once -favour has passed.
func TestAcceptFavour(t *testing.T) {
	w := newWorld(t)
	for _, a := range []string{"203.0.113.51", "203.0.113.52", "203.0.113.53"} {
		w.ns.AddAddr(a)
	}
	linger := holdRoot(t, w, "hold-linger")
	testbed.Must(t, os.WriteFile(filepath.Join(linger, "LINGER"), nil, 0o644))
	conf := w.roots.WriteConf("conf-favour",
		"203.0.113.51 "+holdRoot(t, w, "hold-busy"),
		"203.0.113.52 "+holdRoot(t, w, "hold-quiet"),
		"203.0.113.53 "+linger+" isolate=none")
	accept, _ := startAccept(t, w, "0.0.0.0:7305", "-cpu-share", "service", "-favour", "1h", conf, whoami)
	var held []net.Conn
	defer closeAll(&held)
	open := func(addr string) (int, string) { return openService(t, w, accept.Process.Pid, &held, addr) }

	for i := 1; i <= 3; i++ {
		if pid, _ := open("203.0.113.51:7305"); sessionNice(t, pid) != 0 {
			t.Errorf("the busy entry's service %d (alone, then ahead) is favoured: nice %d", i, sessionNice(t, pid))
		}
	}
	// 1.25^4 < 3 < 1.25^5: nice -4 weighs one session as three.
	if pid, _ := open("203.0.113.52:7305"); sessionNice(t, pid) != -4 {
		t.Errorf("the quiet entry's service beside 3 of the busy one's has nice %d, want -4", sessionNice(t, pid))
	}

	_, line := open("203.0.113.53:7305")
	m := regexp.MustCompile(` linger=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no lingering process: %q", line)
	}
	left, _ := strconv.Atoi(m[1])
	t.Cleanup(func() { unix.Kill(left, unix.SIGKILL) })
	if n := sessionNice(t, left); n != -4 {
		t.Fatalf("the process the favoured service started has nice %d, want -4", n)
	}
	held[len(held)-1].Close()
	if _, ok := w.log.WaitFor(10*time.Second, "local=203.0.113.53:7305", "outcome=exited"); !ok {
		t.Fatalf("the lingering root's service did not end; log ends:\n%s", w.log.Tail(5))
	}
	if n := sessionNice(t, left); n != 0 {
		t.Errorf("a process left in the session of a service that ended keeps nice %d", n)
	}

	// -favour bounds the favour of a service that runs on.
	short, _ := startAccept(t, w, "0.0.0.0:7306", "-cpu-share", "service", "-favour", "100ms", conf, whoami)
	accept = short
	open("203.0.113.51:7306")
	open("203.0.113.51:7306")
	pid, _ := open("203.0.113.52:7306")
	waitFor(t, func() bool { return sessionNice(t, pid) == 0 })
}

// Without CAP_SYS_NICE a favour could not be given, and without
// CAP_SYS_ADMIN not always taken back: accept mode says so at its start
// and serves without it.
func TestAcceptFavourNeedsCapabilities(t *testing.T) {
	w := newWorld(t)
	w.ns.AddAddr("203.0.113.54")
	conf := w.roots.WriteConf("conf-nice", "203.0.113.54 "+w.roots.Root("no-nice", w.bin["whoami"]))
	startAcceptUnder(t, w, "203.0.113.54:7307", []string{"setpriv", "--bounding-set", "-sys_nice"}, "-cpu-share", "service", conf, whoami)
	if _, ok := w.log.WaitFor(10*time.Second, "accept mode: -favour is off: it needs CAP_SYS_NICE"); !ok {
		t.Errorf("no word that the favour is off; log ends:\n%s", w.log.Tail(5))
	}
	if c := openHeld(t, w, "203.0.113.54:7307"); c == nil {
		t.Error("refused without CAP_SYS_NICE")
	} else {
		c.Close()
	}
}

// openService holds a connection to addr (kept in held) and returns its
// service, the new child of virtuald -accept (pid; in a pid namespace,
// the service's pid 1), and the service's line.
func openService(t *testing.T, w *world, pid int, held *[]net.Conn, addr string) (int, string) {
	t.Helper()
	before := childrenOf(t, pid)
	c := dialFrom(t, w, "203.0.113.51", addr)
	*held = append(*held, c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "root=") {
		t.Fatalf("%s: %q %v", addr, line, err)
	}
	for kid := range childrenOf(t, pid) {
		if !before[kid] {
			return kid, line
		}
	}
	t.Fatalf("%s: no new child of virtuald", addr)
	return 0, ""
}

// childrenOf returns the children of pid, from each of its threads.
func childrenOf(t *testing.T, pid int) map[int]bool {
	t.Helper()
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("the threads of %d: %v", pid, err)
	}
	kids := map[int]bool{}
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(s)
			kids[n] = true
		}
	}
	return kids
}

// sessionNice is the nice of the autogroup of pid's session
// ("/autogroup-N nice X").
func sessionNice(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/autogroup")
	f := strings.Fields(string(b))
	if err != nil || len(f) != 3 || f[1] != "nice" {
		t.Fatalf("the autogroup of %d: %q %v (the kernel's autogroups are needed)", pid, b, err)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
