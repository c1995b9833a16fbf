package bpf

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/virtuald/virtuald/internal/testbed"
)

// wait bounds every wait; none of them is a measure.
const wait = 10 * time.Second

// newPinDir names a pin directory of the test's own under /sys/fs/bpf,
// removed (with whatever is still attached) when the test ends.
func newPinDir(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	dir := filepath.Join(bpffsRoot, "vdtest-"+hex.EncodeToString(b))
	t.Cleanup(func() {
		if err := Remove(dir); err != nil {
			t.Errorf("Remove(%s): %v", dir, err)
		}
	})
	return dir
}

// newNS makes a namespace holding 192.0.2.1 and 2001:db8::1 on its lo.
func newNS(t *testing.T) *testbed.NetNS {
	t.Helper()
	ns := testbed.NewNetNS(t)
	ns.AddAddr("192.0.2.1")
	ns.AddAddr("2001:db8::1")
	return ns
}

// openIn opens a Counter from inside ns, so that it counts ns.
func openIn(ns *testbed.NetNS, dir string) (*Counter, error) {
	return openWith(ns, Options{PinDir: dir})
}

func openWith(ns *testbed.NetNS, opts Options) (*Counter, error) {
	var c *Counter
	err := ns.Do(func() error {
		var err error
		c, err = Open(opts)
		return err
	})
	return c, err
}

func mustOpenIn(t *testing.T, ns *testbed.NetNS, dir string) *Counter {
	t.Helper()
	c, err := openIn(ns, dir)
	if err != nil {
		t.Fatalf("Open(%s) in %s: %v", dir, ns.Name, err)
	}
	return c
}

// server accepts and closes connections on a listener in a namespace,
// counting them.
type server struct {
	ln       net.Listener
	accepted atomic.Int64
	v6sock   atomic.Bool // the last accepted socket is AF_INET6 (a dual-stack listener's IPv4 client: mapped)
}

func listen(t *testing.T, ns *testbed.NetNS, network, addr string) *server {
	t.Helper()
	s := &server{}
	err := ns.Do(func() error {
		var err error
		s.ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			if raw, err := c.(*net.TCPConn).SyscallConn(); err == nil {
				raw.Control(func(fd uintptr) {
					sa, _ := unix.Getsockname(int(fd))
					_, v6 := sa.(*unix.SockaddrInet6)
					s.v6sock.Store(v6)
				})
			}
			c.Close()
			s.accepted.Add(1)
		}
	}()
	t.Cleanup(func() { s.ln.Close(); <-done })
	return s
}

// waitAccepted waits until the server has accepted n connections.
func (s *server) waitAccepted(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for s.accepted.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s accepted %d connections after %v, want %d", s.ln.Addr(), s.accepted.Load(), wait, n)
		}
		time.Sleep(time.Millisecond)
	}
	if got := s.accepted.Load(); got != n {
		t.Fatalf("%s accepted %d connections, want %d", s.ln.Addr(), got, n)
	}
}

// dial makes n connections from inside ns and closes each.
func dial(ns *testbed.NetNS, network, addr string, n int) error {
	return ns.Do(func() error {
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout(network, addr, wait)
			if err != nil {
				return fmt.Errorf("connection %d to %s: %w", i, addr, err)
			}
			c.Close()
		}
		return nil
	})
}

func mustDial(t *testing.T, ns *testbed.NetNS, network, addr string, n int) {
	t.Helper()
	if err := dial(ns, network, addr, n); err != nil {
		t.Fatal(err)
	}
}

func key(s string) Key {
	ap := netip.MustParseAddrPort(s)
	return Key{Addr: ap.Addr(), Port: ap.Port()}
}

