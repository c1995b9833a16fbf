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
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// The end-to-end tests run the real virtuald under real super-servers in a
// private network namespace, with a real test service in every root.

func built(t *testing.T) map[string]string { return testbed.Binaries(t) }

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	os.Exit(testbed.RunMain(m))
}

// expectation is what the test service must report for one address.
type expectation struct {
	addr string // the address connected to
	root string // ROOT-NAME of the root that must answer
	cred string // "uid=.. gid=.. groups=[] nnp=1", or "" for the inherited (root) credentials
}

// world is one namespace with its addresses, roots and conf files.
type world struct {
	ns      *testbed.NetNS
	roots   *testbed.Roots
	log     *testbed.Syslog
	bin     map[string]string
	conf    string        // the main conf
	serve   []expectation // addresses that must be served
	hostile map[string]string
}

const whoami = "/bin/whoami"

func newWorld(t *testing.T) *world {
	testbed.RequirePrivileges(t)
	w := &world{bin: built(t), hostile: map[string]string{}}
	w.ns = testbed.NewNetNS(t)
	w.roots = testbed.NewRoots(t)
	w.log = testbed.NewSyslog(t, t.TempDir())

	var lines []string
	add := func(addr, key, rootName, opts, cred string) {
		w.ns.AddAddr(addr)
		root := w.roots.Root(rootName, w.bin["whoami"])
		lines = append(lines, strings.TrimSpace(key+"\t"+root+"  "+opts))
		w.serve = append(w.serve, expectation{addr: addr, root: rootName, cred: cred})
	}
	for i := 1; i <= 14; i++ {
		a := fmt.Sprintf("192.0.2.%d", i)
		add(a, a, fmt.Sprintf("v4-%02d", i), "", "")
	}
	add("192.0.2.15", "192.0.2.15", "v4-15", "user=nobody", "uid=65534 gid=65534 groups=[] nnp=1")
	add("192.0.2.16", "192.0.2.16", "v4-16", "user=2001 group=2002", "uid=2001 gid=2002 groups=[] nnp=1")
	for i := 1; i <= 7; i++ {
		a := fmt.Sprintf("2001:db8::%d", i)
		add(a, a, fmt.Sprintf("v6-%d", i), "", "")
	}
	add("2001:db8::8", "2001:db8::8", "v6-8", "user=nobody group=nogroup", "uid=65534 gid=65534 groups=[] nnp=1")
	// A prefix, and an address served by default.
	add("198.51.100.7", "198.51.100.0/24", "pool", "", "")
	w.ns.AddAddr("203.0.113.9")
	w.serve = append(w.serve, expectation{addr: "203.0.113.9", root: "fallback"})
	lines = append(lines, "default "+w.roots.Root("fallback", w.bin["whoami"]))

	// Hostile roots, each on an address of its own: every connection to
	// them must be refused with zero bytes.
	for i, h := range w.roots.HostileRoots(w.bin["whoami"]) {
		a := fmt.Sprintf("192.0.2.%d", 101+i)
		w.ns.AddAddr(a)
		lines = append(lines, a+" "+h.Entry)
		w.hostile[a] = h.Why
	}

	w.conf = w.roots.WriteConf("conf", lines...)
	return w
}

// checkServed connects rounds times to every served address on port and
// checks each answer came from the address's own root with its credentials.
func (w *world) checkServed(t *testing.T, port int, rounds int, only func(string) bool) int {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var failures []string
	n := 0
	for r := 0; r < rounds; r++ {
		for _, e := range w.serve {
			if only != nil && !only(e.addr) {
				continue
			}
			n++
			wg.Add(1)
			sem <- struct{}{}
			go func(e expectation) {
				defer wg.Done()
				defer func() { <-sem }()
				got, err := w.ns.Ask(net.JoinHostPort(e.addr, strconv.Itoa(port)))
				if msg := judge(e, got, err); msg != "" {
					mu.Lock()
					failures = append(failures, msg)
					mu.Unlock()
				}
			}(e)
		}
	}
	wg.Wait()
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... and %d more", len(failures)-10)
			break
		}
		t.Error(f)
	}
	return n
}

func judge(e expectation, got string, err error) string {
	if err != nil {
		return fmt.Sprintf("%s: %v (got %q)", e.addr, err, got)
	}
	if !strings.HasPrefix(got, "root="+e.root+" ") {
		return fmt.Sprintf("%s: answered by the wrong root: %q, want root=%s", e.addr, got, e.root)
	}
	if e.cred != "" && !strings.Contains(got, e.cred) {
		return fmt.Sprintf("%s: wrong credentials: %q, want %s", e.addr, got, e.cred)
	}
	if e.cred == "" && !strings.Contains(got, "uid=0 gid=0") {
		return fmt.Sprintf("%s: credentials changed without user=: %q", e.addr, got)
	}
	if !strings.Contains(got, " listen=0 ") {
		return fmt.Sprintf("%s: systemd's LISTEN_* variables reached the service: %q", e.addr, got)
	}
	if !strings.HasSuffix(got, "fds=0,1,2\n") {
		return fmt.Sprintf("%s: the service inherited descriptors beyond 0-2: %q", e.addr, got)
	}
	return ""
}

