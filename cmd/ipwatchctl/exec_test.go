package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
	"golang.org/x/sys/unix"
)

// ctlBinary runs the built ipwatchctl: exec replaces the process, so it
// cannot run in the test's.
func ctlBinary(t *testing.T, stdin *os.File, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testbed.Binaries(t)["ipwatchctl"], args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if stdin != nil {
		cmd.Stdin = stdin
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// exec enters the virtual host of an address as virtuald would: its root,
// its user with no supplementary groups, no_new_privs, descriptors 0-2
// that exec relays and no other; it refuses what virtuald refuses, with
// the reason virtuald logs for a real connection, whether the daemon or
// the file answered.
func TestExec(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := testbed.Binaries(t)
	roots := testbed.NewRoots(t)
	good := roots.Root("good", bin["whoami"])
	if code, out, errOut := runCtl("install", "-user", "nobody", good, "/usr/bin/id", "/usr/bin/head"); code != 0 {
		t.Fatalf("install: %s%s", out, errOut)
	}
	ww := roots.Root("ww", bin["whoami"])
	testbed.Must(t, os.Chmod(ww, 0o777))
	conf := roots.WriteConf("conf",
		"192.0.2.1 "+good+" user=nobody",
		"192.0.2.2 "+ww+" user=nobody",
		"192.0.2.3 "+good+" user=no-such-user",
		"192.0.2.4 relative/root",
		"192.0.2.5 "+good,
	)

	if code, out, errOut := ctlBinary(t, nil, "exec", "-conf", conf, "192.0.2.1", "--", "/usr/bin/id"); code != 0 || !strings.HasPrefix(out, "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n") {
		t.Errorf("exec id: exit %d, %q, %q", code, out, errOut)
	}
	// whoami reports its root, credentials, no_new_privs and descriptors.
	if code, out, errOut := ctlBinary(t, nil, "exec", "-conf", conf, "192.0.2.1", "whoami"); code != 0 || out != "root=good uid=65534 gid=65534 groups=[] nnp=1 listen=0 fds=0,1,2\n" {
		t.Errorf("exec whoami: exit %d, %q, %q", code, out, errOut)
	}
	// Without user= the command keeps root, as a service would, but
	// still cannot gain more through a set-id program.
	if code, out, errOut := ctlBinary(t, nil, "exec", "-conf", conf, "192.0.2.5", "whoami"); code != 0 || out != "root=good uid=0 gid=0 groups=[] nnp=1 listen=0 fds=0,1,2\n" {
		t.Errorf("exec whoami without user=: exit %d, %q, %q", code, out, errOut)
	}
	// What the caller's input holds reaches the command through exec.
	r, w, _ := os.Pipe()
	w.WriteString("hello world\n")
	w.Close()
	if code, out, errOut := ctlBinary(t, r, "exec", "-conf", conf, "192.0.2.1", "--", "/usr/bin/head", "-c", "5"); code != 0 || out != "hello" {
		t.Errorf("exec head: exit %d, %q, %q", code, out, errOut)
	}
	r.Close()

	// Refusals: the reason virtuald logs for a real connection.
	ns := testbed.NewNetNS(t)
	log := testbed.NewSyslog(t, t.TempDir())
	for _, a := range []string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.9"} {
		ns.AddAddr(a)
	}
	ns.Start(log, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		"7000 stream tcp nowait root "+bin["virtuald"]+" virtuald "+conf+" /bin/whoami"))
	ns.WaitListening("tcp", 7000)
	for _, a := range []string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.9"} {
		if got, err := ns.Ask(a + ":7000"); got != "" || err != nil {
			t.Fatalf("%s: served %q, %v", a, got, err)
		}
		line, ok := log.WaitFor(5*time.Second, "local="+a+":7000", "outcome=refused")
		_, quoted, _ := strings.Cut(line, " reason=")
		reason, err := strconv.Unquote(quoted)
		if !ok || err != nil {
			t.Fatalf("%s: no refusal logged: %q", a, line)
		}
		code, out, errOut := ctlBinary(t, nil, "exec", "-conf", conf, a, "--", "/usr/bin/id")
		if want := "ipwatchctl: " + a + ": refused: " + reason + "\n"; code != 1 || out != "" || errOut != want {
			t.Errorf("exec %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", a, code, out, errOut, want)
		}
	}

	// The daemon answers, and names the file when -conf is not given.
	socket := filepath.Join(t.TempDir(), "ipwatchd.sock")
	ipwatchdtest.StartDaemon(t, socket, conf)
	if code, out, errOut := ctlBinary(t, nil, "-socket", socket, "exec", "192.0.2.1", "/usr/bin/id"); code != 0 || !strings.HasPrefix(out, "uid=65534(nobody) ") {
		t.Errorf("exec through the daemon: exit %d, %q, %q", code, out, errOut)
	}
	if code, _, errOut := ctlBinary(t, nil, "-socket", socket, "exec", "192.0.2.2", "/usr/bin/id"); code != 1 || !strings.Contains(errOut, ww+" is writable by group or others (mode 0777)") {
		t.Errorf("exec through the daemon, refused: exit %d, %q", code, errOut)
	}

	// Root only.
	cmd := exec.Command(bin["ipwatchctl"], "exec", "-conf", conf, "192.0.2.1", "/usr/bin/id")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "exec is for root") {
		t.Errorf("exec as nobody: %v, %q", err, out)
	}
}