// waitCounts waits until the counter holds exactly want (every key, no
// other key) and fails with what it holds if it never does. The counts
// are final once the servers have accepted (accept returns a socket only
// after its change to ESTABLISHED); the wait is only a margin.
func waitCounts(t *testing.T, c *Counter, want map[Key]uint64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got, err := c.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts:\n got %v\nwant %v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pinnedProg returns the link pinned in dir and the program it runs.
func pinnedProg(t *testing.T, dir string) (link.ID, ebpf.ProgramID) {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil)
	if err != nil {
		t.Fatalf("pinned link: %v", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.ID, info.Program
}

// requireGone fails unless the kernel has freed the program, which it
// does once its link detached it (with a margin for the RCU grace period
// after which a removed pin lets go of the link).
func requireGone(t *testing.T, id ebpf.ProgramID) {
	t.Helper()
	if err := waitGone(id, wait); err != nil {
		t.Fatal(err)
	}
}

// The counts are exact per address and port for IPv4, IPv6 and IPv4
// through a dual-stack listener; the clients' own (active) sockets and a
// refused connection are not counted.
func TestCountsPassiveConnections(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	ns := newNS(t)
	dir := newPinDir(t)
	c := mustOpenIn(t, ns, dir)
	defer c.Close()
	if c.Resumed() {
		t.Errorf("Resumed() on a new pin directory")
	}

	const n, m, k = 37, 23, 11
	s4 := listen(t, ns, "tcp4", "192.0.2.1:7000")
	s6 := listen(t, ns, "tcp6", "[2001:db8::1]:7001")
	sd := listen(t, ns, "tcp", "[::]:7002")
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", n)
	mustDial(t, ns, "tcp6", "[2001:db8::1]:7001", m)
	mustDial(t, ns, "tcp4", "192.0.2.1:7002", k)
	s4.waitAccepted(t, n)
	s6.waitAccepted(t, m)
	sd.waitAccepted(t, k)
	if !sd.v6sock.Load() {
		t.Fatalf("the dual-stack listener's sockets are not AF_INET6: the mapped case is not tested")
	}
	want := map[Key]uint64{
		key("192.0.2.1:7000"):     n,
		key("[2001:db8::1]:7001"): m,
		key("192.0.2.1:7002"):     k,
	}
	waitCounts(t, c, want)
	// The kernel side stores the dual-stack listener's connections under
	// IPv4 itself (Counts would unmap them anyway: look at the raw keys).
	var (
		raw  connacctKey
		vals []uint64
	)
	for it := c.counts.Iterate(); it.Next(&raw, &vals); {
		if raw.Family != unix.AF_INET && raw.Family != unix.AF_INET6 {
			t.Errorf("raw key with family %d", raw.Family)
		}
		if raw.Family == unix.AF_INET6 && netip.AddrFrom16(raw.Addr).Is4In6() {
			t.Errorf("raw key %v stored as IPv4-mapped IPv6", netip.AddrFrom16(raw.Addr))
		}
	}

	// Refused: no listener, no passive socket.
	if err := dial(ns, "tcp4", "192.0.2.1:7999", 1); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial with no listener: %v, want connection refused", err)
	}
	if err := dial(ns, "tcp6", "[2001:db8::1]:7999", 1); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial with no listener: %v, want connection refused", err)
	}
	// One more of each after the refusals, so that the exact check below
	// comes after everything the refusals could have counted.
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 1)
	s4.waitAccepted(t, n+1)
	want[key("192.0.2.1:7000")]++
	waitCounts(t, c, want)
	if d, err := c.Drops(); err != nil || d != 0 {
		t.Errorf("Drops() = %d, %v; want 0", d, err)
	}
}

// Two namespaces with the same addresses, each with its own counter:
// each counts only its own connections, and neither can take over the
// other's pin directory.
func TestNamespacesAreSeparate(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	a, b := newNS(t), newNS(t)
	dirA, dirB := newPinDir(t), newPinDir(t)
	ca := mustOpenIn(t, a, dirA)
	defer ca.Close()
	sa := listen(t, a, "tcp4", "192.0.2.1:7000")
	sb := listen(t, b, "tcp4", "192.0.2.1:7000")
	sb6 := listen(t, b, "tcp6", "[2001:db8::1]:7001")

	// b has no counter yet: its connections are nobody's.
	mustDial(t, b, "tcp4", "192.0.2.1:7000", 9)
	mustDial(t, b, "tcp6", "[2001:db8::1]:7001", 4)
	mustDial(t, a, "tcp4", "192.0.2.1:7000", 5)
	sb.waitAccepted(t, 9)
	sb6.waitAccepted(t, 4)
	sa.waitAccepted(t, 5)
	waitCounts(t, ca, map[Key]uint64{key("192.0.2.1:7000"): 5})

	cb := mustOpenIn(t, b, dirB)
	defer cb.Close()
	mustDial(t, b, "tcp4", "192.0.2.1:7000", 3)
	mustDial(t, a, "tcp4", "192.0.2.1:7000", 2)
	sb.waitAccepted(t, 12)
	sa.waitAccepted(t, 7)
	waitCounts(t, ca, map[Key]uint64{key("192.0.2.1:7000"): 7})
	waitCounts(t, cb, map[Key]uint64{key("192.0.2.1:7000"): 3})

	if _, err := openIn(b, dirA); !errors.Is(err, ErrOtherNamespace) {
		t.Fatalf("Open of a's pin directory from b: %v, want ErrOtherNamespace", err)
	}
	// The refusal left a's counting alone.
	mustDial(t, a, "tcp4", "192.0.2.1:7000", 1)
	sa.waitAccepted(t, 8)
	waitCounts(t, ca, map[Key]uint64{key("192.0.2.1:7000"): 8})
}

