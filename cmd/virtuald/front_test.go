package main

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/daemon"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/superserver"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
	"golang.org/x/sys/unix"
)

// The tests here are about virtuald's front (internal/enter/init/front.c).
// frontOnly installs the front with a stand-in for the Go program beside
// it, which only notes that it was executed (its VIRTUALD_FRONT and its
// arguments, in the file handovers) and exits 1: a connection served
// through it was served by the front alone, and one it handed over is
// refused with zero bytes.
func frontOnly(t *testing.T) (front, handovers string) {
	t.Helper()
	if !testbed.FrontInUse() {
		t.Skip("no front on " + runtime.GOARCH + " or " + testbed.FrontEnv + "=off")
	}
	b, err := os.ReadFile(built(t)["virtuald-front"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	testbed.Must(t, os.Chmod(dir, 0o755))
	front, handovers = filepath.Join(dir, "virtuald"), filepath.Join(dir, "handovers")
	testbed.Must(t, os.WriteFile(front, b, 0o755))
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "virtuald-go"),
		[]byte("#!/bin/sh\necho \"front=$VIRTUALD_FRONT $*\" >>"+handovers+"\nexit 1\n"), 0o755))
	return front, handovers
}

// handedOver returns the lines of the stand-in's file.
func handedOver(t *testing.T, handovers string) string {
	b, err := os.ReadFile(handovers)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// frontWorld is newWorld with ipwatchd up (in this process, as root) on
// its conf, and inetd running virtuald three ways: the front alone (7600,
// and 7601 with -isolate none), and the Go program alone (7602, 7603 with
// -isolate none).
func frontWorld(t *testing.T) (w *world, handovers string) {
	w = newWorld(t)
	only, handovers := frontOnly(t)
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	goProgram := w.bin["virtuald-go"]
	inetdConf := w.roots.WriteConf("inetd.conf",
		"7600 stream tcp nowait root "+only+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7600 stream tcp6 nowait root "+only+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7601 stream tcp nowait root "+only+" virtuald -socket "+sock+" -isolate none "+w.conf+" "+whoami,
		"7602 stream tcp nowait root "+goProgram+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7602 stream tcp6 nowait root "+goProgram+" virtuald -socket "+sock+" "+w.conf+" "+whoami,
		"7603 stream tcp nowait root "+goProgram+" virtuald -socket "+sock+" -isolate none "+w.conf+" "+whoami,
	)
	startDaemonFor(t, sock, w.conf, inetdConf)
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", inetdConf)
	for _, p := range []int{7600, 7601, 7602, 7603} {
		w.ns.WaitListening("tcp", p)
	}
	return w, handovers
}

// startDaemonFor runs ipwatchd in this process on conf, reading
// inetdConf as it reads /etc/inetd.conf, and returns once its validator
// found the program of inetdConf's lines ready in 192.0.2.1's root: with
// -isolate none the front serves only a program the daemon found ready
// (the library warning, or its check, is the Go program's).
func startDaemonFor(t *testing.T, sock, conf, inetdConf string) {
	ipwatchdtest.StartDaemonWith(t, daemon.Config{Socket: sock, Confs: []string{conf}, Services: &superserver.Sources{InetdConf: inetdConf}})
	var st unix.Stat_t
	testbed.Must(t, unix.Stat(conf, &st))
	r := ipc.ResolveRequest{Conf: conf, Addr: netip.MustParseAddr("192.0.2.1"), ID: ipc.FileIDOf(&st), Lookup: true, Program: whoami}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a, err := (ipc.Client{Socket: sock, Timeout: time.Second}).Resolve(r)
		if err == nil && a.Program.State == ipc.ProgramReady {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipwatchd did not find %s ready within 20s: %+v, %v", whoami, a, err)
		}
	}
}

// The front serves, by itself, every entry it knows (an address, a
// prefix, default, IPv6, numeric user= and group=), isolated and with
// -isolate none, each from its own root; what it does not (a user by
// name) it hands over, and with no Go program beside it, that connection
// is refused with zero bytes: never served by the front from a root it
// did not check. The hostile roots are refused.
func TestFrontServes(t *testing.T) {
	w, handovers := frontWorld(t)
	for _, port := range []string{"7600", "7601"} {
		for _, e := range w.serve {
			if port == "7601" && strings.Contains(e.addr, ":") {
				continue
			}
			got, err := w.ns.Ask(net.JoinHostPort(e.addr, port))
			if e.cred != "" && !strings.Contains(e.cred, "2001") {
				// user=nobody: a name, the Go program's to look up.
				if err != nil || got != "" {
					t.Errorf("%s:%s (a user by name): the front alone answered %q, %v; want it handed over", e.addr, port, got, err)
				}
				continue
			}
			if msg := judge(e, got, err); msg != "" {
				t.Errorf("port %s: %s", port, msg)
			}
		}
		w.checkHostileRefused(t, port)
	}
	// Handed over after the daemon answered: the users by name
	// (192.0.2.15 on both ports, 2001:db8::8 on 7600) and the hostile
	// roots (which the daemon refuses) on both ports.
	if got, want := strings.Count(handedOver(t, handovers), "front=answered "), 3+2*len(w.hostile); got != want {
		t.Errorf("%d connections handed over after the daemon answered, want %d:\n%s", got, want, handedOver(t, handovers))
	}
}

