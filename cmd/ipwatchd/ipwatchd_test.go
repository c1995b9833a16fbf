package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
	"golang.org/x/sys/unix"
)

// The end-to-end tests of ipwatchd: the real daemon, the real virtuald
// under a real inetd, in a private network namespace.

func TestMain(m *testing.M) {
	if os.Getenv("IMPOSTOR_SOCKET") != "" {
		os.Exit(impostor(os.Getenv("IMPOSTOR_SOCKET")))
	}
	os.Exit(testbed.RunMain(m))
}

type world struct {
	t      *testing.T
	ns     *testbed.NetNS
	roots  *testbed.Roots
	log    *testbed.Syslog
	bin    map[string]string
	socket string
	conf   string
	addrs  []string
	daemon *testbed.Process
	accept bool   // run virtuald -accept under inetd's wait, instead of per connection
	pinDir string // the namespace's own BPF pin directory
}

const port = 7000

func newWorld(t *testing.T, n int) *world {
	testbed.RequirePrivileges(t)
	w := &world{t: t, bin: testbed.Binaries(t)}
	w.ns = testbed.NewNetNS(t)
	w.roots = testbed.NewRoots(t)
	w.daemonPlaces()
	var lines []string
	for i := 0; i < n; i++ {
		a := fmt.Sprintf("192.0.2.%d", i+1)
		if i%5 == 4 {
			a = fmt.Sprintf("2001:db8::%x", i+1)
		}
		w.ns.AddAddr(a)
		w.addrs = append(w.addrs, a)
		lines = append(lines, a+" "+w.roots.Root("site-"+strconv.Itoa(i+1), w.bin["whoami"]))
	}
	w.conf = w.roots.WriteConf("conf", lines...)
	return w
}

// daemonPlaces gives the world's ipwatchd in w.ns its log, its socket and
// its own BPF pin directory.
func (w *world) daemonPlaces() {
	tmp := w.t.TempDir()
	w.log = testbed.NewSyslog(w.t, tmp)
	w.socket = filepath.Join(tmp, "run", "ipwatchd.sock")
	// Counters are pinned per network namespace: never the host's.
	testbed.MountBPFFS(w.t)
	w.pinDir = "/sys/fs/bpf/" + w.ns.Name
	w.t.Cleanup(func() { bpf.Remove(w.pinDir) })
}

// startInetd runs inetd with virtuald asking the daemon at w.socket.
func (w *world) startInetd() {
	line := func(proto string) string {
		if w.accept {
			return fmt.Sprintf("%d stream %s wait root %s virtuald -accept -socket %s %s /bin/whoami", port, proto, w.bin["virtuald"], w.socket, w.conf)
		}
		return fmt.Sprintf("%d stream %s nowait root %s virtuald -socket %s %s /bin/whoami", port, proto, w.bin["virtuald"], w.socket, w.conf)
	}
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf", line("tcp"), line("tcp6")))
	w.ns.WaitListening("tcp", port)
}

// startDaemon runs ipwatchd in the namespace and waits until it answers.
func (w *world) startDaemon(args ...string) {
	w.t.Helper()
	ipwatchdtest.Settle(w.t, w.conf)
	args = append([]string{"-socket", w.socket, "-conf", w.conf, "-bpf-pin-dir", w.pinDir}, args...)
	w.daemon = w.ns.Start(w.log, w.bin["ipwatchd"], args...)
	w.ns.Await("ipwatchd answers", 10*time.Second, func() bool {
		_, err := w.status()
		return err == nil
	})
}

func (w *world) status() (*admin.Status, error) {
	return admin.Client{Socket: w.socket}.Status(admin.StatusQuery{})
}

func (w *world) entry(st *admin.Status, key string) *admin.EntryStatus {
	for _, c := range st.Confs {
		for i := range c.Entries {
			if c.Entries[i].Key == key {
				return &c.Entries[i]
			}
		}
	}
	return nil
}

func hostPort(a string) string { return net.JoinHostPort(a, strconv.Itoa(port)) }

