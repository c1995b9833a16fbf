package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Operators who are not root: with -socket-group, members of the group
// read status and resolve through the socket (mode 0660, root:GROUP);
// anyone else is told permission denied, never that the daemon is absent.
// A member cannot reload, nor make an entry's resolved count grow (its
// virtuald, run as the member, is answered but not counted). Run with real
// unprivileged uids (setpriv) against the real ipwatchd.
func TestSocketGroup(t *testing.T) {
	const group, member, outsider = "4242", "4243", "4244"
	w := newWorld(t, 2)
	// Others must reach the socket's directory, as /run/ipwatchd is.
	for d := filepath.Dir(filepath.Dir(w.socket)); d != "/" && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	w.startDaemon("-bpf", "off", "-socket-group", group)
	var st unix.Stat_t
	if err := unix.Stat(w.socket, &st); err != nil || st.Uid != 0 || st.Gid != 4242 || st.Mode&0o777 != 0o660 {
		t.Fatalf("socket: %v, uid %d gid %d mode %o, want root:4242 0660", err, st.Uid, st.Gid, st.Mode&0o777)
	}
	as := func(uid, gid string, name string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("setpriv", append([]string{"--reuid", uid, "--regid", gid, "--clear-groups", "--", name}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("setpriv %s: %v", name, err)
		}
		return out.String(), 0
	}
	ctl := w.bin["ipwatchctl"]

	if out, code := as(member, group, ctl, "-socket", w.socket, "status"); code != 0 || !strings.Contains(out, w.conf) {
		t.Errorf("status as a member of the socket's group: exit %d:\n%s", code, out)
	}
	if out, code := as(member, group, ctl, "-socket", w.socket, "resolve", w.addrs[0]); code != 0 || !strings.Contains(out, "served from") || !strings.Contains(out, "answered by ipwatchd") {
		t.Errorf("resolve as a member: exit %d:\n%s", code, out)
	}
	if out, code := as(member, group, ctl, "-socket", w.socket, "reload"); code != 1 || !strings.Contains(out, "reload is for root only") {
		t.Errorf("reload as a member: exit %d:\n%s", code, out)
	}
	out, code := as(outsider, outsider, ctl, "-socket", w.socket, "status")
	if code != 1 || strings.Contains(out, "not running") || !strings.Contains(out, "permission denied connecting to ipwatchd at "+w.socket+": only root and the members of group 4242 may ask") {
		t.Errorf("status as a user outside the group: exit %d:\n%s", code, out)
	}

	// A member's own virtuald, with a real connection on fd 0: the daemon
	// answers it (the file is as it is on disk) but does not count it,
	// and virtuald cannot enter a root without root anyway.
	var conn *os.File
	err := w.ns.Do(func() error {
		ln, err := net.Listen("tcp", net.JoinHostPort(w.addrs[0], "7999"))
		if err != nil {
			return err
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			return err
		}
		defer s.Close()
		conn, err = s.(*net.TCPConn).File()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// In the namespace's command, whose /dev/log is the test's syslog.
	cmd := w.ns.Command(w.log, "setpriv", "--reuid", member, "--regid", group, "--clear-groups", "--", w.bin["virtuald"], "-socket", w.socket, w.conf, "/bin/whoami")
	cmd.Stdin = conn
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("virtuald as a member served: %s", out)
	}
	if _, ok := w.log.WaitFor(5*time.Second, "local="+w.addrs[0]+":7999", "via=daemon"); !ok {
		t.Fatalf("the member's virtuald was not answered by the daemon; log ends:\n%s", w.log.Tail(5))
	}
	s, err := w.status()
	if err != nil {
		t.Fatal(err)
	}
	if e := w.entry(s, w.addrs[0]); e == nil || e.Resolved != 0 {
		t.Errorf("a member's question counted as virtuald's: %+v", e)
	}
}
