package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
// its user with no supplementary groups, no_new_privs, the caller's
// descriptors 0-2 and no other; it refuses what virtuald refuses, with
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
	// whoami reports its root, credentials, no_new_privs and descriptors;
	// it wants a socket on fd 0, as under inetd.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sock := os.NewFile(uintptr(pair[0]), "sock")
	defer sock.Close()
	defer unix.Close(pair[1])
	if code, out, errOut := ctlBinary(t, sock, "exec", "-conf", conf, "192.0.2.1", "whoami"); code != 0 || out != "root=good uid=65534 gid=65534 groups=[] nnp=1 listen=0 fds=0,1,2\n" {
		t.Errorf("exec whoami: exit %d, %q, %q", code, out, errOut)
	}
	// Without user= the command keeps root, as a service would, but
	// still cannot gain more through a set-id program.
	if code, out, errOut := ctlBinary(t, sock, "exec", "-conf", conf, "192.0.2.5", "whoami"); code != 0 || out != "root=good uid=0 gid=0 groups=[] nnp=1 listen=0 fds=0,1,2\n" {
		t.Errorf("exec whoami without user=: exit %d, %q, %q", code, out, errOut)
	}
	// The terminal is the caller's: what it reads is the caller's input.
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