// The command exec starts is the tenant's code (issue 20 item 1): from an
// operator's interactive terminal, it pushes a command into its terminal
// (TIOCSTI), leaves a process in a session of its own reading its fd 0,
// and reads its environment. The operator's terminal must receive nothing
// (the shell would run it once exec returns), what the operator types
// after exec returns must reach the shell alone, nothing of the tenant's
// may hold the operator's terminal, and the environment is exec's short
// list, not the operator's.
func TestExecTerminal(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := testbed.Binaries(t)
	roots := testbed.NewRoots(t)
	root := roots.IntruderRoot("tenant")
	conf := roots.WriteConf("conf", "192.0.2.1 "+root)
	// TIOCSTI works for a program on its own controlling terminal only
	// where the kernel allows it (dev.tty.legacy_tiocsti): allow it, so
	// that the attack is possible and only exec stands in its way.
	const legacy = "/proc/sys/dev/tty/legacy_tiocsti"
	if was, err := os.ReadFile(legacy); err == nil {
		testbed.Must(t, os.WriteFile(legacy, []byte("1"), 0o644))
		t.Cleanup(func() { os.WriteFile(legacy, was, 0o644) })
	}
	operatorEnv := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "SECRET_TOKEN=s3cret",
		"SSH_AUTH_SOCK=/tmp/agent.sock", "TERM=xterm-256color", "LANG=C.UTF-8", "LD_PRELOAD=/tmp/evil.so"}
	wantEnv := []string{"HOME=/root", "LANG=C.UTF-8", "LOGNAME=root", "PATH=" + execPath, "TERM=xterm-256color", "USER=root"}

	t.Run("terminal", func(t *testing.T) {
		master, shell := testbed.OpenPTY(t)
		cmd := exec.Command(bin["ipwatchctl"], "exec", "-conf", conf, "192.0.2.1", "/intruder", "terminal")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = shell, shell, shell
		cmd.Env = operatorEnv
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		testbed.Must(t, cmd.Start())
		out := readUntil(t, master, "end\r\n")
		if err := cmd.Wait(); err != nil {
			t.Fatalf("exec: %v\n%s", err, out)
		}
		report := intruderReport(t, out)
		if report["tiocsti"][0] != "ok" {
			t.Errorf("the command could not push input into its own terminal (%v): the test shows nothing", report["tiocsti"])
		}
		var st unix.Stat_t
		testbed.Must(t, unix.Fstat(int(shell.Fd()), &st))
		if got := report["stdin"][0]; strings.HasPrefix(got, "20000:"+strconv.FormatUint(st.Rdev, 10)+":") || !strings.HasPrefix(got, "20000:") {
			t.Errorf("the command's fd 0 is %s; want a terminal other than the operator's (rdev %d)", got, st.Rdev)
		}
		lingerer := lingering(t, report)
		holdsOperator(t, lingerer, st.Rdev, 0)
		// What the shell reads next is what the operator types, only.
		fd := int(shell.Fd()) // Fd makes the descriptor blocking: take it once
		testbed.Must(t, unix.SetNonblock(fd, true))
		if n, err := unix.Read(fd, make([]byte, 256)); n > 0 || err != unix.EAGAIN {
			t.Errorf("the operator's terminal holds input nobody typed (%d bytes, %v)", n, err)
		}
		master.Write([]byte("hunter2\n"))
		if got := readLine(t, fd); got != "hunter2\n" {
			t.Errorf("the shell read %q after exec returned, want what the operator typed", got)
		}
		if got := report["env"]; !slices.Equal(sorted(got), wantEnv) {
			t.Errorf("the command's environment is %q, want %q", got, wantEnv)
		}
	})

	t.Run("pipes", func(t *testing.T) {
		r, w, err := os.Pipe()
		testbed.Must(t, err)
		defer r.Close()
		defer w.Close()
		var st unix.Stat_t
		testbed.Must(t, unix.Fstat(int(r.Fd()), &st))
		cmd := exec.Command(bin["ipwatchctl"], "exec", "-conf", conf, "192.0.2.1", "/intruder", "terminal")
		// Its output goes to a file: a pipe would not end while a
		// process the command left holds it.
		outFile, err := os.Create(filepath.Join(t.TempDir(), "out"))
		testbed.Must(t, err)
		defer outFile.Close()
		cmd.Stdin, cmd.Stdout = r, outFile
		cmd.Env = operatorEnv
		err = cmd.Run()
		out, _ := os.ReadFile(outFile.Name())
		if err != nil {
			t.Fatalf("exec: %v\n%s", err, out)
		}
		report := intruderReport(t, string(out))
		if got := report["stdin"][0]; !strings.HasPrefix(got, "10000:") || strings.HasSuffix(got, ":"+strconv.FormatUint(st.Ino, 10)) {
			t.Errorf("the command's fd 0 is %s; want a pipe other than the operator's (inode %d)", got, st.Ino)
		}
		holdsOperator(t, lingering(t, report), 0, st.Ino)
		if got := report["env"]; !slices.Equal(sorted(got), wantEnv) {
			t.Errorf("the command's environment is %q, want %q", got, wantEnv)
		}
	})
}