// connect makes total connections spread over every address, 16 at a
// time, and checks that each was answered from its own root. want maps an
// address to the acceptable root names (nil: "site-N" of its index).
func (w *world) connect(total int, want func(i int, got string) bool) (failed, wrong int64, msgs []string) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	sem := make(chan struct{}, 16)
	for i := 0; i < total; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			a := i % len(w.addrs)
			got, err := w.ns.Ask(hostPort(w.addrs[a]))
			ok := true
			switch {
			case err != nil || got == "":
				atomic.AddInt64(&failed, 1)
				ok = false
			case want != nil && !want(a, got), want == nil && !strings.HasPrefix(got, "root=site-"+strconv.Itoa(a+1)+" "):
				atomic.AddInt64(&wrong, 1)
				ok = false
			}
			if !ok {
				mu.Lock()
				if len(msgs) < 10 {
					msgs = append(msgs, fmt.Sprintf("%s: %q %v", w.addrs[a], got, err))
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return failed, wrong, msgs
}

// 50 addresses, thousands of connections through a real inetd: every one
// from its own root, every answer from the daemon, and the daemon's
// counters account for each; per connection and in accept mode (which
// asks once per address and reports the rest).
func TestDaemonAnswersInetd(t *testing.T) {
	for _, accept := range []bool{false, true} {
		t.Run(map[bool]string{false: "per connection", true: "accept mode"}[accept], func(t *testing.T) {
			testDaemonAnswersInetd(t, accept)
		})
	}
}

func testDaemonAnswersInetd(t *testing.T, accept bool) {
	w := newWorld(t, 50)
	w.accept = accept
	w.startDaemon()
	w.startInetd()
	const total = 2000
	start := time.Now()
	failed, wrong, msgs := w.connect(total, nil)
	if failed+wrong > 0 {
		t.Fatalf("%d failed, %d wrong of %d: %s", failed, wrong, total, msgs)
	}
	elapsed := time.Since(start)
	waitLog(t, w, total, "via=")
	// On a loaded machine an answer can take longer than virtuald waits
	// (150 ms): that connection, and those in the next ipc.SlowHold, read
	// the file, and say so. Every other one is the daemon's.
	answered := w.log.Count("via=daemon") // and via=daemon-cache
	waited := w.log.Count("via=file", "daemon=slow ")
	slow := waited + w.log.Count("via=file", `daemon="slow (`)
	if answered+slow != total || answered < total/2 {
		t.Errorf("%d of %d connections were answered by the daemon, %d from the file because it was slow; log ends:\n%s", answered, total, slow, w.log.Tail(3))
	}
	if slow > 0 {
		t.Logf("%d connections went to the file because the daemon was slow (%d waited for it): the machine is loaded", slow, waited)
	}
	questions := uint64(answered)
	if accept {
		// About one question per address, listening socket (tcp, tcp6)
		// and second (kept answers last answerTTL); the rest from the
		// kept answers.
		most := 2 * len(w.addrs) * (int(elapsed/time.Second) + 2)
		if n := w.log.Count("via=daemon-cache"); n < total-most {
			t.Errorf("only %d of %d connections were answered from the kept answers in %v", n, total, elapsed)
		}
		questions -= uint64(w.log.Count("via=daemon-cache"))
	}
	// Accept mode reports the connections it answered itself every second.
	var resolved uint64
	var st *admin.Status
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		if st, err = w.status(); err != nil {
			t.Fatal(err)
		}
		resolved = 0
		for _, a := range w.addrs {
			if e := w.entry(st, a); e != nil {
				resolved += e.Resolved
			}
		}
		if resolved >= uint64(answered) || time.Now().After(deadline) {
			break
		}
	}
	for _, a := range w.addrs {
		if e := w.entry(st, a); e == nil || e.State != admin.StateLive {
			t.Errorf("%s: entry %+v, want live", a, e)
		}
	}
	// A question virtuald gave up on may still have been answered (and
	// counted) by the daemon.
	late := uint64(waited)
	if resolved < uint64(answered) || resolved > uint64(answered)+late || st.Queries.OK < questions || st.Queries.OK > questions+late {
		t.Errorf("the daemon counted %d resolved and answered %d questions; want %d and %d (up to %d more, answered too late)", resolved, st.Queries.OK, answered, questions, late)
	}
}

func waitLog(t *testing.T, w *world, n int, subs ...string) {
	t.Helper()
	w.log.AwaitCount(n, 10*time.Second, subs...)
}

// kill -9 of the daemon in the middle of a load: no connection fails or
// goes to a wrong root (virtuald reads the file meanwhile); once the daemon
// is back, virtuald asks it again. Per connection and in accept mode.
func TestDaemonKilled(t *testing.T) {
	for _, accept := range []bool{false, true} {
		t.Run(map[bool]string{false: "per connection", true: "accept mode"}[accept], func(t *testing.T) {
			testDaemonKilled(t, accept)
		})
	}
}