// checkHostile checks that every hostile address is refused with zero
// bytes and that the log says why.
func (w *world) checkHostile(t *testing.T, port int) {
	t.Helper()
	for addr, why := range w.hostile {
		got, err := w.ns.Ask(net.JoinHostPort(addr, strconv.Itoa(port)))
		if err != nil || got != "" {
			t.Errorf("%s: want the connection closed with zero bytes, got %q, %v", addr, got, err)
		}
		if _, ok := w.log.WaitFor(5*time.Second, "local="+addr+":", "outcome=refused", why); !ok {
			t.Errorf("%s: no log line saying %q; log ends:\n%s", addr, why, w.log.Tail(10))
		}
	}
}

func TestInetd(t *testing.T) {
	w := newWorld(t)
	noDefault := w.roots.WriteConf("conf-no-default", "192.0.2.2 "+w.roots.Root("only", w.bin["whoami"]))
	inetdConf := w.roots.WriteConf("inetd.conf",
		"7000 stream tcp nowait root "+w.bin["virtuald"]+" virtuald "+w.conf+" "+whoami,
		"7000 stream tcp6 nowait root "+w.bin["virtuald"]+" virtuald "+w.conf+" "+whoami,
		"7000 dgram udp wait root "+w.bin["virtuald"]+" virtuald -allow-wildcard-dgram "+w.conf+" "+whoami,
		"7000 dgram udp6 wait root "+w.bin["virtuald"]+" virtuald -allow-wildcard-dgram "+w.conf+" "+whoami,
		"7001 stream tcp nowait root "+w.bin["virtuald"]+" virtuald "+noDefault+" "+whoami,
		"7004 dgram udp wait root "+w.bin["virtuald"]+" virtuald "+w.conf+" "+whoami,
		"192.0.2.3:7005 dgram udp wait root "+w.bin["virtuald"]+" virtuald "+w.conf+" "+whoami,
	)
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", inetdConf)
	w.ns.WaitListening("tcp", 7000)
	w.ns.WaitListening("udp", 7000)
	w.ns.WaitListening("tcp", 7001)
	w.ns.WaitListening("udp", 7004)
	w.ns.WaitListening("udp", 7005)

	t.Run("every address from its own root", func(t *testing.T) {
		n := w.checkServed(t, 7000, 10, nil)
		t.Logf("%d connections through inetd", n)
		line, ok := w.log.WaitFor(5*time.Second, "local=192.0.2.16:7000", "outcome=exec")
		if !ok || !strings.Contains(line, "user=2001(2001:2002)") || !strings.Contains(line, "rule=exact") || !strings.Contains(line, "via=file") {
			t.Errorf("log line for 192.0.2.16 lacks its fields: %q", line)
		}
		if line, ok := w.log.WaitFor(5*time.Second, "local=198.51.100.7:7000", "rule=prefix"); !ok || !strings.Contains(line, "virtuald[") {
			t.Errorf("no prefix log line with tag and pid: %q", line)
		}
	})
	t.Run("hostile roots refused", func(t *testing.T) { w.checkHostile(t, 7000) })
	t.Run("datagrams from their own root", func(t *testing.T) {
		for _, e := range w.serve {
			got, err := w.ns.AskUDP(net.JoinHostPort(e.addr, "7000"), 5*time.Second)
			if msg := judge(e, got, err); msg != "" {
				t.Error("udp " + msg)
			}
		}
	})
	t.Run("a wildcard datagram socket only when allowed", func(t *testing.T) {
		if _, ok := w.log.WaitFor(5*time.Second, ":7000 ", "dgram=wildcard", "outcome=exec"); !ok {
			t.Errorf("the allowed wildcard datagrams are not logged as such; log ends:\n%s", w.log.Tail(5))
		}
		// Without -allow-wildcard-dgram: refused (the service would get
		// every address's datagrams), consumed, and said why.
		for i := 0; i < 3; i++ {
			if got, err := w.ns.AskUDP("192.0.2.1:7004", 300*time.Millisecond); err == nil || got != "" {
				t.Errorf("wildcard datagram socket: answered %q, %v", got, err)
			}
		}
		if _, ok := w.log.WaitFor(5*time.Second, "local=192.0.2.1:7004", "outcome=refused", "bound to a wildcard address", "-allow-wildcard-dgram"); !ok {
			t.Errorf("no refusal saying why; log ends:\n%s", w.log.Tail(5))
		}
		// One line per address needs no flag.
		e := expectation{addr: "192.0.2.3", root: "v4-03"}
		got, err := w.ns.AskUDP("192.0.2.3:7005", 5*time.Second)
		if msg := judge(e, got, err); msg != "" {
			t.Error("udp on a per-address line: " + msg)
		}
	})
	t.Run("refused datagram is consumed", func(t *testing.T) {
		// Refused datagrams must not wedge the service: the next
		// datagram to a good address is still answered.
		for addr := range w.hostile {
			c, err := w.ns.Dial("udp", net.JoinHostPort(addr, "7000"))
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("x"))
			c.Close()
		}
		e := w.serve[0]
		got, err := w.ns.AskUDP(net.JoinHostPort(e.addr, "7000"), 10*time.Second)
		if msg := judge(e, got, err); msg != "" {
			t.Error("udp after refusals: " + msg)
		}
	})
	t.Run("no entry and no default", func(t *testing.T) {
		got, err := w.ns.Ask("192.0.2.1:7001")
		if err != nil || got != "" {
			t.Errorf("want refusal, got %q, %v", got, err)
		}
		if _, ok := w.log.WaitFor(5*time.Second, "local=192.0.2.1:7001", "no entry for 192.0.2.1 and no default"); !ok {
			t.Error("no log line for the unmapped address")
		}
		if got, err := w.ns.Ask("192.0.2.2:7001"); err != nil || !strings.HasPrefix(got, "root=only ") {
			t.Errorf("the one mapped address: %q, %v", got, err)
		}
	})
}

