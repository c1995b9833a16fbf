package relay

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// start runs a relay toward a fresh catcher of the host's syslog.
func start(t *testing.T, burst int) (*Relay, *testbed.Syslog, context.CancelFunc) {
	t.Helper()
	sl := testbed.NewSyslog(t, t.TempDir())
	r := New(Config{Burst: burst, Rate: 0.001, MaxRoots: 100, HostLog: sl.Path})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return r, sl, stop
}

// send sends one datagram to a socket, as syslog(3) inside a root would.
func send(t *testing.T, path, msg string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, []byte(msg), 0, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatalf("sending to %s: %v", path, err)
	}
}

func isSocket(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// A root with its dev/ in place gets a socket whose messages reach the
// host's syslog under the relay's header; the socket goes when its entry
// does and when the relay stops, and comes back when a relay starts again
// or someone removed it.
func TestRelay(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	a := roots.Root("a", "")
	testbed.Must(t, os.Mkdir(filepath.Join(a, "dev"), 0o755))
	sock := filepath.Join(a, "dev", "log")
	r, sl, stop := start(t, 5)
	r.Sync([]Entry{{Key: "192.0.2.1", Root: a}, {Key: "192.0.2.0/24", Root: a}})
	if st := r.Status(a); !st.On || !isSocket(sock) {
		t.Fatalf("status %+v; dev/log a socket: %v", st, isSocket(sock))
	}
	var st unix.Stat_t
	if unix.Lstat(sock, &st); st.Mode&0o777 != 0o666 || st.Uid != 0 {
		t.Errorf("dev/log mode %o uid %d: the services of every user must be able to write", st.Mode&0o777, st.Uid)
	}
	send(t, sock, "<14>Nov 29 23:59:00 prog[7]: hello from a")
	if _, ok := sl.WaitFor(10*time.Second, "<14>virtuald[192.0.2.0/24,192.0.2.1]: prog[7]: hello from a"); !ok {
		t.Fatalf("not relayed; the host got:\n%s", sl.Tail(5))
	}

	os.Remove(sock) // an operator's mistake
	r.Sync([]Entry{{Key: "192.0.2.1", Root: a}})
	if !isSocket(sock) {
		t.Fatal("a removed socket was not made again")
	}
	r.Sync(nil)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the entry went, its socket stayed: %v", err)
	}
	r.Sync([]Entry{{Key: "192.0.2.1", Root: a}})
	stop()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the relay stopped, its socket stayed: %v", err)
	}

	// A relay killed without removing its socket leaves a dead one: the
	// next relay replaces it. A live one (a syslogd -a) is not touched.
	dead, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	unix.Bind(dead, &unix.SockaddrUnix{Name: sock})
	unix.Close(dead)
	r2, sl2, _ := start(t, 5)
	r2.Sync([]Entry{{Key: "192.0.2.1", Root: a}})
	send(t, sock, "after restart")
	if _, ok := sl2.WaitFor(10*time.Second, "virtuald[192.0.2.1]: after restart"); !ok {
		t.Fatalf("no relay after restart: %+v", r2.Status(a))
	}
	b := roots.Root("b", "")
	testbed.Must(t, os.Mkdir(filepath.Join(b, "dev"), 0o755))
	live := testbed.NewSyslog(t, filepath.Join(b, "dev"))
	testbed.Must(t, os.Rename(live.Path, filepath.Join(b, "dev", "log")))
	r2.Sync([]Entry{{Key: "192.0.2.2", Root: b}})
	if st := r2.Status(b); st.On || !strings.Contains(st.Reason, "/dev/log is a socket another process serves: not replaced") {
		t.Errorf("a live socket: %+v", st)
	}
}

