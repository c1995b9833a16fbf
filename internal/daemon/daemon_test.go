package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// randomConf makes a conf text mixing good and bad lines of every kind.
func randomConf(rng *rand.Rand) string {
	keys := []string{"10.0.0.1", "10.0.0.2", "::ffff:10.0.0.3", "10.0.0.0/24", "10.0.0.0/16", "0.0.0.0/0",
		"2001:db8::1", "2001:db8::/64", "::/0", "default", "10.0.0.300", "garbage"}
	rests := []string{"/a", "/b user=1", "/c user=x group=y", "relative", "/d/../e", "", "/f bogus"}
	var b strings.Builder
	for n := rng.Intn(15); n > 0; n-- {
		if rng.Intn(8) == 0 {
			b.WriteString("# comment\n")
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", keys[rng.Intn(len(keys))], rests[rng.Intn(len(rests))])
	}
	return b.String()
}

func startDaemon(t testing.TB, confs []string) (*Daemon, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	d, err := New(Config{Socket: sock, Confs: confs, Log: zap.NewNop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-d.tracker.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not become ready")
	}
	return d, sock
}

// question is virtuald's question about addr in the conf file at path, as
// it finds the file now.
func question(t testing.TB, path string, addr netip.Addr) ipc.ResolveRequest {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return ipc.ResolveRequest{Conf: path, Addr: addr, ID: ipc.FileIDOf(&st)}
}

// ask asks the daemon at sock virtuald's question; the error is the
// daemon's reply when it did not answer (stale, unknown...), and fails the
// test when the daemon could not be asked.
func ask(t *testing.T, sock, path string, addr netip.Addr) (*ipc.Answer, error) {
	t.Helper()
	a, err := ipc.Client{Socket: sock, Timeout: 5 * time.Second}.Resolve(question(t, path, addr))
	if errors.Is(err, ipc.ErrAbsent) || errors.Is(err, ipc.ErrSlow) || errors.Is(err, ipc.ErrUntrusted) {
		t.Fatal(err)
	}
	return a, err
}

// The daemon and the file never disagree: for many generated conf files
// and addresses, the daemon's answer equals what virtuald computes from
// the file itself.
func TestDaemonAgreesWithFile(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	dir := t.TempDir()
	var paths []string
	for i := 0; i < 200; i++ {
		p := filepath.Join(dir, fmt.Sprintf("conf-%d", i))
		if err := os.WriteFile(p, []byte(randomConf(rng)), 0o644); err != nil {
			t.Fatal(err)
		}
		testbed.Must(t, os.Chmod(p, 0o644))
		paths = append(paths, p)
	}
	settle(t, paths...)
	d, sock := startDaemon(t, paths)
	d.ReloadAll()
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "11.0.0.1", "2001:db8::1", "2001:db8::2", "2001:db9::1", "::ffff:10.0.0.1"}
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		for _, a := range addrs {
			addr := netip.MustParseAddr(a)
			want, err := conf.Find(p, data, addr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ask(t, sock, p, addr)
			if err != nil {
				t.Fatalf("%s %s: %v", p, a, err)
			}
			if msg := compare(got, want); msg != "" {
				t.Fatalf("%s, address %s: %s\nfile:\n%s", p, a, msg, data)
			}
		}
	}
}

func compare(got *ipc.Answer, want conf.Match) string {
	refusal := ""
	if want.Err != nil {
		refusal = want.Err.Error()
	}
	if got.Rule != want.Rule.String() || got.Refusal != refusal {
		return fmt.Sprintf("daemon says %s %q, file says %s %q", got.Rule, got.Refusal, want.Rule, refusal)
	}
	if want.Entry == nil {
		if got.Key != "" {
			return "daemon names an entry, file none"
		}
		return ""
	}
	e := want.Entry
	if got.Line != e.Line || got.Key != e.Key || got.Root != e.Root || got.Options != e.Options.String() {
		return fmt.Sprintf("daemon %+v, file %s line %d", got, e, e.Line)
	}
	return ""
}

// A file the daemon holds but that changed on disk is "stale" (virtuald
// reads the file), and is reloaded; a file the daemon does not know is
// "unknown" and, asked about by root, adopted.
func TestStaleAndUnknown(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "conf")
	testbed.Must(t, os.WriteFile(p, []byte("10.0.0.1 /a\n"), 0o644))
	settle(t, p)
	d, sock := startDaemon(t, []string{p})
	d.ReloadAll()
	addr := netip.MustParseAddr("10.0.0.1")
	if a, err := ask(t, sock, p, addr); err != nil || a.Root != "/a" {
		t.Fatalf("first answer: %+v, %v", a, err)
	}
	tmp := p + ".new"
	testbed.Must(t, os.WriteFile(tmp, []byte("10.0.0.1 /b\n"), 0o644))
	testbed.Must(t, os.Rename(tmp, p))
	// Whether the watcher or a stale answer makes the daemon reload, it
	// must never answer from the old copy.
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, err := ask(t, sock, p, addr)
		if err == nil && a.Root == "/b" {
			break
		}
		if err == nil {
			t.Fatalf("answered from the old copy after the rename: %+v", a)
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not pick up the renamed file")
		}
		time.Sleep(5 * time.Millisecond)
	}

	other := filepath.Join(dir, "other")
	testbed.Must(t, os.WriteFile(other, []byte("default /c\n"), 0o644))
	settle(t, other)
	if a, err := ask(t, sock, other, addr); !errors.Is(err, ipc.ErrUnknown) {
		t.Fatalf("unknown file: %+v, %v", a, err)
	}
	if os.Geteuid() != 0 {
		return // only root's questions adopt a file
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		a, err := ask(t, sock, other, addr)
		if err == nil && a.Root == "/c" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file root asked about was not adopted: %+v, %v", a, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	adopted := func() map[string]string {
		st, err := admin.Client{Socket: sock}.Status(admin.StatusQuery{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, c := range st.Confs {
			m[c.Path] = c.Adopted
		}
		return m
	}
	if got := adopted(); got[p] != "given with -conf" || !strings.HasPrefix(got[other], "asked about by virtuald (pid ") {
		t.Errorf("status says why each file is served: %q", got)
	}
	// Gone, a file only a virtuald asked about is forgotten (issue 21: it
	// made every status say that every connection is refused, and reload
	// fail); a file given with -conf is kept, and says why it cannot load.
	testbed.Must(t, os.Remove(other))
	testbed.Must(t, os.Remove(p))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := adopted()
		if _, ok := got[other]; !ok {
			if _, ok := got[p]; !ok {
				t.Errorf("the file given with -conf was forgotten too")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the adopted file, gone, is still served: %q", got)
		}
	}
}

// A file that cannot be loaded any more keeps its last good copy for
// when it is fixed, but status never shows an entry of it as served:
// virtuald reads such a file itself and refuses every connection. Once
// fixed, it loads again.
func TestLastGoodCopyKept(t *testing.T) {
	breaks := []struct {
		name  string
		apply func(t *testing.T, p string)
		why   string
	}{
		{"a NUL byte", func(t *testing.T, p string) { replace(t, p, "10.0.0.1 /b\x00\n") }, "holds a NUL byte"},
		{"group-writable", func(t *testing.T, p string) { testbed.Must(t, os.Chmod(p, 0o664)) }, "writable"},
		{"owned by another user", func(t *testing.T, p string) { testbed.Must(t, os.Chown(p, 65534, 65534)) }, "owned by"},
		{"gone", func(t *testing.T, p string) { testbed.Must(t, os.Remove(p)) }, "no such file"},
	}
	for _, br := range breaks {
		t.Run(br.name, func(t *testing.T) {
			if br.name == "owned by another user" && os.Geteuid() != 0 {
				t.Skip("needs root to give the file away")
			}
			dir := t.TempDir()
			p := filepath.Join(dir, "conf")
			testbed.Must(t, os.WriteFile(p, []byte("10.0.0.1 /usr\n"), 0o644))
			settle(t, p) // no read again of a racy copy may land between the writes below
			d, _ := startDaemon(t, []string{p})
			d.ReloadAll()
			first := d.confList()[0]
			if first.Generation == 0 || first.Error != "" {
				t.Fatalf("first load: %+v", first)
			}
			br.apply(t, p)
			d.ReloadAll()
			broken := d.Status(admin.StatusQuery{}).Confs[0]
			if broken.Generation != first.Generation || !strings.Contains(strings.ToLower(broken.Error), strings.ToLower(br.why)) {
				t.Fatalf("after the break: %+v, want generation %d kept and the reason (%s)", broken, first.Generation, br.why)
			}
			if s := d.confs.get(p).cur.Load(); s.file.Entry(0).Root != "/usr" {
				t.Fatalf("the last good copy was not kept: %s", s.file.Entry(0))
			}
			if len(broken.Entries) != 1 || broken.Entries[0].State != admin.StateInvalid || !strings.Contains(broken.Entries[0].Reason, "every connection is refused") ||
				broken.Counts != (admin.StateCounts{Invalid: 1}) {
				t.Fatalf("status shows an entry of an unusable file as served: %+v, counts %+v", broken.Entries, broken.Counts)
			}
			// Replaced whole, by rename: a rewrite in place is empty for a
			// moment, and a reload that reads it then loads an empty file.
			replace(t, p, "10.0.0.1 /\n")
			d.ReloadAll()
			fixed := d.Status(admin.StatusQuery{}).Confs[0]
			if fixed.Generation <= first.Generation || fixed.Error != "" || fixed.Counts.Invalid != 0 {
				t.Fatalf("after the fix: %+v", fixed)
			}
		})
	}
}

// replace gives the file at p the content text at once, by rename.
func replace(t *testing.T, p, text string) {
	t.Helper()
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// settle waits until the files' timestamps are older than their
// granularity, so that the daemon vouches for its next read of them at
// once (see conf.Racy).
func settle(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(conf.RacyUntil(&st)))
	}
}