func TestSystemdSocketActivate(t *testing.T) {
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Fatalf("systemd-socket-activate is not installed (.ci/run installs it): %v", err)
	}
	w := newWorld(t)
	// [::]:7002 is dual-stack: IPv4 clients arrive as IPv4-mapped
	// addresses and must match the IPv4 entries.
	// systemd's Accept=yes also passes LISTEN_PID, LISTEN_FDS and
	// LISTEN_FDNAMES, which name virtuald's pid and the connection's fd;
	// systemd-socket-activate --inetd does not, so they are set here as
	// systemd would. They must not reach the service (judge checks).
	w.ns.Start(w.log, "systemd-socket-activate", "--inetd", "-a", "-l", "7002",
		"-E", "LISTEN_PID=1", "-E", "LISTEN_FDS=1", "-E", "LISTEN_FDNAMES=connection",
		w.bin["virtuald"], w.conf, whoami)
	w.ns.WaitListening("tcp", 7002)
	n := w.checkServed(t, 7002, 5, nil)
	t.Logf("%d connections through systemd-socket-activate", n)
	w.checkHostile(t, 7002)
}

func TestTCPServer(t *testing.T) {
	if _, err := exec.LookPath("tcpserver"); err != nil {
		t.Fatalf("tcpserver is not installed (.ci/run installs ucspi-tcp): %v", err)
	}
	w := newWorld(t)
	// Debian's tcpserver speaks IPv4 only; it hands the connection on
	// fds 0 and 1 and keeps its own stderr.
	w.ns.Start(w.log, "tcpserver", "-q", "-H", "-R", "-l", "test", "-c", "64", "0", "7003", w.bin["virtuald"], w.conf, whoami)
	w.ns.WaitListening("tcp", 7003)
	ipv4 := func(a string) bool { return !strings.Contains(a, ":") }
	n := w.checkServed(t, 7003, 5, ipv4)
	t.Logf("%d connections through tcpserver", n)
	w.checkHostile(t, 7003)
}

// TestHostileConfs gives inetd one service per broken conf file; every
// connection must be refused with zero bytes and a log line that says why.
func TestHostileConfs(t *testing.T) {
	w := newWorld(t)
	confs := w.roots.HostileConfs(w.roots.Root("good", w.bin["whoami"]))
	cases := []struct {
		name, conf, why string
	}{
		{"missing", confs["missing"], "cannot open: no such file or directory"},
		{"a directory", confs["directory"], "is not a regular file"},
		{"writable by others", confs["writable"], "is writable by group or others (mode 0666)"},
		{"owned by a user", confs["user-owned"], "is owned by uid 1000, not by root"},
		{"empty", confs["empty"], "no entry for 192.0.2.1 and no default"},
		{"binary", confs["binary"], "holds a NUL byte"},
		{"1 MiB line", confs["long-line"], "could not be read"},
		{"NUL bytes", confs["nul"], "holds a NUL byte"},
	}
	var lines []string
	for i, c := range cases {
		lines = append(lines, fmt.Sprintf("%d stream tcp nowait root %s virtuald %s %s", 7100+i, w.bin["virtuald"], c.conf, whoami))
	}
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf", lines...))
	for i := range cases {
		w.ns.WaitListening("tcp", 7100+i)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			port := strconv.Itoa(7100 + i)
			got, err := w.ns.Ask("192.0.2.1:" + port)
			if err != nil || got != "" {
				t.Errorf("want the connection closed with zero bytes, got %q, %v", got, err)
			}
			if _, ok := w.log.WaitFor(5*time.Second, "local=192.0.2.1:"+port, "outcome=refused", c.why); !ok {
				t.Errorf("no log line saying %q; log ends:\n%s", c.why, w.log.Tail(5))
			}
		})
	}
}