func testDaemonKilled(t *testing.T, accept bool) {
	w := newWorld(t, 20)
	w.accept = accept
	w.startDaemon()
	w.startInetd()
	var failed, wrong int64
	var msgs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		failed, wrong, msgs = w.connect(1500, nil)
	}()
	waitLog(t, w, 300, "via=")
	w.daemon.Kill()
	<-done
	if failed+wrong > 0 {
		t.Fatalf("%d failed, %d wrong: %s", failed, wrong, msgs)
	}
	// Per connection, virtuald reads the file while the daemon is dead;
	// accept mode also keeps the daemon's answers, so it may not need to.
	if n := w.log.Count("via=file", `daemon=absent`); n == 0 && !accept {
		t.Error("no connection was served from the file while the daemon was dead")
	}
	waitLog(t, w, 1500, "via=")
	before := w.log.Count("via=daemon")
	beforeSlow := w.log.Count("via=file", "daemon=slow") + w.log.Count("via=file", `daemon="slow (`)
	w.startDaemon()
	if failed, wrong, msgs := w.connect(100, nil); failed+wrong > 0 {
		t.Fatalf("after the restart: %d failed, %d wrong: %s", failed, wrong, msgs)
	}
	// Every one is the daemon's again, but on a loaded machine one whose
	// answer took longer than virtuald waits (150 ms; a daemon just
	// started checks every root meanwhile), and those in the next
	// ipc.SlowHold, which read the file and say why.
	waitLog(t, w, 1600, "via=")
	answered := w.log.Count("via=daemon") - before
	slow := w.log.Count("via=file", "daemon=slow") + w.log.Count("via=file", `daemon="slow (`) - beforeSlow
	if answered+slow != 100 || answered == 0 {
		t.Errorf("after the restart %d of 100 connections were answered by the daemon, %d from the file because it was slow; log ends:\n%s", answered, slow, w.log.Tail(8))
	}
}

// Replacing the conf file by rename while connections run: no connection
// is served from a root that neither file gives its address, and from a
// second after the rename every connection follows the new file.
func TestConfReplacedByRename(t *testing.T) {
	w := newWorld(t, 20)
	var newLines []string
	for i, a := range w.addrs {
		newLines = append(newLines, a+" "+w.roots.Root("new-"+strconv.Itoa(i+1), w.bin["whoami"]))
	}
	next := w.roots.WriteConf("conf.next", newLines...)
	w.startDaemon()
	w.startInetd()
	var renamed atomic.Int64 // unix nanoseconds of the rename, 0 before
	oldOrNew := func(i int, got string) bool {
		n := strconv.Itoa(i + 1)
		return strings.HasPrefix(got, "root=site-"+n+" ") || strings.HasPrefix(got, "root=new-"+n+" ")
	}
	done := make(chan struct{})
	var failed, wrong int64
	var msgs []string
	go func() {
		defer close(done)
		failed, wrong, msgs = w.connect(1500, oldOrNew)
	}()
	waitLog(t, w, 300, "outcome=exec")
	if err := os.Rename(next, w.conf); err != nil {
		t.Fatal(err)
	}
	renamed.Store(time.Now().UnixNano())
	<-done
	if failed+wrong > 0 {
		t.Fatalf("%d failed, %d served from a root neither file gives: %s", failed, wrong, msgs)
	}
	time.Sleep(time.Until(time.Unix(0, renamed.Load()).Add(time.Second)))
	if failed, wrong, msgs := w.connect(200, func(i int, got string) bool {
		return strings.HasPrefix(got, "root=new-"+strconv.Itoa(i+1)+" ")
	}); failed+wrong > 0 {
		t.Fatalf("a second after the rename: %d failed, %d not from the new file: %s", failed, wrong, msgs)
	}
	st, err := w.status()
	if err != nil {
		t.Fatal(err)
	}
	if e := w.entry(st, w.addrs[0]); e == nil || !strings.HasSuffix(e.Root, "/new-1") {
		t.Errorf("the daemon did not load the new file: %+v", e)
	}
}

