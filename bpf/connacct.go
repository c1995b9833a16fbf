package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultPinDir is where ipwatchd of the host's network namespace pins the
// program and its counters.
const DefaultPinDir = "/sys/fs/bpf/ipwatchd"

// bpffsRoot is where bpffs is mounted when it is absent, as systemd does.
const bpffsRoot = "/sys/fs/bpf"

// The names of the pins in a pin directory. bpffs refuses dots in names.
const (
	pinCounts = connacctMapCounts
	pinDrops  = connacctMapDrops
	pinSeen   = connacctMapSeen
	pinMeta   = connacctMapMeta
	pinLink   = "link"
	newSuffix = "_new" // a pin being replaced: made under this name, then renamed over the old
)

// ErrOtherNamespace is returned by Open when the pin directory counts
// another network namespace than the caller's.
var ErrOtherNamespace = errors.New("the pin directory counts another network namespace")

// Key is a local address and port that accepted connections.
type Key struct {
	Addr netip.Addr // unmapped, no zone
	Port uint16
}

func (k Key) String() string { return netip.AddrPortFrom(k.Addr, k.Port).String() }

// Options configure Open.
type Options struct {
	// PinDir is the directory on bpffs holding the pins ("" means
	// DefaultPinDir). It belongs to one network namespace: see the package
	// documentation.
	PinDir string

	// beforeRelease, when set (by tests), runs while the new link and
	// the old one are both attached; old is nil when there was none.
	beforeRelease func(old link.Link)
}

// Counter reads the pinned counters of one pin directory.
type Counter struct {
	counts  *ebpf.Map
	drops   *ebpf.Map
	resumed bool
	pinDir  string
}

// Open mounts bpffs at /sys/fs/bpf if the pin directory is under it and it
// is absent, then loads the program to count the calling thread's network
// namespace, reusing the counters pinned in the pin directory when they
// are compatible, attaches it, and pins maps and link, replacing the link
// of an earlier load (the upgrade of the package documentation). It
// refuses a pin directory that another user made or can change, or that
// lies behind a symbolic link (see "Pins" there).
//
// Open must run on a thread of the namespace to count: a daemon's threads
// all are; a test calls it inside testbed's NetNS.Do.
func Open(opts Options) (c *Counter, err error) {
	dir := opts.PinDir
	if dir == "" {
		dir = DefaultPinDir
	}
	dir = filepath.Clean(dir)
	if under(dir, bpffsRoot) {
		if err := mountBPFFS(); err != nil {
			return nil, err
		}
	}
	pins, err := openPinDir(dir, true)
	if err != nil {
		return nil, err
	}
	defer pins.close() // and unlocks
	if err := pins.usable(); err != nil {
		return nil, err
	}
	if err := pins.lock(); err != nil {
		return nil, err
	}

	cookie, err := netnsCookie()
	if err != nil {
		return nil, err
	}
	spec, err := loadConnacct()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[connacctVarNetnsCookie].Set(cookie); err != nil {
		return nil, fmt.Errorf("setting the namespace cookie: %w", err)
	}

	// Take over every compatible pinned map; a missing or incompatible
	// one is made anew and pinned over the old.
	reuse := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range reuse {
			m.Close()
		}
	}()
	var fresh []string
	for _, name := range []string{pinCounts, pinDrops, pinSeen, pinMeta} {
		m, err := ebpf.LoadPinnedMap(pins.at(name), nil)
		if errors.Is(err, fs.ErrNotExist) {
			fresh = append(fresh, name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bpf pin %s: %w", filepath.Join(dir, name), err)
		}
		if spec.Maps[name].Compatible(m) != nil {
			m.Close()
			fresh = append(fresh, name)
			continue
		}
		reuse[name] = m
	}
	if m := reuse[pinMeta]; m != nil {
		var meta connacctPinMeta
		if err := m.Lookup(uint32(0), &meta); err != nil {
			return nil, fmt.Errorf("bpf pin %s: %w", pinMeta, err)
		}
		if meta.NetnsCookie != 0 && meta.NetnsCookie != cookie {
			return nil, fmt.Errorf("%s: %w (cookie %d, this one is %d); `ipwatchd -bpf off` there removes it",
				dir, ErrOtherNamespace, meta.NetnsCookie, cookie)
		}
	}

	var objs connacctObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: reuse}); err != nil {
		return nil, fmt.Errorf("loading the bpf program: %w", err)
	}
	defer func() {
		objs.CountPassive.Close()
		objs.Seen.Close()
		objs.Meta.Close()
		if err != nil {
			objs.Counts.Close()
			objs.Drops.Close()
		}
	}()
	if err := objs.Meta.Update(uint32(0), connacctPinMeta{NetnsCookie: cookie}, ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("bpf pin %s: %w", pinMeta, err)
	}
	maps := map[string]*ebpf.Map{pinCounts: objs.Counts, pinDrops: objs.Drops, pinSeen: objs.Seen, pinMeta: objs.Meta}
	for _, name := range fresh {
		if err := pinOver(pins, name, maps[name].Pin); err != nil {
			return nil, err
		}
	}

	// The new link first, the old one released after: see "Upgrade".
	l, err := link.AttachTracing(link.TracingOptions{Program: objs.CountPassive, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		return nil, fmt.Errorf("attaching to sock:inet_sock_set_state: %w", err)
	}
	defer l.Close() // the pin holds it from now on
	// Absent, not a link, or unreadable: nil, and the pin is replaced
	// all the same.
	old, _ := link.LoadPinnedLink(pins.at(pinLink), nil)
	if err := pinOver(pins, pinLink, l.Pin); err != nil {
		if old != nil {
			old.Close()
		}
		return nil, err
	}
	if opts.beforeRelease != nil {
		opts.beforeRelease(old)
	}
	if old != nil {
		// Our reference goes now, the old pin's after an RCU grace
		// period (bpffs frees inodes that way), and then the kernel
		// detaches the old program. Nothing waits for it: until then
		// both programs run, and seen keeps the counts exact.
		old.Close()
	}

	_, resumed := reuse[pinCounts]
	return &Counter{counts: objs.Counts, drops: objs.Drops, resumed: resumed, pinDir: dir}, nil
}