// The front's log line is the Go program's, field for field, for the same
// connection (but the ports and the pid).
func TestFrontLogLine(t *testing.T) {
	w, _ := frontWorld(t)
	for _, c := range []struct{ addr, front, goPort string }{
		{"192.0.2.1", "7600", "7602"},
		{"192.0.2.16", "7600", "7602"}, // user=2001 group=2002
		{"198.51.100.7", "7600", "7602"},
		{"203.0.113.9", "7600", "7602"},
		{"2001:db8::3", "7600", "7602"},
		{"192.0.2.16", "7601", "7603"},
		{"198.51.100.7", "7601", "7603"},
	} {
		lines := execLines(t, w, c.addr, c.front, c.goPort)
		if lines[0] != lines[1] {
			t.Errorf("%s: the front logs\n\t%s\nthe Go program\n\t%s", c.addr, lines[0], lines[1])
		}
		if !strings.Contains(lines[0], "via=daemon") {
			t.Errorf("%s: not the daemon's answer: %s", c.addr, lines[0])
		}
	}
}

// execLines connects to addr on each port in turn and returns the log
// line of each connection's exec, with the ports and the pid taken out,
// so that the lines of two ways to serve it compare.
func execLines(t *testing.T, w *world, addr string, ports ...string) []string {
	t.Helper()
	portRE := regexp.MustCompile(`(local|remote)=(\[[0-9a-f:]+\]|[0-9.]+):[0-9]+`)
	pid := regexp.MustCompile(`virtuald\[[0-9]+\]`)
	var lines []string
	for _, port := range ports {
		n := w.log.Len()
		if _, err := w.ns.Ask(net.JoinHostPort(addr, port)); err != nil {
			t.Fatalf("%s:%s: %v", addr, port, err)
		}
		line, ok := w.log.WaitAfter(n, 5*time.Second, ":"+port+" ", "outcome=exec")
		if !ok {
			t.Fatalf("%s:%s: no log line; log ends:\n%s", addr, port, w.log.Tail(5))
		}
		line = portRE.ReplaceAllString(strings.ReplaceAll(line, ":"+port+" ", ":PORT "), "$1=$2:P")
		lines = append(lines, pid.ReplaceAllString(line, "virtuald[PID]"))
	}
	return lines
}

// checkHostileRefused checks that every hostile root's address gets zero
// bytes on port.
func (w *world) checkHostileRefused(t *testing.T, port string) {
	t.Helper()
	for addr := range w.hostile {
		if got, err := w.ns.Ask(net.JoinHostPort(addr, port)); err != nil || got != "" {
			t.Errorf("%s:%s: want zero bytes, got %q, %v", addr, port, got, err)
		}
	}
}