// readUntil reads f until what it read ends with end, failing the test
// after 10 seconds.
func readUntil(t *testing.T, f *os.File, end string) string {
	t.Helper()
	var got []byte
	b := make([]byte, 4096)
	testbed.Must(t, f.SetReadDeadline(time.Now().Add(10*time.Second)))
	for !strings.HasSuffix(string(got), end) {
		n, err := f.Read(b)
		got = append(got, b[:n]...)
		if err != nil {
			t.Fatalf("reading until %q: %v; read %q", end, err, got)
		}
	}
	return string(got)
}

// readLine reads one line from the non-blocking descriptor fd, failing
// the test after 10 seconds.
func readLine(t *testing.T, fd int) string {
	t.Helper()
	var got []byte
	b := make([]byte, 256)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(string(got), "\n") {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no line in 10s; read %q", got)
		}
		unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if n, err := unix.Read(fd, b); n > 0 {
			got = append(got, b[:n]...)
		} else if err != unix.EAGAIN && err != unix.EINTR {
			t.Fatalf("reading a line: %v; read %q", err, got)
		}
	}
	return string(got)
}

// intruderReport parses the intruder's word=value lines.
func intruderReport(t *testing.T, out string) map[string][]string {
	t.Helper()
	r := map[string][]string{}
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			r[k] = append(r[k], v)
		}
	}
	for _, k := range []string{"tiocsti", "stdin", "linger"} {
		if len(r[k]) == 0 {
			t.Fatalf("the intruder did not report %s: %q", k, out)
		}
	}
	return r
}