// A tenant's dev/: a link out of the root, its own directory, a file in
// the way, a link where the socket goes, a FIFO. Each is refused with its
// reason, nothing is followed, and nothing outside the root is made.
func TestRelayHostileDev(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	outside := filepath.Join(roots.Dir, "outside")
	testbed.Must(t, os.Mkdir(outside, 0o755))
	r, _, _ := start(t, 5)
	cases := map[string]struct {
		plant func(root string)
		want  string
	}{
		"dev-link": {func(root string) { os.Symlink(outside, filepath.Join(root, "dev")) }, "/dev is a symbolic link: not followed"},
		"dev-tenant": {func(root string) {
			testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
			testbed.Must(t, os.Chown(filepath.Join(root, "dev"), 1000, 1000))
		}, "/dev is owned by uid 1000 with mode 0755: the relay puts its socket only in a dev/ owned by root and not writable by group or others"},
		"dev-writable": {func(root string) {
			testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o777))
			testbed.Must(t, os.Chmod(filepath.Join(root, "dev"), 0o777))
		}, "/dev is owned by uid 0 with mode 0777"},
		"dev-file": {func(root string) { os.WriteFile(filepath.Join(root, "dev"), nil, 0o644) }, "/dev is not a directory"},
		"no-dev":   {func(root string) {}, "/dev does not exist (ipwatchctl install -dev ROOT makes it)"},
		"log-file": {func(root string) {
			testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
			testbed.Must(t, os.WriteFile(filepath.Join(root, "dev", "log"), []byte("keep"), 0o644))
		}, "/dev/log is in the way (not a socket): not replaced"},
		"log-link": {func(root string) {
			testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
			testbed.Must(t, os.Symlink(filepath.Join(outside, "log"), filepath.Join(root, "dev", "log")))
		}, "/dev/log is a symbolic link: not followed or replaced"},
		"log-fifo": {func(root string) {
			testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
			testbed.Must(t, unix.Mkfifo(filepath.Join(root, "dev", "log"), 0o644))
		}, "/dev/log is in the way (not a socket): not replaced"},
	}
	var entries []Entry
	for name, c := range cases {
		root := roots.Root(name, "")
		c.plant(root)
		entries = append(entries, Entry{Key: name, Root: root})
	}
	bad := roots.Root("bad-root", "")
	testbed.Must(t, os.Chmod(bad, 0o777))
	entries = append(entries, Entry{Key: "bad", Root: bad}, Entry{Key: "host", Root: "/"})
	r.Sync(entries)
	for name, c := range cases {
		root := filepath.Join(roots.Dir, name)
		if st := r.Status(root); st.On || st.Reason != root+c.want && !strings.Contains(st.Reason, c.want) {
			t.Errorf("%s: %+v, want refused: %s", name, st, c.want)
		}
	}
	if st := r.Status(bad); st.On || !strings.Contains(st.Reason, "the root fails virtuald's checks: "+bad+" is writable by group or others") {
		t.Errorf("a root virtuald refuses: %+v", st)
	}
	if st := r.Status("/"); st.On || !strings.Contains(st.Reason, "the host's own /") {
		t.Errorf("the host's root: %+v", st)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the relay made something outside the roots: %v", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(roots.Dir, "log-file", "dev", "log")); string(b) != "keep" {
		t.Errorf("a file in the way was replaced: %q", b)
	}
}

// A root that floods loses its own messages, counted, and no other
// root's: another root's message still reaches the host.
func TestRelayFlood(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	var entries []Entry
	for _, n := range []string{"flood", "quiet"} {
		root := roots.Root(n, "")
		testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
		entries = append(entries, Entry{Key: n, Root: root})
	}
	const burst, sent = 5, 500
	r, sl, _ := start(t, burst)
	r.Sync(entries)
	flood := filepath.Join(roots.Dir, "flood")
	for i := 0; i < sent; i++ {
		send(t, filepath.Join(flood, "dev", "log"), fmt.Sprintf("flood %d", i))
	}
	send(t, filepath.Join(roots.Dir, "quiet", "dev", "log"), "quiet one")
	if _, ok := sl.WaitFor(10*time.Second, "virtuald[quiet]: quiet one"); !ok {
		t.Fatalf("the quiet root's message was lost to the flood: %+v", r.Status(filepath.Join(roots.Dir, "quiet")))
	}
	waitFor(t, "every flood message counted", func() bool {
		st := r.Status(flood)
		return st.Relayed+st.Dropped == sent
	})
	// The bucket refills at 0.001 a second: one more at most, however
	// slow the machine.
	if st := r.Status(flood); st.Relayed < burst || st.Relayed > burst+1 || st.Dropped < sent-burst-1 {
		t.Errorf("flood: %+v; want %d relayed (the burst) and the rest dropped", st, burst)
	}
	if n := sl.Count("virtuald[flood]: flood "); uint64(n) != r.Status(flood).Relayed {
		t.Errorf("the host got %d flood messages; the relay counts %d", n, r.Status(flood).Relayed)
	}
	relayed, dropped, on, off := r.Counts()
	if relayed < burst+1 || dropped < sent-burst-1 || on != 2 || off != 0 {
		t.Errorf("counts: relayed %d dropped %d on %d off %d", relayed, dropped, on, off)
	}
}