// A daemon answer the front does not believe, or does not serve, makes
// it hand over (here to the stand-in, so the connection is refused), and
// the full virtuald (front and Go program) then serves the address from
// its own root, reading the file, or refuses it: never another root.
// Untrusted: a listener whose owner is not root. The roots named in the
// answers that look right are a symbolic link and a group-writable
// directory, which the front's own walk refuses (and the Go program's).
// A limit, a user by name and a user namespace are answers the Go
// program believes.
func TestFrontHostileDaemon(t *testing.T) {
	w := newWorld(t)
	only, handovers := frontOnly(t)
	fake := newFakeDaemon(t)
	other := w.roots.Dir + "/v4-09" // another tenant's valid root
	untrusted := untrustedDaemon(t, okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "", "", "ready", "")))
	link := w.roots.Dir + "/symlink"
	writable := w.roots.Dir + "/group-writable"
	answers := map[string][]byte{
		"another address's entry": okFrame(fieldsOf("1", "exact", "9", "192.0.2.9", other, "", "", "ready", "")),
		"a prefix not holding it": okFrame(fieldsOf("1", "prefix", "9", "192.0.3.0/24", other, "", "", "ready", "")),
		"a prefix not canonical":  okFrame(fieldsOf("1", "prefix", "9", "192.0.2.1/24", other, "", "", "ready", "")),
		"a root with a symlink":   okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", link, "", "", "ready", "")),
		"a group-writable root":   okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", writable, "", "", "ready", "")),
		"a root not clean":        okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other+"/../v4-01", "", "", "ready", "")),
		"a NUL in the root":       okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other+"\x00/x", "", "", "ready", "")),
		"a limit":                 okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "max=3", "", "ready", "")),
		"an unknown option":       okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "chroot=no", "", "ready", "")),
		"a host name's bad label": okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "hostname=a..b", "", "ready", "")),
		"options out of order":    okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "group=2 user=1", "", "ready", "")),
		"a user by name":          okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "user=nobody group=1", "", "ready", "")),
		"user=all ones":           okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "user=4294967295 group=1", "", "ready", "")),
		"isolate=user":            okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "isolate=all,user", "", "ready", "")),
		"an IPv6 key":             okFrame(fieldsOf("1", "exact", "1", "::ffff:192.0.2.1", other, "", "", "ready", "")),
		"line 0":                  okFrame(fieldsOf("1", "exact", "0", "192.0.2.1", other, "", "", "ready", "")),
		"eleven fields":           okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "", "", "ready", "", "x")),
		"bytes after the frame":   append(okFrame(fieldsOf("1", "exact", "1", "192.0.2.1", other, "", "", "ready", "")), 'x'),
		"oversized":               {0x00, 0x01, 0x00, 0x01, 'o', 'k'},
		"huge":                    {0x7f, 0xff, 0xff, 0xff, 'o', 'k'},
		"empty frame":             {0, 0, 0, 0},
		"nothing":                 {},
		"an error":                frame("error", "no"),
	}
	fake.reply.Store(&[]byte{})
	full := w.bin["virtuald"]
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		"7610 stream tcp nowait root "+only+" virtuald -socket "+fake.path+" "+w.conf+" "+whoami,
		"7611 stream tcp nowait root "+full+" virtuald -socket "+fake.path+" "+w.conf+" "+whoami,
		"7612 stream tcp nowait root "+only+" virtuald -socket "+untrusted+" "+w.conf+" "+whoami,
		"7613 stream tcp nowait root "+full+" virtuald -socket "+untrusted+" "+w.conf+" "+whoami,
	))
	for _, p := range []int{7610, 7611, 7612, 7613} {
		w.ns.WaitListening("tcp", p)
	}
	e := expectation{addr: "192.0.2.1", root: "v4-01"}
	check := func(name, onlyPort, fullPort string) {
		n := strings.Count(handedOver(t, handovers), "\n")
		if got, err := w.ns.Ask("192.0.2.1:" + onlyPort); err != nil || got != "" {
			t.Errorf("%s: the front alone answered %q, %v; want it handed over", name, got, err)
		}
		if strings.Count(handedOver(t, handovers), "\n") != n+1 {
			t.Errorf("%s: not handed over:\n%s", name, handedOver(t, handovers))
		}
		got, err := w.ns.Ask("192.0.2.1:" + fullPort)
		switch {
		case name == "a limit" || name == "a user by name" || name == "isolate=user":
			if err != nil || !strings.HasPrefix(got, "root=v4-09 ") {
				t.Errorf("%s: the Go program did not believe the daemon: %q, %v", name, got, err)
			}
		case strings.HasPrefix(name, "a root with") || strings.HasPrefix(name, "a group-"):
			if err != nil || got != "" {
				t.Errorf("%s: want the connection refused, got %q, %v", name, got, err)
			}
		default:
			if msg := judge(e, got, err); msg != "" {
				t.Errorf("%s: %s", name, msg)
			}
		}
	}
	for name, reply := range answers {
		fake.reply.Store(&reply)
		check(name, "7610", "7611")
	}
	check("an untrusted daemon", "7612", "7613")
	if _, ok := w.log.WaitFor(5*time.Second, "local=192.0.2.1:7613", "daemon not trusted", "via=file", "outcome=exec"); !ok {
		t.Errorf("the Go program did not say why it read the file; log ends:\n%s", w.log.Tail(5))
	}
}

// untrustedDaemon is a listener owned by nobody (uid 65534) that answers
// every question with reply: SO_PEERCRED says it is not root, so it is
// never believed.
func untrustedDaemon(t *testing.T, reply []byte) string {
	dir, err := os.MkdirTemp("", "virtuald-untrusted-")
	testbed.Must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	testbed.Must(t, os.Chmod(dir, 0o777))
	path := filepath.Join(dir, "untrusted.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The listener's credentials are its creator's at listen(2): this
	// thread's, as nobody for the two calls (a thread's own ids).
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // ended with the goroutine: its ids were changed
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 65534, 65534, 0); e != 0 {
			errc <- e
			return
		}
		err := unix.Bind(fd, &unix.SockaddrUnix{Name: path})
		if err == nil {
			err = unix.Listen(fd, 16)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(os.NewFile(uintptr(fd), path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 8192)
			c.Read(b)
			c.Write(reply)
			c.Close()
		}
	}()
	return path
}