// pinOver pins an object as name in the pin directory, replacing whatever
// is pinned there in one rename, so that the name always holds the old
// object or the new.
func pinOver(pins *pinDir, name string, pin func(string) error) error {
	tmp := name + newSuffix
	if err := unix.Unlinkat(pins.fd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("bpf pin %s: %w", filepath.Join(pins.path, tmp), err)
	}
	if err := pin(pins.at(tmp)); err != nil {
		return fmt.Errorf("bpf pin %s: %w", filepath.Join(pins.path, name), err)
	}
	if err := unix.Renameat(pins.fd, tmp, pins.fd, name); err != nil {
		unix.Unlinkat(pins.fd, tmp, 0)
		return fmt.Errorf("bpf pin %s: %w", filepath.Join(pins.path, name), err)
	}
	return nil
}

// Counts returns the connections counted per local address and port since
// the counters were first pinned, summed over CPUs.
func (c *Counter) Counts() (map[Key]uint64, error) {
	out := make(map[Key]uint64)
	var (
		k    connacctKey
		vals []uint64
	)
	it := c.counts.Iterate()
	for it.Next(&k, &vals) {
		var n uint64
		for _, v := range vals {
			n += v
		}
		var a netip.Addr
		switch k.Family {
		case unix.AF_INET:
			a = netip.AddrFrom4([4]byte(k.Addr[:4]))
		case unix.AF_INET6:
			a = netip.AddrFrom16(k.Addr).Unmap()
		default:
			continue
		}
		out[Key{Addr: a, Port: k.Port}] += n
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading the bpf counters: %w", err)
	}
	return out, nil
}

// Drops returns the connections that were not counted because the
// counters were full (65,536 address and port pairs).
func (c *Counter) Drops() (uint64, error) {
	var vals []uint64
	if err := c.drops.Lookup(uint32(0), &vals); err != nil {
		return 0, fmt.Errorf("reading the bpf counters: %w", err)
	}
	var n uint64
	for _, v := range vals {
		n += v
	}
	return n, nil
}

// Resumed reports whether Open took over counters already pinned (counts
// carried over from an earlier load) rather than starting from zero.
func (c *Counter) Resumed() bool { return c.resumed }

// PinDir is the pin directory the counter reads.
func (c *Counter) PinDir() string { return c.pinDir }

