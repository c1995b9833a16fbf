// Package testbed builds the real environment the end-to-end tests and
// `make demo` run in: a private network namespace with addresses on its lo,
// root directories that pass validation, a syslog socket that catches
// virtuald's log, the project's binaries, and real super-servers (inetd,
// xinetd, tcpserver, systemd-socket-activate) started inside the namespace.
//
// Everything it makes is removed through T.Cleanup. It needs root.
package testbed

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// T is the part of testing.TB the testbed uses, so that the demo can run
// it outside a test.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}

// RequirePrivileges skips a test that needs root, unless
// VIRTUALD_REQUIRE_PRIVILEGES=1 (set by CI), where a missing privilege fails
// the test instead: CI runs as root, and a skipped end-to-end test there
// would hide a broken environment.
func RequirePrivileges(t interface {
	T
	Skip(args ...any)
}) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("VIRTUALD_REQUIRE_PRIVILEGES") == "1" {
		t.Fatalf("this test needs root (network namespaces, chroot), and VIRTUALD_REQUIRE_PRIVILEGES=1 forbids skipping it")
	}
	t.Skip("skipped: needs root for network namespaces and chroot")
}

// RequireTool returns the path of a program a test runs, and skips the
// test when it is missing, unless VIRTUALD_REQUIRE_PRIVILEGES=1 (CI),
// where a missing tool fails it, as a missing privilege does.
// scripts/need installs them all for make test.
func RequireTool(t interface {
	T
	Skip(args ...any)
}, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("VIRTUALD_REQUIRE_PRIVILEGES") == "1" {
		t.Fatalf("%s is missing (make test installs it: scripts/need test), and VIRTUALD_REQUIRE_PRIVILEGES=1 forbids skipping: %v", name, err)
	}
	t.Skip("skipped: needs " + name)
	return ""
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NetNS is a private network namespace that cannot outlive the test
// process: an OS thread of the process unshares it and holds it (tubular's
// way), and nothing else does. It has no name in /run/netns and no bind
// mount, so when the process ends, however it ends, the kernel frees it;
// the processes started in it (Command, Start) are killed when the
// process dies (Pdeathsig). Its cleanup kills what runs in it and ends the
// thread.
type NetNS struct {
	// Name labels what a test keeps per namespace (a BPF pin directory)
	// and its messages; it names nothing in /run/netns.
	Name string
	// Path enters the namespace (nsenter --net, setns, ip ... netns): the
	// holding thread's /proc/PID/task/TID/ns/net.
	Path    string
	t       T
	release chan struct{} // closed at cleanup: the holding thread ends

	mu    sync.Mutex
	procs []*Process // started with Start
}

// NewNetNS makes a namespace with lo up.
func NewNetNS(t T) *NetNS {
	t.Helper()
	ns := &NetNS{Name: "vdtest-" + randomSuffix(), t: t, release: make(chan struct{})}
	held := make(chan error, 1)
	go func() {
		// The thread stays locked: when this goroutine returns, the
		// runtime ends the thread, the namespace's only holder.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			held <- fmt.Errorf("unshare: %w", err)
			return
		}
		ns.Path = fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		held <- nil
		<-ns.release
	}()
	if err := <-held; err != nil {
		t.Fatalf("network namespace: %v", err)
	}
	t.Cleanup(func() {
		for _, pid := range ns.pids() {
			unix.Kill(pid, unix.SIGKILL)
		}
		close(ns.release)
	})
	ns.IP("link", "set", "lo", "up")
	return ns
}

// pids lists the processes in the namespace.
func (ns *NetNS) pids() []int {
	id, err := os.Readlink(ns.Path)
	if err != nil {
		return nil
	}
	return pidsIn(id)
}

// pidsIn lists the processes whose network namespace is id ("net:[N]").
func pidsIn(id string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && l == id {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Exec returns a command that runs name inside the namespace, as it is
// (no private mounts: see Command for long-running programs).
func (ns *NetNS) Exec(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + ns.Path, "--", name}, args...)...)
}

// AddAddr puts addr (an address, without prefix length) on the
// namespace's lo.
func (ns *NetNS) AddAddr(addr string) {
	ns.t.Helper()
	if strings.Contains(addr, ":") {
		ns.IP("addr", "add", addr+"/128", "dev", "lo", "nodad")
	} else {
		ns.IP("addr", "add", addr+"/32", "dev", "lo")
	}
}