// An address removed from its interface turns its entry absent; re-added,
// live; an address with no entry is reported unmapped; an entry whose root
// breaks a rule is invalid, with the reason.
func TestAddressStates(t *testing.T) {
	w := newWorld(t, 3)
	w.ns.AddAddr("198.51.100.99")
	bad := w.roots.Root("world-writable", "")
	testbed.Must(t, os.Chmod(bad, 0o777))
	f, _ := os.OpenFile(w.conf, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("203.0.113.1 " + bad + "\n")
	f.Close()
	w.startDaemon()
	a := w.addrs[0]
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := w.status()
			if err == nil {
				if e := w.entry(st, a); e != nil && e.State == want {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not become %s; status: %+v", a, want, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitState(admin.StateLive)
	if out, err := w.ns.Exec("ip", "addr", "del", a+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitState(admin.StateAbsent)
	w.ns.AddAddr(a)
	waitState(admin.StateLive)
	st, _ := w.status()
	found := false
	for _, u := range st.Unmapped {
		found = found || u.Address == "198.51.100.99" && u.Interface == "lo"
	}
	if !found {
		t.Errorf("198.51.100.99 is not reported unmapped: %+v", st.Unmapped)
	}
	if e := w.entry(st, "203.0.113.1"); e == nil || e.State != admin.StateInvalid || !strings.Contains(e.Reason, "is writable by group or others (mode 0777)") {
		t.Errorf("the world-writable root: %+v, want invalid with the reason", e)
	}
}

// A listener at the socket path that does not run as root is not
// believed, whatever it answers: virtuald reads the file.
func TestImpostorIgnored(t *testing.T) {
	w := newWorld(t, 3)
	dir := filepath.Join(w.roots.Dir, "impostor")
	testbed.Must(t, os.Mkdir(dir, 0o755))
	testbed.Must(t, os.Chown(dir, 65534, 65534))
	w.socket = filepath.Join(dir, "ipwatchd.sock")
	// The test binary's own directory is private to root: run a copy.
	self, _ := os.Executable()
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "impostor")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	imp := exec.Command(bin, "-test.run=^$")
	imp.Env = append(os.Environ(), "IMPOSTOR_SOCKET="+w.socket)
	imp.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := imp.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { imp.Process.Kill(); imp.Wait() }()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(w.socket); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.startInetd()
	if failed, wrong, msgs := w.connect(30, nil); failed+wrong > 0 {
		t.Fatalf("%d failed, %d wrong: %s", failed, wrong, msgs)
	}
	waitLog(t, w, 30, "outcome=exec")
	if n := w.log.Count("via=file", "runs as uid 65534"); n != 30 {
		t.Errorf("%d of 30 connections say the impostor was not trusted; log ends:\n%s", n, w.log.Tail(3))
	}
}

// impostor answers every resolve with the host's root, as a hostile user
// would. It must never be believed.
func impostor(path string) int {
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func(c net.Conn) {
			defer c.Close()
			c.Read(make([]byte, 4096))
			frame, _ := ipc.Encode(ipc.ResolveReply(&ipc.Answer{Generation: 1, Rule: "exact", Line: 1, Key: "x", Root: "/"}, nil)...)
			c.Write(frame)
		}(c)
	}
}

// The daemon tells systemd READY=1 once it is ready, RELOADING=1 with
// MONOTONIC_USEC and READY=1 around a SIGHUP reload, and STOPPING=1 on
// SIGTERM, after which it exits 0 and its socket is gone.
func TestSystemdNotify(t *testing.T) {
	w := newWorld(t, 2)
	notify := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, want) {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no %q from the daemon", want)
			}
		}
	}
	cmd := exec.Command(w.bin["ipwatchd"], "-socket", w.socket, "-conf", w.conf, "-bpf", "off", "-bpf-pin-dir", w.pinDir)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	next("READY=1")
	if _, err := os.Stat(w.socket); err != nil {
		t.Fatalf("READY=1 before the socket exists: %v", err)
	}
	cmd.Process.Signal(unix.SIGHUP)
	if m := next("RELOADING=1"); !strings.Contains(m, "\nMONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
	next("READY=1")
	cmd.Process.Signal(unix.SIGTERM)
	next("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(w.socket); !os.IsNotExist(err) {
		t.Errorf("the socket is left behind: %v", err)
	}
}

// The kernel counts connections exactly, per entry and for unmapped
// addresses; the counts survive a restart of the daemon, and connections
// made while it is down are counted too.
func TestKernelCounts(t *testing.T) {
	w := newWorld(t, 3)
	w.ns.AddAddr("198.51.100.99") // no entry: refused, but the kernel saw it
	w.startDaemon("-bpf", "on")
	w.startInetd()
	connect := func(addr string, n int) {
		for i := 0; i < n; i++ {
			w.ns.Ask(hostPort(addr))
		}
	}
	counts := func() (entry, unmapped uint64) {
		st, err := w.status()
		if err != nil {
			t.Fatal(err)
		}
		if st.BPF != "on" {
			t.Fatalf("bpf: %s", st.BPF)
		}
		if e := w.entry(st, w.addrs[0]); e != nil {
			entry = e.Connections
		}
		for _, u := range st.Unmapped {
			if u.Address == "198.51.100.99" {
				unmapped = u.Connections
			}
		}
		return entry, unmapped
	}
	connect(w.addrs[0], 25)
	connect("198.51.100.99", 7)
	if e, u := counts(); e != 25 || u != 7 {
		t.Fatalf("kernel counts %d and %d, want 25 and 7", e, u)
	}
	w.daemon.Stop()
	connect(w.addrs[0], 5) // while no daemon runs: virtuald reads the file
	w.startDaemon("-bpf", "on")
	if e, u := counts(); e != 30 || u != 7 {
		t.Fatalf("after a restart: %d and %d, want 30 and 7", e, u)
	}
}