// The relay follows the conf's mapping by path, not the directories it
// opened (issue 20 item 3): after two roots swap names, each path's
// messages carry its own keys at the next Sync; after a root is replaced
// by rename, the new directory gets its dev/log and status says so.
func TestRelayFollowsRenames(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	a, b, c := roots.Root("a", ""), roots.Root("b", ""), roots.Root("c", "")
	for _, r := range []string{a, b, c} {
		testbed.Must(t, os.Mkdir(filepath.Join(r, "dev"), 0o755))
	}
	r, sl, _ := start(t, 50)
	entries := []Entry{{Key: "192.0.2.1", Root: a}, {Key: "192.0.2.2", Root: b}, {Key: "192.0.2.3", Root: c}}
	r.Sync(entries)

	// mv a t; mv b a; mv t b
	tmp := filepath.Join(roots.Dir, "t")
	testbed.Must(t, os.Rename(a, tmp))
	testbed.Must(t, os.Rename(b, a))
	testbed.Must(t, os.Rename(tmp, b))
	// cp -a c c.new; mv c c.old; mv c.new c
	testbed.Must(t, exec.Command("cp", "-a", c, c+".new").Run())
	testbed.Must(t, os.Remove(filepath.Join(c+".new", "dev", "log"))) // cp copied the socket as a file or socket: a fresh root has none
	testbed.Must(t, os.Rename(c, c+".old"))
	testbed.Must(t, os.Rename(c+".new", c))
	// Until the next pass, status tells the truth: not on.
	if st := r.Status(c); st.On || !strings.Contains(st.Reason, "renamed or replaced") {
		t.Errorf("the replaced root %s before the next pass: status %+v", c, st)
	}
	r.Sync(entries) // the validator's next pass

	send(t, filepath.Join(b, "dev", "log"), "from b")
	if line, ok := sl.WaitFor(10*time.Second, "from b"); !ok || !strings.Contains(line, "virtuald[192.0.2.2]: from b") {
		t.Errorf("a message sent at %s/dev/log came out as %q, want labelled 192.0.2.2", b, line)
	}
	send(t, filepath.Join(a, "dev", "log"), "from a")
	if line, ok := sl.WaitFor(10*time.Second, "from a"); !ok || !strings.Contains(line, "virtuald[192.0.2.1]: from a") {
		t.Errorf("a message sent at %s/dev/log came out as %q, want labelled 192.0.2.1", a, line)
	}
	if st := r.Status(c); !st.On || !isSocket(filepath.Join(c, "dev", "log")) {
		t.Errorf("the replaced root %s: status %+v, dev/log a socket: %v", c, st, isSocket(filepath.Join(c, "dev", "log")))
	}
	if _, err := os.Lstat(filepath.Join(c+".old", "dev", "log")); !os.IsNotExist(err) {
		t.Errorf("the old root kept the relay's socket: %v", err)
	}
}

// A root's label is its first keys in order, however many keys map it:
// the keys kept as they come (AddKey) give the label all of them give.
func TestLabelOfManyKeys(t *testing.T) {
	for _, n := range []int{1, labelKeys, 2 * labelKeys, 10000} {
		var all, kept []string
		for i := 0; i < n; i++ {
			k := strconv.Itoa((i * 7919) % (n + 3)) // out of order, some twice
			all = append(all, k)
			kept = AddKey(kept, k)
		}
		sorted := slices.Compact(slices.Sorted(slices.Values(all)))
		want := strings.Join(sorted, ",")
		if len(want) > maxLabel {
			want = want[:maxLabel] + "..."
		}
		if got := labelOf(kept); got != want {
			t.Errorf("%d keys: label %q, want %q", n, got, want)
		}
		if len(kept) >= 2*labelKeys {
			t.Errorf("%d keys: %d kept", n, len(kept))
		}
	}
}