// Do runs fn on an OS thread that has entered the namespace; sockets fn
// creates belong to the namespace for good.
func (ns *NetNS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(orig)
	target, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// The thread is in the wrong namespace: leave it locked so
		// that the runtime ends it with this goroutine.
		return fmt.Errorf("returning to the host namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Dial connects to addr ("host:port") over network from inside the namespace.
func (ns *NetNS) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	return c, err
}

// Ask connects over TCP, reads everything the service sends until it
// closes, and returns it. A refused connection gives "" and no error: the
// peer closed it without a byte.
func (ns *NetNS) Ask(addr string) (string, error) {
	c, err := ns.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var buf bytes.Buffer
	_, err = buf.ReadFrom(c)
	return buf.String(), err
}

// AskUDP sends one datagram to addr and waits for one answer from that
// same address (the socket is connected, so an answer from any other
// source is dropped by the kernel).
func (ns *NetNS) AskUDP(addr string, wait time.Duration) (string, error) {
	c, err := ns.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte("who?\n")); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// Command returns a command that runs inside the namespace, in a private
// mount namespace (a slave of the host's: nothing of it reaches the host)
// whose /dev holds only null, zero, random, urandom and a log socket that
// leads to sl (or no log socket when sl is nil). It enters the network
// namespace with nsenter rather than `ip netns exec`, which would mount a
// fresh sysfs on /sys and so hide the host's BPF file system: pinned BPF
// objects must outlive the command, as they do on a host. The command is
// killed if the test process dies first (nsenter, unshare and sh each
// exec the next, so the signal reaches the program).
func (ns *NetNS) Command(sl *Syslog, name string, args ...string) *exec.Cmd {
	logPath := ""
	if sl != nil {
		logPath = sl.Path
	}
	script := `set -e
mount -t tmpfs -o mode=0755,size=64k testbed-dev /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
if [ -n "$1" ]; then ln -s "$1" /dev/log; fi
shift
exec "$@"`
	cmd := ns.Exec("unshare", append([]string{"--mount", "--propagation", "slave",
		"/bin/sh", "-c", script, "sh", logPath, name}, args...)...)
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	return cmd
}

// Process is a long-running command started with Start.
type Process struct {
	*exec.Cmd
	name    string
	out     lockedBuffer  // its stdout and stderr
	done    chan struct{} // closed when it has exited (and been waited for)
	stopped atomic.Bool   // Stop was called: its exit is not a failure
}

// Stop sends SIGTERM and waits for the process to exit. Only Start's own
// goroutine waits for it: a second Wait would race with that one.
func (p *Process) Stop() {
	p.stopped.Store(true)
	p.Process.Signal(unix.SIGTERM)
	<-p.done
}

// Kill kills the process at once, as a crash would, and waits for it: the
// test means it, so its exit fails no Await.
func (p *Process) Kill() {
	p.stopped.Store(true)
	p.Process.Kill()
	<-p.done
}

// Output returns what the process has written so far.
func (p *Process) Output() string { return p.out.String() }

// died tells whether the process has exited without Stop.
func (p *Process) died() bool {
	select {
	case <-p.done:
		return !p.stopped.Load()
	default:
		return false
	}
}

// Start starts a long-running command with Command and stops it at cleanup.
// Until the test calls Stop, its exit fails every Await in the namespace
// at once, with its own output.
func (ns *NetNS) Start(sl *Syslog, name string, args ...string) *Process {
	ns.t.Helper()
	cmd := ns.Command(sl, name, args...)
	p := &Process{Cmd: cmd, name: name, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		ns.t.Fatalf("starting %s: %v", name, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	ns.mu.Lock()
	ns.procs = append(ns.procs, p)
	ns.mu.Unlock()
	ns.t.Cleanup(func() {
		p.stopped.Store(true)
		cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if ns.t.Failed() {
			ns.t.Logf("output of %s:\n%s", name, p.Output())
		}
	})
	return p
}

// Await waits up to timeout for ready to hold, checking every 25 ms. A
// process started with Start that exits meanwhile (a super-server that
// cannot bind, a daemon that refuses its flags, a program that is not
// installed) fails the test at once with its own output; so does the
// timeout, with the output of every process of the namespace.
func (ns *NetNS) Await(what string, timeout time.Duration, ready func() bool) {
	ns.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(25 * time.Millisecond) {
		if ready() {
			return
		}
		ns.mu.Lock()
		procs := append([]*Process(nil), ns.procs...)
		ns.mu.Unlock()
		for _, p := range procs {
			if p.died() {
				ns.t.Fatalf("%s exited (%v) before %s; its output:\n%s", p.name, p.ProcessState, what, p.Output())
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range procs {
				fmt.Fprintf(&b, "\n-- %s:\n%s", p.name, p.Output())
			}
			ns.t.Fatalf("%s: not after %v in %s; the output of its processes:%s", what, timeout, ns.Name, b.String())
		}
	}
}

// WaitListening waits until something listens on port (proto "tcp" or
// "udp") in the namespace, as `ss` sees it.
func (ns *NetNS) WaitListening(proto string, port int) {
	ns.t.Helper()
	flag := "-Hltn"
	if proto == "udp" {
		flag = "-Hlun"
	}
	ns.Await(fmt.Sprintf("something listens on %s port %d", proto, port), 5*time.Second, func() bool {
		out, _ := ns.Exec("ss", flag, fmt.Sprintf("sport = :%d", port)).Output()
		return len(bytes.TrimSpace(out)) > 0
	})
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func mustRun(t T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// Syslog is a datagram socket that collects what programs send to /dev/log.
type Syslog struct {
	Path  string
	mu    sync.Mutex
	lines []string
	conn  *net.UnixConn
}

// NewSyslog listens on a fresh socket in dir.
func NewSyslog(t T, dir string) *Syslog {
	t.Helper()
	s := &Syslog{Path: filepath.Join(dir, "log.sock")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.Path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("syslog socket: %v", err)
	}
	s.conn = c
	t.Cleanup(func() { c.Close() })
	Must(t, os.Chmod(s.Path, 0o666))
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.lines = append(s.lines, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s
}

// Lines returns the messages received so far.
func (s *Syslog) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Len is the number of messages received so far.
func (s *Syslog) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lines)
}

// Count counts the messages holding every one of subs.
func (s *Syslog) Count(subs ...string) int {
	n := 0
	for _, l := range s.Lines() {
		if holdsAll(l, subs) {
			n++
		}
	}
	return n
}

func holdsAll(l string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(l, sub) {
			return false
		}
	}
	return true
}

// AwaitCount waits up to timeout until n messages hold every one of
// subs, and returns how many do then.
func (s *Syslog) AwaitCount(n int, timeout time.Duration, subs ...string) int {
	deadline := time.Now().Add(timeout)
	for s.Count(subs...) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return s.Count(subs...)
}

// WaitFor returns the first message holding every one of subs, waiting up
// to timeout for it to arrive.
func (s *Syslog) WaitFor(timeout time.Duration, subs ...string) (string, bool) {
	return s.WaitAfter(0, timeout, subs...)
}

// WaitAfter is WaitFor among the messages after the first n (Len before
// the step that logs).
func (s *Syslog) WaitAfter(n int, timeout time.Duration, subs ...string) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range s.Lines()[n:] {
			if holdsAll(l, subs) {
				return l, true
			}
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Tail returns the last n messages, for failure reports.
func (s *Syslog) Tail(n int) string {
	l := s.Lines()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// MountBPFFS mounts the BPF file system at /sys/fs/bpf on the host when it
// is not there yet, as systemd does at boot, so that tests can pin BPF
// objects where a real ipwatchd would.
func MountBPFFS(t T) {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/bpf", &st) == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	mustRun(t, "mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
}

// privateMountsEnv names the test that runs in PrivateMounts' child.
const privateMountsEnv = "VIRTUALD_TEST_PRIVATE_MOUNTS"

// PrivateMounts runs the calling top-level test again, alone, in a child
// process inside a private mount namespace, and fails the test when the
// child fails. It returns true in the child, where the test goes on and
// may mount what it likes (a ramfs, a file system with coarse
// timestamps): the mounts vanish with the child, even when it crashes. It
// returns false in the parent, which must return at once.
func PrivateMounts(t interface {
	T
	Name() string
	Skip(args ...any)
}) bool {
	t.Helper()
	if os.Getenv(privateMountsEnv) == t.Name() {
		return true
	}
	RequirePrivileges(t)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), privateMountsEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	passed := bytes.Contains(out, []byte("--- PASS: "+t.Name()+" "))
	if err != nil || !passed {
		t.Fatalf("%s in a private mount namespace: %v\n%s", t.Name(), err, out)
	}
	t.Logf("ran in a private mount namespace:\n%s", out)
	return false
}

// Must fails the test when a setup step failed: a test that went on after
// its setup failed would test something else than it says.
func Must(t T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
}