// TestExecFailures checks that a program that cannot run inside its root
// is explained in the log in words a person can act on.
func TestExecFailures(t *testing.T) {
	w := newWorld(t)
	dynamic, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	interp := "/lib64/ld-linux-x86-64.so.2"
	if _, err := os.Stat(interp); err != nil {
		t.Fatalf("this test copies the x86-64 dynamic loader into a root: %v", err)
	}
	copyInto := func(root, src, dst string, perm os.FileMode) {
		t.Helper()
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, dst)
		testbed.Must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
	}
	noInterp := w.roots.Root("no-interp", "")
	copyInto(noInterp, dynamic, "bin/prog", 0o755)
	noLibs := w.roots.Root("no-libs", "")
	copyInto(noLibs, dynamic, "bin/prog", 0o755)
	copyInto(noLibs, interp, interp, 0o755)
	notExec := w.roots.Root("not-exec", "")
	copyInto(notExec, dynamic, "bin/prog", 0o644)
	missing := w.roots.Root("missing-prog", "")
	conf := w.roots.WriteConf("conf-exec",
		"192.0.2.1 "+noInterp,
		"192.0.2.2 "+noLibs,
		"192.0.2.3 "+notExec,
		"192.0.2.4 "+missing,
	)
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		"7200 stream tcp nowait root "+w.bin["virtuald"]+" virtuald "+conf+" /bin/prog"))
	w.ns.WaitListening("tcp", 7200)
	cases := []struct{ addr, want string }{
		{"192.0.2.1", "/bin/prog exists but its ELF interpreter " + interp + " is missing inside the root"},
		{"192.0.2.2", "shared libraries missing inside the root: libc.so.6"},
		{"192.0.2.3", "/bin/prog is not executable (mode 0644)"},
		{"192.0.2.4", "/bin/prog does not exist inside the root"},
	}
	for _, c := range cases {
		w.ns.Ask(c.addr + ":7200")
		if line, ok := w.log.WaitFor(5*time.Second, "local="+c.addr+":7200", c.want); !ok {
			t.Errorf("%s: no log line saying %q; log ends:\n%s", c.addr, c.want, w.log.Tail(5))
		} else if t.Log(line); !strings.Contains(line, "root=") {
			t.Errorf("%s: the log line does not name the root: %q", c.addr, line)
		}
	}
}

// TestNotASocket runs virtuald by hand with fd 0 something other than an
// IP socket: it must exit 2, write nothing to fds 1 and 2 unless stderr is
// a terminal, and log why.
func TestNotASocket(t *testing.T) {
	w := newWorld(t)
	file, err := os.Open(w.conf)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	defer pw.Close()
	unixPair, err := unixSocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer unixPair.Close()
	cases := []struct {
		name  string
		stdin *os.File
		why   string
	}{
		{"pipe", pr, "fd 0 is a pipe, not a socket"},
		{"file", file, "fd 0 is a regular file, not a socket"},
		{"unix socket", unixPair, "fd 0 is a Unix socket, not an IP socket"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := w.ns.Command(w.log, w.bin["virtuald"], w.conf, whoami)
			var out strings.Builder
			cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, &out, &out
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit status %d (%v), want 2", code, err)
			}
			if out.Len() != 0 {
				t.Errorf("wrote to stdout or stderr: %q", out.String())
			}
			if _, ok := w.log.WaitFor(5*time.Second, "outcome=refused", c.why); !ok {
				t.Errorf("no log line saying %q; log ends:\n%s", c.why, w.log.Tail(5))
			}
		})
	}
	t.Run("terminal on stderr", func(t *testing.T) {
		master, slave := testbed.OpenPTY(t)
		cmd := exec.Command(w.bin["virtuald"], w.conf, whoami)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pr, nil, slave
		err := cmd.Run()
		slave.Close()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("exit status %d (%v), want 2", code, err)
		}
		master.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, _ := master.Read(buf)
		if !strings.Contains(string(buf[:n]), "fd 0 is a pipe, not a socket") {
			t.Errorf("the terminal got %q, want the reason", buf[:n])
		}
	})
}