// lingering returns the pid of the process the intruder left behind, and
// kills it at cleanup if it is still there.
func lingering(t *testing.T, report map[string][]string) int {
	t.Helper()
	pid, err := strconv.Atoi(report["linger"][0])
	if err != nil {
		t.Fatalf("the intruder left no process: %v", report["linger"])
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	return pid
}

// holdsOperator fails the test if process pid holds the operator's
// terminal (a character device rdev) or pipe (inode ino).
func holdsOperator(t *testing.T, pid int, rdev, ino uint64) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(dir)
	if err != nil {
		return // gone
	}
	for _, fd := range fds {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(dir, fd.Name()), &st) != nil {
			continue
		}
		if rdev != 0 && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == rdev || ino != 0 && st.Mode&unix.S_IFMT == unix.S_IFIFO && st.Ino == ino {
			t.Errorf("a process the command left (pid %d) still holds the operator's descriptor as fd %s", pid, fd.Name())
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// One way into a virtual host (package enter): a service started by
// virtuald per connection, by virtuald in accept mode, and a command
// started by ipwatchctl exec see the same world: credentials,
// no_new_privs, capabilities, pids, host name, root, descriptors.
func TestOneWayIn(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := testbed.Binaries(t)
	roots := testbed.NewRoots(t)
	root := roots.IntruderRoot("view")
	conf := roots.WriteConf("conf",
		"192.0.2.1 "+root+" hostname=view.example",
		"192.0.2.2 "+root+" user=nobody isolate=mount,pid",
		"192.0.2.3 "+root+" isolate=none",
		"192.0.2.4 "+root+" user=nobody isolate=none",
		"192.0.2.6 "+root+" isolate=all,user")
	ns := testbed.NewNetNS(t)
	log := testbed.NewSyslog(t, t.TempDir())
	addrs := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.6"}
	for _, a := range addrs {
		ns.AddAddr(a)
	}
	// A file whose service gives its entries -isolate none: exec learns
	// it from the daemon, which reads inetd.conf.
	ns.AddAddr("192.0.2.5")
	confNone := roots.WriteConf("conf-none", "192.0.2.5 "+root)
	inetdConf := roots.WriteConf("inetd.conf",
		"7000 stream tcp nowait root "+bin["virtuald"]+" virtuald "+conf+" /intruder view",
		"7001 stream tcp wait root "+bin["virtuald"]+" virtuald -accept "+conf+" /intruder view",
		"7002 stream tcp nowait root "+bin["virtuald"]+" virtuald -isolate none "+confNone+" /intruder view")
	ns.Start(log, "inetd", "-d", "-R", "1000000", inetdConf)
	ns.WaitListening("tcp", 7000)
	ns.WaitListening("tcp", 7001)
	ns.WaitListening("tcp", 7002)
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	ns.Start(log, bin["ipwatchd"], "-socket", sock, "-bpf", "off", "-inetd-conf", inetdConf, "-xinetd-conf", "", "-systemd-units", "")
	ns.Await("ipwatchd found the services of conf-none", 10*time.Second, func() bool {
		st, err := (admin.Client{Socket: sock}).Status(admin.StatusQuery{})
		if err != nil {
			return false
		}
		for _, c := range st.Confs {
			if c.Path == confNone && len(c.Services) == 1 && len(c.Entries) == 1 {
				return c.Entries[0].Isolate == "none"
			}
		}
		return false
	})
	perConn, err := ns.Ask("192.0.2.5:7002")
	testbed.Must(t, err)
	code, execd, errOut := ctlBinary(t, nil, "-socket", sock, "exec", "-conf", confNone, "192.0.2.5", "/intruder", "view")
	if code != 0 || perConn != execd || !strings.Contains(execd, "own-pid-namespace=false") {
		t.Errorf("a service started with -isolate none, and exec through the daemon, differ:\nper connection:\n%s\nexec (exit %d, %s):\n%s", perConn, code, errOut, execd)
	}
	for _, a := range addrs {
		perConn, err := ns.Ask(a + ":7000")
		testbed.Must(t, err)
		accept, err := ns.Ask(a + ":7001")
		testbed.Must(t, err)
		code, execd, errOut := ctlBinary(t, nil, "exec", "-conf", conf, a, "/intruder", "view")
		if code != 0 {
			t.Fatalf("%s: exec: %d %s", a, code, errOut)
		}
		if !strings.Contains(perConn, "root=view ") || perConn != accept || perConn != execd {
			t.Errorf("%s: the three ways in differ:\nper connection:\n%s\naccept mode:\n%s\nexec:\n%s", a, perConn, accept, execd)
		}
	}
}