// Close releases this process's handles. The pins stay, and the program
// goes on counting into them.
func (c *Counter) Close() error {
	return errors.Join(c.counts.Close(), c.drops.Close())
}

// Remove detaches the program and deletes the pins and the pin directory
// ("" means DefaultPinDir), for `ipwatchd -bpf off`. Nothing pinned is no
// error. A Counter still open keeps its last counts and counts no more.
// It refuses, as Open does, a pin directory that is not root's with mode
// 0700 or lies behind a symbolic link, and then removes nothing: what is
// in it is not ipwatchd's.
func Remove(pinDir string) error {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	pins, err := openPinDir(pinDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer pins.close() // and unlocks
	if err := pins.lock(); err != nil {
		return err
	}

	var prog ebpf.ProgramID
	if l, err := link.LoadPinnedLink(pins.at(pinLink), nil); err == nil {
		if info, err := l.Info(); err == nil {
			prog = info.Program
		}
		l.Close()
	}
	var errs []error
	for _, name := range []string{pinLink, pinCounts, pinDrops, pinSeen, pinMeta} {
		for _, p := range []string{name, name + newSuffix} {
			if err := unix.Unlinkat(pins.fd, p, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing %s: %w", filepath.Join(pins.path, p), err))
			}
		}
	}
	// Under the shipped unit the pin directory is a bind mount in a
	// read-only tree (ReadWritePaths): emptied is as good as removed.
	if err := unix.Unlinkat(pins.parent, filepath.Base(pins.path), unix.AT_REMOVEDIR); err != nil &&
		!errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EROFS) {
		errs = append(errs, fmt.Errorf("removing %s: %w", pins.path, err))
	}
	if prog != 0 {
		errs = append(errs, waitGone(prog, removeWait))
	}
	return errors.Join(errs...)
}

// removeWait bounds Remove's wait for the kernel to detach the program:
// an RCU grace period and a work item, milliseconds, unless another
// process holds the link open.
const removeWait = 10 * time.Second

// waitGone waits until the kernel has freed program id. It frees a
// program only after its link has detached it, so from then on it counts
// nothing. (Raw tracepoint links have no BPF_LINK_DETACH to do it at
// once, and removing a pin drops its reference only after an RCU grace
// period.)
func waitGone(id ebpf.ProgramID, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		p, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err == nil {
			p.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bpf program %d still attached after %v: another process holds its link", id, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Unavailable reports in words why BPF connection accounting cannot run
// here, for `ipwatchctl status` ("off: <reason>"), or "" when it can. Open
// may still fail (a kernel older than 6.1, a locked-down kernel); its error
// is then the reason.
func Unavailable() string {
	if !hasCaps() {
		return "needs root (CAP_BPF and CAP_PERFMON, and CAP_SYS_ADMIN to mount bpffs)"
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return "the kernel has no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF)"
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Sprintf("reading the kernel's BTF: %v", err)
	}
	var tp *btf.Typedef
	if err := spec.TypeByName("btf_trace_inet_sock_set_state", &tp); err != nil {
		return "the kernel has no sock:inet_sock_set_state tracepoint"
	}
	return ""
}

// hasCaps reports whether the effective capabilities allow loading and
// attaching a tracing program: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN
// (which held both before they were split off, and still implies them).
func hasCaps() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_SYS_ADMIN) || (has(unix.CAP_BPF) && has(unix.CAP_PERFMON))
}

// netnsCookie returns the cookie of the calling thread's network
// namespace, as the kernel keeps it in struct net (SO_NETNS_COOKIE, Linux
// 5.14). A Unix socket is enough: it works where IPv4 or IPv6 are off.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie (SO_NETNS_COOKIE, Linux 5.14): %w", err)
	}
	return c, nil
}

// mountMu makes the check and the mount one step within the process:
// two Opens racing to mount would stack two bpffs, and the pins made in
// the lower one would vanish from sight.
var mountMu sync.Mutex

// mountBPFFS mounts bpffs at /sys/fs/bpf unless it is there, with
// systemd's options.
func mountBPFFS() error {
	mountMu.Lock()
	defer mountMu.Unlock()
	if onBPFFS(bpffsRoot) == nil {
		return nil
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RELATIME, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs at %s: %w", bpffsRoot, err)
	}
	return nil
}

func onBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("bpf pin directory: %w", err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not on bpffs", dir)
	}
	return nil
}

func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}
