package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/conftable"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// settle waits until a read of the conf file at p is no longer racy
// (conf.Racy), so that a table of it may be written.
func settle(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	testbed.Must(t, unix.Stat(p, &st))
	time.Sleep(time.Until(conf.RacyUntil(&st)))
}

// With ipwatchd down, the front serves from the table the Go program
// wrote when it read the file (internal/conftable), by itself, every
// entry it serves from a daemon's answer, with the Go program's log
// line; never from a table of another version of the file, nor from one
// a local user could have written, nor a catch-all a line suspends.
func TestFrontTable(t *testing.T) {
	w := newWorld(t)
	only, handovers := frontOnly(t)
	runDir := t.TempDir()
	testbed.Must(t, os.Chmod(runDir, 0o755))
	sock := filepath.Join(runDir, "ipwatchd.sock") // no daemon there
	goProgram, full := w.bin["virtuald-go"], w.bin["virtuald"]
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		"7620 stream tcp nowait root "+only+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7620 stream tcp6 nowait root "+only+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7621 stream tcp nowait root "+full+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7622 stream tcp nowait root "+only+" virtuald -socket "+sock+" -isolate none "+w.conf+" "+whoami,
		"7623 stream tcp nowait root "+goProgram+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7623 stream tcp6 nowait root "+goProgram+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7624 stream tcp nowait root "+goProgram+" virtuald -socket "+sock+" -isolate none "+w.conf+" "+whoami,
		"7625 stream tcp nowait root "+only+" virtuald -socket "+sock+" -isolate none "+w.conf+" /bin/dynamic",
		"7626 stream tcp nowait root "+only+" virtuald -socket "+sock+" -isolate none "+w.conf+" /bin/complete",
		"7627 stream tcp nowait root "+full+" virtuald -socket "+sock+" -isolate none "+w.conf+" /bin/complete",
	))
	// A dynamically linked program (the host's true, without its
	// libraries): its check is the Go program's.
	dynamic, err := os.ReadFile("/bin/true")
	testbed.Must(t, err)
	testbed.Must(t, os.WriteFile(filepath.Join(w.roots.Dir, "v4-01", "bin", "dynamic"), dynamic, 0o755))
	// The same with its libraries: the Go program's check finds it
	// ready, and the front trusts that check while its files stay as
	// they are.
	testbed.CopyDynamic(t, filepath.Join(w.roots.Dir, "v4-02"), "/bin/true", "/bin/complete")
	for _, p := range []int{7620, 7621, 7622, 7623, 7624, 7625, 7626, 7627} {
		w.ns.WaitListening("tcp", p)
	}
	table := filepath.Join(conftable.Dir(sock), conftable.Name(w.conf))
	handedOverNow := func(addr, port string) bool {
		t.Helper()
		n := strings.Count(handedOver(t, handovers), "\n")
		got, err := w.ns.Ask(net.JoinHostPort(addr, port))
		if err != nil || got != "" {
			t.Errorf("%s:%s: the front alone answered %q, %v; want it handed over", addr, port, got, err)
		}
		return strings.Count(handedOver(t, handovers), "front=absent ") > 0 && strings.Count(handedOver(t, handovers), "\n") == n+1
	}

	// No table yet: handed over. The full virtuald serves and writes it.
	settle(t, w.conf)
	if !handedOverNow("192.0.2.1", "7620") {
		t.Fatal("not handed over without a table")
	}
	if _, err := os.Stat(table); err == nil {
		t.Fatal("a table written by the front's stand-in")
	}
	if msg := servedBy(w, w.serve[0], "7621"); msg != "" {
		t.Fatal(msg)
	}
	if _, err := conftable.Read(sock, w.conf); err != nil {
		t.Fatalf("no table after the Go program read the file: %v", err)
	}

	// Every entry, isolated and with -isolate none (a static service,
	// so there are no libraries to check), from its own root.
	for _, port := range []string{"7620", "7622"} {
		for _, e := range w.serve {
			if port == "7622" && strings.Contains(e.addr, ":") {
				continue
			}
			if e.cred != "" && !strings.Contains(e.cred, "2001") {
				if !handedOverNow(e.addr, port) { // a user by name
					t.Errorf("%s:%s (a user by name): not handed over", e.addr, port)
				}
				continue
			}
			if msg := servedBy(w, e, port); msg != "" {
				t.Errorf("port %s: %s", port, msg)
			}
		}
		w.checkHostileRefused(t, port)
	}

	if !handedOverNow("192.0.2.1", "7625") {
		t.Error("a dynamically linked program with -isolate none: not handed over")
	}

	complete := filepath.Join(w.roots.Dir, "v4-02")
	if !handedOverNow("192.0.2.2", "7626") {
		t.Error("a dynamically linked program before any check: not handed over")
	}
	testbed.Must(t, filepath.Walk(complete, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			settle(t, p)
		}
		return err
	}))
	execAt := func(port string) bool {
		t.Helper()
		n := w.log.Len()
		if _, err := w.ns.Ask("192.0.2.2:" + port); err != nil {
			t.Fatal(err)
		}
		_, ok := w.log.WaitAfter(n, 5*time.Second, "local=192.0.2.2:"+port+" ", "program=/bin/complete", "outcome=exec")
		return ok
	}
	if !execAt("7627") {
		t.Fatalf("the Go program did not start /bin/complete; log ends:\n%s", w.log.Tail(3))
	}
	if _, err := conftable.ReadCheck(sock, complete, "/bin/complete"); err != nil {
		t.Fatalf("no check recorded: %v", err)
	}
	n := strings.Count(handedOver(t, handovers), "\n")
	if !execAt("7626") || strings.Count(handedOver(t, handovers), "\n") != n {
		t.Errorf("the front did not start /bin/complete itself; log ends:\n%s", w.log.Tail(3))
	}
	// Another root's check under this one's name (two that share one of
	// conftable.CheckFiles' names): the same files, not this root's.
	checks := conftable.Dir(sock)
	mine := filepath.Join(checks, conftable.CheckName(complete, "/bin/complete"))
	good, err := os.ReadFile(mine)
	testbed.Must(t, err)
	rootFd, err := unix.Open(complete, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	testbed.Must(t, err)
	testbed.Must(t, conftable.RecordReady(sock, complete+"-other", "/bin/complete", rootFd,
		[]string{"/bin/complete"}, time.Now()))
	unix.Close(rootFd)
	testbed.Must(t, os.Rename(filepath.Join(checks, conftable.CheckName(complete+"-other", "/bin/complete")), mine))
	if !handedOverNow("192.0.2.2", "7626") {
		t.Error("another root's check trusted")
	}
	testbed.Must(t, os.WriteFile(mine+".new", good, 0o644))
	testbed.Must(t, os.Rename(mine+".new", mine))
	if !execAt("7626") {
		t.Fatalf("the check restored: the front did not start /bin/complete; log ends:\n%s", w.log.Tail(3))
	}
	libc, err := filepath.Glob(filepath.Join(complete, "lib", "*", "libc.so.6"))
	if err != nil || len(libc) != 1 {
		t.Fatalf("libc in the root: %v, %v", libc, err)
	}
	testbed.Must(t, os.Chmod(libc[0], 0o755)) // a new ctime: not the file the check read
	if !handedOverNow("192.0.2.2", "7626") {
		t.Error("a library changed since the check: not handed over")
	}

	// The log line is the Go program's reading the file.
	mark := ipc.MarkFor(sock).Path()
	for _, c := range []struct {
		addr, front, goPort string
		held                bool // the daemon held slow (ipc.SlowMark)
	}{
		{"192.0.2.1", "7620", "7623", false},
		{"192.0.2.16", "7620", "7623", false},
		{"198.51.100.7", "7620", "7623", false},
		{"203.0.113.9", "7620", "7623", false},
		{"2001:db8::3", "7620", "7623", false},
		{"192.0.2.16", "7622", "7624", false},
		{"192.0.2.1", "7620", "7623", true},
		{"198.51.100.7", "7622", "7624", true},
	} {
		os.Remove(mark)
		if c.held {
			testbed.Must(t, os.WriteFile(mark, nil, 0o644))
			until := time.Now().Add(time.Hour)
			testbed.Must(t, os.Chtimes(mark, until, until))
		}
		lines := execLines(t, w, c.addr, c.front, c.goPort)
		if lines[0] != lines[1] {
			t.Errorf("%s: the front logs\n\t%s\nthe Go program\n\t%s", c.addr, lines[0], lines[1])
		}
		want := "via=file daemon=absent "
		if c.held {
			want = `via=file daemon="slow (it did not answer in time; asked again after `
		}
		if !strings.Contains(lines[0], want) {
			t.Errorf("%s: not the file's answer (%s): %s", c.addr, want, lines[0])
		}
	}
	// A hold that is over: the one connection that holds the mark's
	// flock asks again, and the others keep to the table meanwhile.
	past := time.Now().Add(-time.Second)
	testbed.Must(t, os.Chtimes(mark, past, past))
	lock, err := os.Open(mark)
	testbed.Must(t, err)
	testbed.Must(t, unix.Flock(int(lock.Fd()), unix.LOCK_EX))
	n = w.log.Len()
	if msg := servedBy(w, w.serve[0], "7620"); msg != "" {
		t.Errorf("while another connection asks: %s", msg)
	}
	if _, ok := w.log.WaitAfter(n, 5*time.Second, ":7620 ", `daemon="slow (another connection is asking whether it recovered)"`, "outcome=exec"); !ok {
		t.Errorf("while another connection asks: log ends\n%s", w.log.Tail(3))
	}
	lock.Close()
	n = w.log.Len()
	if msg := servedBy(w, w.serve[0], "7620"); msg != "" {
		t.Errorf("the connection that asks again: %s", msg)
	}
	if _, ok := w.log.WaitAfter(n, 5*time.Second, ":7620 ", "via=file daemon=absent ", "outcome=exec"); !ok {
		t.Errorf("the connection that asks again: log ends\n%s", w.log.Tail(3))
	}
	if _, err := os.Stat(mark); !os.IsNotExist(err) {
		t.Errorf("the mark of a daemon found absent, not slow, is still there: %v", err)
	}

	// Tables the front must not believe: each is handed over.
	good, err = os.ReadFile(table)
	testbed.Must(t, err)
	var st unix.Stat_t
	testbed.Must(t, unix.Stat(w.conf, &st))
	other := ipc.FileIDOf(&st)
	other.CtimeNs++
	otherText, err := conf.Parse(w.conf, []byte("192.0.2.1 "+w.roots.Dir+"/v4-09\n"))
	testbed.Must(t, err)
	for _, c := range []struct {
		name string
		do   func() error
	}{
		{"another user's", func() error { return os.Chown(table, 65534, 65534) }},
		{"group-writable", func() error { return os.Chmod(table, 0o664) }},
		{"a second link", func() error { return os.Link(table, table+".link") }},
		{"a symbolic link", func() error {
			testbed.Must(t, os.WriteFile(table+".real", good, 0o644))
			testbed.Must(t, os.Remove(table))
			return os.Symlink(table+".real", table)
		}},
		{"of another version", func() error { return os.WriteFile(table, conftable.Build(otherText, other), 0o644) }},
		{"cut short", func() error { return os.WriteFile(table, good[:len(good)-1], 0o644) }},
	} {
		os.Remove(table)
		testbed.Must(t, os.WriteFile(table, good, 0o644))
		testbed.Must(t, c.do())
		if !handedOverNow("192.0.2.1", "7620") {
			t.Errorf("a table %s: not handed over", c.name)
		}
		os.Remove(table + ".link")
		os.Remove(table + ".real")
	}
	os.Remove(table)
	testbed.Must(t, os.WriteFile(table, good, 0o644))
	if msg := servedBy(w, w.serve[0], "7620"); msg != "" {
		t.Fatalf("the good table again: %s", msg)
	}

	// The file changes: 192.0.2.1 moves to another root, and a line that
	// may have been meant for other addresses suspends the catch-alls.
	// The old table is never used; the Go program writes the new one.
	data, err := os.ReadFile(w.conf)
	testbed.Must(t, err)
	edited := strings.Replace(string(data), "192.0.2.1\t"+w.roots.Dir+"/v4-01", "192.0.2.1\t"+w.roots.Dir+"/v4-09", 1)
	if edited == string(data) {
		t.Fatal("192.0.2.1's line not found in the conf")
	}
	testbed.Must(t, os.WriteFile(w.conf, []byte(edited+"198.51.100.300 /nowhere\n"), 0o644))
	settle(t, w.conf)
	if !handedOverNow("192.0.2.1", "7620") {
		t.Error("a stale table used")
	}
	moved := expectation{addr: "192.0.2.1", root: "v4-09"}
	if msg := servedBy(w, moved, "7621"); msg != "" {
		t.Fatal(msg)
	}
	if msg := servedBy(w, moved, "7620"); msg != "" {
		t.Errorf("from the new table: %s", msg)
	}
	for _, addr := range []string{"198.51.100.7", "203.0.113.9"} {
		if !handedOverNow(addr, "7620") {
			t.Errorf("%s: a suspended catch-all served", addr)
		}
	}
}

// servedBy asks e's address on port and judges the answer.
func servedBy(w *world, e expectation, port string) string {
	got, err := w.ns.Ask(net.JoinHostPort(e.addr, port))
	return judge(e, got, err)
}
