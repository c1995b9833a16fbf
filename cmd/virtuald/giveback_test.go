package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests of accept mode giving its listening socket back to inetd
// (giveback.go), under a real inetd in "wait" mode.

// askServed connects to the world's first address on port and fails the
// test unless its own root answers.
func askServed(t *testing.T, w *world, port string) {
	t.Helper()
	e := w.serve[0]
	got, err := w.ns.Ask(e.addr + ":" + port)
	if msg := judge(e, got, err); msg != "" {
		t.Fatalf("%s; log ends:\n%s", msg, w.log.Tail(5))
	}
}

// With -idle-exit, accept mode exits once idle and inetd takes the socket
// back: the next connection is served by a new virtuald that inetd starts.
func TestAcceptIdleExit(t *testing.T) {
	w := newWorld(t)
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		"7310 stream tcp wait root "+w.bin["virtuald"]+" virtuald -accept -idle-exit 300ms "+w.conf+" "+whoami))
	w.ns.WaitListening("tcp", 7310)
	askServed(t, w, "7310")
	for _, want := range []string{"no connection for -idle-exit 300ms", "accept mode: stopped"} {
		if _, ok := w.log.WaitFor(10*time.Second, want); !ok {
			t.Fatalf("no line %q after the connection ended; log ends:\n%s", want, w.log.Tail(5))
		}
	}
	askServed(t, w, "7310")
	if _, ok := waitCount(w, 2, "accept mode: serving"); !ok {
		t.Fatalf("inetd did not start a second virtuald -accept for the next connection; log ends:\n%s", w.log.Tail(5))
	}
}

// waitCount waits until n log lines hold every one of subs.
func waitCount(w *world, n int, subs ...string) (int, bool) {
	got := w.log.AwaitCount(n, 10*time.Second, subs...)
	return got, got >= n
}

// When inetd stops under a running accept mode, virtuald stops accepting
// (as on SIGTERM) and lets go of the socket at once, while its running
// service goes on: an inetd started again binds the port and serves, and
// the old virtuald exits when its last service ends.
func TestAcceptParentDies(t *testing.T) {
	w := newWorld(t)
	w.ns.AddAddr("203.0.113.21")
	conf := w.roots.WriteConf("conf-hold", "203.0.113.21 "+holdRoot(t, w, "hold-a"), w.serve[0].addr+" "+filepath.Join(w.roots.Dir, w.serve[0].root))
	w.conf = conf
	inetdConf := w.roots.WriteConf("inetd.conf", "7311 stream tcp wait root "+w.bin["virtuald"]+" virtuald -accept "+conf+" "+whoami)
	inetd := w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", inetdConf)
	w.ns.WaitListening("tcp", 7311)
	held := openHeld(t, w, "203.0.113.21:7311")
	if held == nil {
		t.Fatalf("the held connection was refused; log ends:\n%s", w.log.Tail(5))
	}
	defer held.Close()

	stopped := time.Now()
	inetd.Stop()
	if _, ok := w.log.WaitFor(10*time.Second, "no new connections; waiting up to 30s for 1 running service(s)"); !ok {
		t.Fatalf("virtuald did not stop accepting when inetd died; log ends:\n%s", w.log.Tail(5))
	}
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", inetdConf)
	// The port is inetd's again when inetd alone listens on it: the old
	// virtuald, still running its service, no longer holds the socket.
	w.ns.Await("the new inetd alone listens on port 7311", 20*time.Second, func() bool {
		out, _ := w.ns.Exec("ss", "-Hltnp", "sport = :7311").Output()
		return strings.Contains(string(out), `"inetd"`) && !strings.Contains(string(out), `"virtuald"`)
	})
	askServed(t, w, "7311")
	t.Logf("inetd stopped and started again: a connection served %v after the stop", time.Since(stopped).Round(time.Millisecond))

	if w.log.Count("accept mode: stopped") != 0 {
		t.Fatal("the old virtuald exited before its running service ended")
	}
	held.Close()
	if _, ok := w.log.WaitFor(10*time.Second, "local=203.0.113.21:7311", "outcome=exited"); !ok {
		t.Errorf("the held service's line is missing; log ends:\n%s", w.log.Tail(5))
	}
	if _, ok := waitCount(w, 1, "accept mode: stopped"); !ok {
		t.Errorf("the old virtuald did not exit after its last service ended; log ends:\n%s", w.log.Tail(5))
	}
}
