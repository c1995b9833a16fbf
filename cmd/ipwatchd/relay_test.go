package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
)

// TestRelaySyslog: a real C service calling syslog(3) inside roots built
// by `ipwatchctl install`, under a real inetd, virtuald and ipwatchd
// -relay-syslog. Its messages reach the host's syslog under the relay's
// header naming the entry; a root that floods loses its own messages
// (counted in status) and no other root's; hostile dev/ directories are
// refused with their reasons and nothing in them is followed; check
// stops warning about the dev/log the relay serves; the sockets go when
// the daemon stops and come back when it starts again.
func TestRelaySyslog(t *testing.T) {
	w := newWorld(t, 0)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatal("gcc is needed to build the C service (apt-get install gcc libc6-dev)")
	}
	svc := filepath.Join(w.roots.Dir, "bin", "logsvc")
	testbed.Must(t, os.MkdirAll(filepath.Dir(svc), 0o755))
	if out, err := exec.Command(gcc, "-O2", "-o", svc, "testdata/logsvc.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v: %s", err, out)
	}

	root := func(name string) string {
		r := filepath.Join(w.roots.Dir, name)
		if out, err := exec.Command(w.bin["ipwatchctl"], "install", "-dev", "-user", "nobody", r, svc).CombinedOutput(); err != nil {
			t.Fatalf("install %s: %v: %s", name, err, out)
		}
		return r
	}
	a, flood := root("a"), root("flood")
	outside := filepath.Join(w.roots.Dir, "outside")
	testbed.Must(t, os.Mkdir(outside, 0o755))
	linked := root("linked")
	os.RemoveAll(filepath.Join(linked, "dev"))
	testbed.Must(t, os.Symlink(outside, filepath.Join(linked, "dev")))
	tenant := root("tenant")
	testbed.Must(t, os.Chown(filepath.Join(tenant, "dev"), 1000, 1000))
	inWay := root("in-the-way")
	testbed.Must(t, os.WriteFile(filepath.Join(inWay, "dev", "log"), []byte("keep"), 0o644))
	w.conf = w.roots.WriteConf("conf",
		"192.0.2.1 "+a+" user=nobody",
		"192.0.2.2 "+flood+" user=nobody",
		"192.0.2.3 "+linked+" user=nobody",
		"192.0.2.4 "+tenant+" user=nobody",
		"192.0.2.5 "+inWay+" user=nobody",
	)
	for _, addr := range []string{"192.0.2.1", "192.0.2.2"} {
		w.ns.AddAddr(addr)
	}
	line := func(port, n string) string {
		return port + " stream tcp nowait root " + w.bin["virtuald"] + " virtuald -socket " + w.socket + " " + w.conf + " " + svc + " " + n
	}
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf", line("7000", "1"), line("7001", "300")))
	w.ns.WaitListening("tcp", 7000)
	w.ns.WaitListening("tcp", 7001)
	w.startDaemon("-bpf", "off", "-relay-syslog", "-relay-burst", "5", "-relay-rate", "0.001")

	relayOf := func(key string) *admin.RelayStatus {
		st, err := w.status()
		if err != nil {
			t.Fatal(err)
		}
		if e := w.entry(st, key); e != nil && e.Relay != nil {
			return e.Relay
		}
		return &admin.RelayStatus{}
	}
	waitRelay := func(key, state string) *admin.RelayStatus {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if r := relayOf(key); r.State == state {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: relay %+v, want %s", key, relayOf(key), state)
			}
		}
	}
	waitRelay("192.0.2.1", "on")
	ask := func(addr string) {
		t.Helper()
		if got, err := w.ns.Ask(addr); got != "done\n" || err != nil {
			t.Fatalf("%s: %q, %v; log:\n%s", addr, got, err, w.log.Tail(5))
		}
	}

	ask("192.0.2.1:7000")
	msg, ok := w.log.WaitFor(10*time.Second, "virtuald[192.0.2.1]: logsvc[", "]: message 1 of 1, uid 65534")
	t.Logf("relayed: %q", msg)
	if !ok || !strings.HasPrefix(msg, "<30>") {
		t.Fatalf("the service's message did not reach the host's syslog under its entry (%q); log:\n%s", msg, w.log.Tail(10))
	}

	// A flood from one root; the other's next message still arrives.
	ask("192.0.2.2:7001")
	ask("192.0.2.1:7000")
	if w.log.AwaitCount(2, 10*time.Second, "virtuald[192.0.2.1]: logsvc[", "message 1 of 1") < 2 {
		t.Fatalf("the quiet root's second message was lost to the flood; relay %+v", relayOf("192.0.2.1"))
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := relayOf("192.0.2.2")
		if r.Relayed+r.Dropped == 300 {
			if r.Relayed < 5 || r.Relayed > 6 {
				t.Errorf("flood: %+v, want the burst of 5 relayed and the rest dropped", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flood: %+v, want 300 messages counted", r)
		}
	}

	// Hostile dev/: refused, with the reason, nothing followed.
	for key, want := range map[string]string{
		"192.0.2.3": linked + "/dev is a symbolic link: not followed",
		"192.0.2.4": tenant + "/dev is owned by uid 1000 with mode 0755",
		"192.0.2.5": inWay + "/dev/log is in the way (not a socket): not replaced",
	} {
		if r := waitRelay(key, "off"); !strings.Contains(r.Reason, want) {
			t.Errorf("%s: relay %+v, want refused: %s", key, r, want)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the relay made something outside the roots: %v", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(inWay, "dev", "log")); string(b) != "keep" {
		t.Errorf("a file in the way was replaced: %q", b)
	}

	// check knows the relay: no warning where it serves dev/log, its
	// reason where it cannot.
	out, _ := exec.Command(w.bin["ipwatchctl"], "-socket", w.socket, "check", w.conf).CombinedOutput()
	if strings.Contains(string(out), a+"/dev/log") || !strings.Contains(string(out), linked+"/dev/log is missing, and ipwatchd's log relay cannot serve it: "+linked+"/dev is a symbolic link") {
		t.Errorf("check with the relay on:\n%s", out)
	}

	// Stopped: the sockets go. Started again: they come back.
	w.daemon.Stop()
	if _, err := os.Lstat(filepath.Join(a, "dev", "log")); !os.IsNotExist(err) {
		t.Errorf("the daemon stopped, its socket stayed: %v", err)
	}
	w.startDaemon("-bpf", "off", "-relay-syslog")
	waitRelay("192.0.2.1", "on")
	ask("192.0.2.1:7000")
	if w.log.AwaitCount(3, 10*time.Second, "virtuald[192.0.2.1]: logsvc[", "message 1 of 1") < 3 {
		t.Fatalf("no relay after a restart; log:\n%s", w.log.Tail(10))
	}
}