// Counts survive Close and a new Open, and the pinned link counts the
// connections made while no process holds a Counter.
func TestCountsSurviveRestart(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	ns := newNS(t)
	dir := newPinDir(t)
	s := listen(t, ns, "tcp4", "192.0.2.1:7000")
	s6 := listen(t, ns, "tcp6", "[2001:db8::1]:7001")

	c := mustOpenIn(t, ns, dir)
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 4)
	s.waitAccepted(t, 4)
	waitCounts(t, c, map[Key]uint64{key("192.0.2.1:7000"): 4})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// The daemon is down.
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 6)
	mustDial(t, ns, "tcp6", "[2001:db8::1]:7001", 2)
	s.waitAccepted(t, 10)
	s6.waitAccepted(t, 2)

	c = mustOpenIn(t, ns, dir)
	defer c.Close()
	if !c.Resumed() {
		t.Errorf("Resumed() = false after a restart")
	}
	waitCounts(t, c, map[Key]uint64{key("192.0.2.1:7000"): 10, key("[2001:db8::1]:7001"): 2})
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 3)
	s.waitAccepted(t, 13)
	waitCounts(t, c, map[Key]uint64{key("192.0.2.1:7000"): 13, key("[2001:db8::1]:7001"): 2})
}

// Open over the link an earlier load pinned replaces it (a new link, the
// old one detached) while connections keep arriving, and the counts stay
// exact: none lost in the swap, none counted by both programs.
func TestUpgradeUnderLoad(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	ns := newNS(t)
	dir := newPinDir(t)
	s := listen(t, ns, "tcp4", "192.0.2.1:7000")
	c := mustOpenIn(t, ns, dir)
	defer c.Close()

	// Connections without pause until told to stop (bounded, whatever
	// happens).
	const most = 20000
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	defer halt()
	var dialled atomic.Int64
	dialErr := make(chan error, 1)
	go func() {
		dialErr <- ns.Do(func() error {
			for i := 0; i < most; i++ {
				select {
				case <-stop:
					return nil
				default:
				}
				conn, err := net.DialTimeout("tcp4", "192.0.2.1:7000", wait)
				if err != nil {
					return err
				}
				conn.Close()
				dialled.Add(1)
			}
			return nil
		})
	}()

	for round := 0; round < 5; round++ {
		// Let some connections through between two upgrades.
		from := s.accepted.Load()
		deadline := time.Now().Add(wait)
		for s.accepted.Load() < from+50 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no connections arrive", round)
			}
			time.Sleep(time.Millisecond)
		}
		oldLink, oldProg := pinnedProg(t, dir)
		next := mustOpenIn(t, ns, dir)
		if !next.Resumed() {
			t.Errorf("round %d: Resumed() = false", round)
		}
		newLink, newProg := pinnedProg(t, dir)
		if newLink == oldLink || newProg == oldProg {
			t.Fatalf("round %d: the pinned link (%d, program %d) was not replaced", round, oldLink, oldProg)
		}
		requireGone(t, oldProg)
		next.Close()
	}
	halt()
	if err := <-dialErr; err != nil {
		t.Fatal(err)
	}
	n := dialled.Load()
	s.waitAccepted(t, n)
	waitCounts(t, c, map[Key]uint64{key("192.0.2.1:7000"): uint64(n)})
	t.Logf("%d connections across 5 upgrades", n)
}