// With -bpf off the status says so and everything else works.
func TestBPFOff(t *testing.T) {
	w := newWorld(t, 3)
	w.startDaemon("-bpf", "off")
	w.startInetd()
	if failed, wrong, msgs := w.connect(30, nil); failed+wrong > 0 {
		t.Fatalf("%d failed, %d wrong: %s", failed, wrong, msgs)
	}
	waitLog(t, w, 30, "via=daemon")
	st, err := w.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.BPF != "off: disabled with -bpf off" {
		t.Errorf("bpf: %q", st.BPF)
	}
	if e := w.entry(st, w.addrs[0]); e == nil || e.State != admin.StateLive || e.Resolved != 10 || e.Connections != 0 {
		t.Errorf("entry: %+v", e)
	}
}

// A wedged daemon (SIGSTOP stands for a deadlock, a swap storm, a
// debugger) accepts connections and never answers. Before the fix every
// virtuald waited its whole 250 ms (now 150 ms) for it: twentyfold slower than with no
// daemon at all. Now the first virtuald that finds it slow marks it so
// (beside the socket per connection, in memory in accept mode), the
// others read the file at once, one connection at a time asks again after
// ipc.SlowHold, and once the daemon runs again it is used again.
// Per connection and in accept mode.
func TestDaemonWedged(t *testing.T) {
	for _, accept := range []bool{false, true} {
		t.Run(map[bool]string{false: "per connection", true: "accept mode"}[accept], func(t *testing.T) {
			testDaemonWedged(t, accept)
		})
	}
}

func testDaemonWedged(t *testing.T, accept bool) {
	w := newWorld(t, 20)
	w.accept = accept
	w.startDaemon()
	w.startInetd()
	if failed, wrong, msgs := w.connect(100, nil); failed+wrong > 0 {
		t.Fatalf("%d failed, %d wrong: %s", failed, wrong, msgs)
	}
	w.daemon.Process.Signal(unix.SIGSTOP)
	defer w.daemon.Process.Signal(unix.SIGCONT)
	time.Sleep(1100 * time.Millisecond) // accept mode's kept answers expire (answerTTL)
	start := time.Now()
	const total = 600
	if failed, wrong, msgs := w.connect(total, nil); failed+wrong > 0 {
		t.Fatalf("daemon wedged: %d failed, %d wrong: %s", failed, wrong, msgs)
	}
	elapsed := time.Since(start)
	waitLog(t, w, 100+total, "via=")
	waited := w.log.Count("daemon=slow ") // asked, and waited the whole time for nothing
	held := w.log.Count(`daemon="slow (`) // did not ask: the daemon was held to be slow
	// At most every connection of the first burst (16 at a time) waits,
	// then one probe per hold: a run of length elapsed meets at most
	// elapsed/SlowHold + 2 holds (one cut at each end). Per connection
	// the mark is one file; in accept mode inetd runs one virtuald per
	// listening socket (tcp and tcp6: the world has IPv6 addresses too),
	// each learning the daemon's health on its own, so each may have a
	// first burst and its probes.
	learners := 1
	if accept {
		learners = 2
	}
	limit := learners * (16 + int(elapsed/ipc.SlowHold) + 2)
	t.Logf("daemon wedged: %d connections in %v; %d waited for it, %d went to the file at once", total, elapsed.Round(time.Millisecond), waited, held)
	if waited > limit || held == 0 {
		t.Errorf("%d connections waited for the wedged daemon, %d did not ask it; want at most %d waits", waited, held, limit)
	}

	w.daemon.Process.Signal(unix.SIGCONT)
	resumed := time.Now()
	before := w.log.Count("via=daemon")
	for w.log.Count("via=daemon") == before {
		if time.Since(resumed) > 10*time.Second {
			t.Fatalf("the daemon was not asked again within 10 s of resuming; log ends:\n%s", w.log.Tail(4))
		}
		if failed, wrong, msgs := w.connect(16, nil); failed+wrong > 0 {
			t.Fatalf("after resuming: %d failed, %d wrong: %s", failed, wrong, msgs)
		}
	}
	t.Logf("the daemon answered again %v after it resumed", time.Since(resumed).Round(time.Millisecond))
}