// A question with a made-up identity of the file (stale) makes the daemon
// read the file again only when root's virtuald asks it: a member of the
// socket's group must not make it work (issue 20 item 5: 2,000 such
// lookups made it read a 500,000-entry file 832 times).
func TestStaleQueuesOnlyRoot(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	if err := os.WriteFile(conf, []byte("192.0.2.1 /\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Not run: nothing takes what is queued, so the test sees it.
	d, err := New(Config{Socket: filepath.Join(dir, "sock"), Confs: []string{conf}, Log: zap.NewNop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := d.confs.add(conf)
	if _, err := d.confs.load(c); err != nil {
		t.Fatal(err)
	}
	r := question(t, conf, netip.MustParseAddr("192.0.2.1"))
	r.ID.Ino++ // made up
	for _, q := range []struct {
		who    string
		peer   unix.Ucred
		lookup bool
		queues bool
	}{
		{"a member of the socket's group, as virtuald", unix.Ucred{Uid: 4243, Gid: 4242}, false, false},
		{"a member's lookup", unix.Ucred{Uid: 4243, Gid: 4242}, true, false},
		{"root's lookup (ipwatchctl)", unix.Ucred{}, true, true},
		{"root's virtuald", unix.Ucred{}, false, true},
	} {
		d.pending.paths = map[string]bool{}
		r.Lookup = q.lookup
		if _, err := d.resolve(q.peer, r); !errors.Is(err, ipc.ErrStale) {
			t.Errorf("%s: %v, want stale", q.who, err)
		}
		if got := d.pending.paths[conf]; got != q.queues {
			t.Errorf("%s: a read of the file queued: %v, want %v", q.who, got, q.queues)
		}
	}
}

// Content written through a shared mapping leaves the file's identity,
// size and times as they were and makes no inotify event: the daemon
// answers from the new content within Recheck all the same (issue 20
// item 2: it served the old root, another tenant's, until munmap).
func TestMmapWriteSeen(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	if err := os.WriteFile(conf, []byte("192.0.2.1 /virtual/a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "ipwatchd.sock")
	d, err := New(Config{Socket: sock, Confs: []string{conf}, Log: zap.NewNop(), Version: "test", Recheck: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	<-d.tracker.Ready()
	addr := netip.MustParseAddr("192.0.2.1")
	root := func() string {
		a, err := ask(t, sock, conf, addr)
		if err != nil {
			return err.Error()
		}
		return a.Root
	}
	waitFor(t, "the daemon answers /virtual/a", func() bool { return root() == "/virtual/a" })

	f, err := os.OpenFile(conf, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var before unix.Stat_t
	unix.Fstat(int(f.Fd()), &before)
	m, err := unix.Mmap(int(f.Fd()), 0, int(before.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	// The first write to the mapped page updates the file's times (the
	// daemon sees a new identity); a later write to the page, already
	// writable, changes nothing the daemon can see but the content.
	at := len("192.0.2.1 /virtual/")
	m[at] = 'b'
	waitFor(t, "the daemon answers /virtual/b", func() bool { return root() == "/virtual/b" })
	var seen unix.Stat_t
	unix.Fstat(int(f.Fd()), &seen)
	m[at] = 'c'
	var now unix.Stat_t
	unix.Fstat(int(f.Fd()), &now)
	if ipc.FileIDOf(&now) != ipc.FileIDOf(&seen) {
		t.Fatalf("the write through the mapping changed the file's identity: the test shows nothing")
	}
	waitFor(t, "the daemon answers the mapped content, /virtual/c", func() bool { return root() == "/virtual/c" })
}

// waitFor waits until cond holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
	}
}