// While two programs are attached at once (the overlap of an upgrade,
// held open here for as long as the test likes) each connection is still
// counted once.
func TestUpgradeOverlapCountsOnce(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	ns := newNS(t)
	dir := newPinDir(t)
	s := listen(t, ns, "tcp4", "192.0.2.1:7000")
	s6 := listen(t, ns, "tcp6", "[2001:db8::1]:7001")
	c := mustOpenIn(t, ns, dir)
	defer c.Close()
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 5)
	s.waitAccepted(t, 5)

	overlapped := false
	next, err := openWith(ns, Options{PinDir: dir, beforeRelease: func(old link.Link) {
		if old == nil {
			return
		}
		overlapped = true
		// Both links are attached: the new one is pinned, the old one
		// not yet released.
		mustDial(t, ns, "tcp4", "192.0.2.1:7000", 20)
		mustDial(t, ns, "tcp6", "[2001:db8::1]:7001", 7)
		s.waitAccepted(t, 25)
		s6.waitAccepted(t, 7)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if !overlapped {
		t.Fatal("Open did not find the earlier link to replace")
	}
	want := map[Key]uint64{key("192.0.2.1:7000"): 25, key("[2001:db8::1]:7001"): 7}
	waitCounts(t, c, want)
	waitCounts(t, next, want)
}

// A pinned counter map that the program cannot use (a change of layout)
// is replaced by a fresh one, and counting goes on.
func TestIncompatiblePinReplaced(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	ns := newNS(t)
	dir := newPinDir(t)
	s := listen(t, ns, "tcp4", "192.0.2.1:7000")
	c := mustOpenIn(t, ns, dir) // mounts bpffs, makes dir
	c.Close()
	os.Remove(filepath.Join(dir, pinCounts))
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 20, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(dir, pinCounts)); err != nil {
		t.Fatal(err)
	}

	c = mustOpenIn(t, ns, dir)
	defer c.Close()
	if c.Resumed() {
		t.Errorf("Resumed() = true over an incompatible counter map")
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinCounts), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if pinned.MaxEntries() == 16 {
		t.Fatalf("the incompatible map is still pinned")
	}
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 6)
	s.waitAccepted(t, 6)
	waitCounts(t, c, map[Key]uint64{key("192.0.2.1:7000"): 6})
}

// Remove detaches the program at once and deletes the pins and the
// directory; a Counter still open keeps its last counts and counts no
// more.
func TestRemove(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	ns := newNS(t)
	dir := newPinDir(t)
	s := listen(t, ns, "tcp4", "192.0.2.1:7000")
	c := mustOpenIn(t, ns, dir)
	defer c.Close()
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 3)
	s.waitAccepted(t, 3)
	waitCounts(t, c, map[Key]uint64{key("192.0.2.1:7000"): 3})

	_, prog := pinnedProg(t, dir)
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	// Remove waits for the kernel to let the program go.
	if p, err := ebpf.NewProgramFromID(prog); err == nil {
		p.Close()
		t.Fatalf("program %d is still loaded after Remove", prog)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory after Remove: %v", err)
	}
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 4)
	s.waitAccepted(t, 7)
	got, err := c.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[Key]uint64{key("192.0.2.1:7000"): 3}; !maps.Equal(got, want) {
		t.Fatalf("counts after Remove: %v, want %v", got, want)
	}
	if err := Remove(dir); err != nil {
		t.Fatalf("Remove of nothing: %v", err)
	}
}

func TestAvailableHere(t *testing.T) {
	testbed.RequirePrivileges(t)
	if r := Unavailable(); r != "" {
		t.Fatalf("Unavailable() = %q as root on a kernel with BTF", r)
	}
}

// Open mounts bpffs at /sys/fs/bpf when it is absent. The test runs itself
// again in a private mount (and network) namespace, where it can unmount
// bpffs without touching the host's.
func TestOpenMountsBPFFS(t *testing.T) {
	testbed.RequirePrivileges(t)
	if os.Getenv("VIRTUALD_BPF_MOUNT_HELPER") == "1" {
		mountHelper(t)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenMountsBPFFS$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "VIRTUALD_BPF_MOUNT_HELPER=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	t.Logf("helper:\n%s", out)
}

func mountHelper(t *testing.T) {
	// Nothing done here may reach the host's mounts.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	for onBPFFS(bpffsRoot) == nil {
		if err := unix.Unmount(bpffsRoot, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(bpffsRoot, "vdtest-mount")
	c, err := Open(Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := onBPFFS(bpffsRoot); err != nil {
		t.Fatalf("after Open: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, pinLink), &st); err != nil {
		t.Fatalf("pinned link: %v", err)
	}
	if got, err := c.Counts(); err != nil || len(got) != 0 {
		t.Fatalf("Counts() = %v, %v; want nothing", got, err)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
}

// mkdirAs makes a directory as a local user could have planted it (owner
// uid, mode), removed with whatever it holds when the test ends.
func mkdirAs(t *testing.T, path string, uid int, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(path) })
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// symlink makes a symbolic link, removed when the test ends.
func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// A pin directory, or a directory on its way, that a local user made
// before ipwatchd (bpffs is often mounted 1777) or that leads elsewhere
// through a symbolic link: Open and Remove refuse it, name it and say why,
// and neither pins nor removes anything in it.
func TestPinDirRefused(t *testing.T) {
	testbed.RequirePrivileges(t)
	t.Parallel()
	ns := newNS(t)
	for _, tc := range []struct {
		name string
		// plant makes what a local user left and returns the pin
		// directory to open and the directory Open must name.
		plant func(t *testing.T) (pinDir, bad string)
		why   string
	}{{
		name: "owned by another user",
		plant: func(t *testing.T) (string, string) {
			dir := newPinDir(t)
			mkdirAs(t, dir, 1000, 0o700)
			return dir, dir
		},
		why: "is owned by uid 1000, not root",
	}, {
		name: "mode 0777",
		plant: func(t *testing.T) (string, string) {
			dir := newPinDir(t)
			mkdirAs(t, dir, 0, 0o777)
			return dir, dir
		},
		why: "has mode 0777, want 0700",
	}, {
		name: "symbolic link",
		plant: func(t *testing.T) (string, string) {
			target, dir := newPinDir(t), newPinDir(t)
			mkdirAs(t, target, 0, 0o700)
			symlink(t, target, dir)
			return dir, dir
		},
		why: "is a symbolic link",
	}, {
		name: "per-namespace subdirectory planted",
		plant: func(t *testing.T) (string, string) {
			parent := newPinDir(t)
			mkdirAs(t, parent, 0, 0o700)
			dir := filepath.Join(parent, "netns1")
			mkdirAs(t, dir, 1000, 0o700)
			return dir, dir
		},
		why: "is owned by uid 1000, not root",
	}, {
		name: "parent planted",
		plant: func(t *testing.T) (string, string) {
			parent := newPinDir(t)
			mkdirAs(t, parent, 1000, 0o777)
			return filepath.Join(parent, "netns1"), parent
		},
		why: "is owned by uid 1000, not root",
	}, {
		name: "symbolic link above",
		plant: func(t *testing.T) (string, string) {
			target, parent := newPinDir(t), newPinDir(t)
			mkdirAs(t, target, 0, 0o700)
			symlink(t, target, parent)
			return filepath.Join(parent, "netns1"), parent
		},
		why: "is a symbolic link",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, bad := tc.plant(t)
			c, err := openIn(ns, dir)
			if err == nil {
				c.Close()
				t.Fatalf("Open(%s) took it over, want a refusal", dir)
			}
			if want := bad + " " + tc.why; !strings.Contains(err.Error(), want) {
				t.Fatalf("Open(%s): %v\nwant an error saying %q", dir, err, want)
			}
			t.Logf("Open(%s): %v", dir, err)
			if _, err := os.Lstat(filepath.Join(dir, pinLink)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a link is pinned in %s after the refusal (%v)", dir, err)
			}
			if err := Remove(dir); err == nil || !strings.Contains(err.Error(), bad) {
				t.Errorf("Remove(%s): %v, want a refusal naming %s", dir, err, bad)
			}
			if _, err := os.Lstat(bad); err != nil {
				t.Errorf("after Remove(%s): %v", dir, err)
			}
		})
	}
}

// The pin directory, and every directory on its way that Open makes, are
// root's with mode 0700 whatever the umask, and counting works there.
// Not parallel: the umask is the process's.
func TestPinDirMadeRootOnly(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := newNS(t)
	parent := newPinDir(t)
	dir := filepath.Join(parent, "netns1")
	s := listen(t, ns, "tcp4", "192.0.2.1:7000")

	old := unix.Umask(0o277)
	c, err := openIn(ns, dir)
	unix.Umask(old)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	defer c.Close()
	t.Cleanup(func() {
		if err := Remove(dir); err != nil {
			t.Errorf("Remove(%s): %v", dir, err)
		}
	})
	for _, d := range []string{parent, dir} {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o7777 != 0o700 {
			t.Errorf("%s: type %o, uid %d, mode %04o; want a directory of uid 0 with mode 0700", d, st.Mode&unix.S_IFMT, st.Uid, st.Mode&0o7777)
		}
	}
	mustDial(t, ns, "tcp4", "192.0.2.1:7000", 3)
	s.waitAccepted(t, 3)
	waitCounts(t, c, map[Key]uint64{key("192.0.2.1:7000"): 3})
}
