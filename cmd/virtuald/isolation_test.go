package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// A service that runs as root in its root, taken over by a client, tries
// everything a hostile tenant would (testbed/intruder's escape), through
// a real inetd, per connection and in accept mode. With isolate=none (the
// seed's chroot) the attacks succeed: the test sees them work, so it can
// see them fail. With the default isolation every one fails, and the
// host's name, the other tenant's file and the host's processes are
// untouched. inetd runs in a UTS namespace of its own, which stands for
// the host's: a rename that works renames only that. tcpserver,
// systemd-socket-activate and xinetd start virtuald the same way, isolated. With
// isolate=all,user, root inside is an unprivileged uid outside: a host
// daemon that trusts root by its peer's uid sees the root's range, and a
// file of a uid outside the range is closed to it, while the root's own
// files keep their owners on disk and inside.
func TestIsolationAttacks(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := built(t)
	ns := testbed.NewNetNS(t)
	roots := testbed.NewRoots(t)
	log := testbed.NewSyslog(t, t.TempDir())
	tenant := roots.IntruderRoot("tenant")
	other := roots.Root("other", "")
	secret := filepath.Join(other, "SECRET")
	testbed.Must(t, os.WriteFile(secret, []byte("the other tenant's data\n"), 0o600))
	handle := handleOf(t, other)
	for name, owner := range map[string]int{"UNMAPPED": 100000, "OWNED": 1234} {
		f := filepath.Join(tenant, name)
		testbed.Must(t, os.WriteFile(f, []byte(name+"\n"), 0o600))
		testbed.Must(t, os.Chown(f, owner, owner+1))
	}
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"} {
		ns.AddAddr(a)
	}
	hostTrustsRoot(t, ns)
	confPath := roots.WriteConf("conf",
		"192.0.2.1 "+tenant+" isolate=none",
		"192.0.2.2 "+tenant,
		"192.0.2.3 "+tenant+" hostname=tenant.example",
		"192.0.2.4 "+tenant+" isolate=all,user")
	argv := "/intruder escape " + secret + " " + handle + " SECRET"
	inetd := ns.Start(log, "unshare", "--uts", "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		"7000 stream tcp nowait root "+bin["virtuald"]+" virtuald "+confPath+" "+argv,
		"7001 stream tcp wait root "+bin["virtuald"]+" virtuald -accept "+confPath+" "+argv,
		"7004 stream tcp nowait root "+bin["virtuald"]+" virtuald "+confPath+" /intruder orphan",
		"7005 stream tcp wait root "+bin["virtuald"]+" virtuald -accept "+confPath+" /intruder orphan"))
	for _, port := range []int{7000, 7001, 7004, 7005} {
		ns.WaitListening("tcp", port)
	}
	hostname := func() string {
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(inetd.Process.Pid), "-u", "hostname").Output()
		if err != nil {
			t.Fatalf("the host name inetd sees: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	host := hostname()

	for _, port := range []string{"7000", "7001"} {
		mode := map[string]string{"7000": "per connection", "7001": "accept mode"}[port]
		t.Run(mode+", isolate=none", func(t *testing.T) {
			r := attack(t, ns, "192.0.2.1:"+port)
			for _, a := range []string{"sethostname", "kill", "mknod"} {
				if r[a] != "ok" {
					t.Errorf("%s: %s, want it to work under the seed's chroot (or the test shows nothing)", a, r[a])
				}
			}
			for _, a := range []string{"shocker", "chroot"} {
				if r[a] != "read:the other tenant's data" {
					t.Errorf("%s: %s, want it to read the other tenant's file under the seed's chroot", a, r[a])
				}
			}
			if r["host-sees"] != "uid:0" || r["unmapped"] != "read:UNMAPPED" || r["owned"] != "1234:1235" {
				t.Errorf("host-sees=%s unmapped=%s owned=%s: want root's powers without a user namespace", r["host-sees"], r["unmapped"], r["owned"])
			}
			if got := hostname(); got != "intruded" {
				t.Errorf("the host's name is %q after sethostname worked", got)
			}
			exec.Command("nsenter", "-t", strconv.Itoa(inetd.Process.Pid), "-u", "hostname", host).Run()
		})
		t.Run(mode+", isolated", func(t *testing.T) {
			r := attack(t, ns, "192.0.2.2:"+port)
			if r["hostname"] != host {
				t.Errorf("hostname: the service sees %q, want the host's %q without hostname=", r["hostname"], host)
			}
			for _, a := range []string{"sethostname", "kill", "mknod", "ptrace", "shocker", "chroot"} {
				if !strings.HasPrefix(r[a], "refused:") {
					t.Errorf("%s: %s, want it refused", a, r[a])
				}
			}
			if got := hostname(); got != host {
				t.Errorf("the host's name is %q, want %q", got, host)
			}
			if line, ok := log.WaitFor(5*time.Second, "local=192.0.2.2:"+port, "isolate=all"); !ok {
				t.Errorf("no log line saying isolate=all: %q", line)
			}
			r = attack(t, ns, "192.0.2.3:"+port)
			if r["hostname"] != "tenant.example" {
				t.Errorf("hostname=tenant.example: the service sees %q", r["hostname"])
			}
			// The namespace's pid 1 reaps the service's orphans.
			orphanPort := map[string]string{"7000": "7004", "7001": "7005"}[port]
			if out, err := ns.Ask("192.0.2.2:" + orphanPort); err != nil || out != "orphan=reaped\n" {
				t.Errorf("an orphan of the service: %q, %v, want reaped", out, err)
			}
		})
		t.Run(mode+", isolate=all,user", func(t *testing.T) {
			made := filepath.Join(tenant, "made")
			os.Remove(made)
			t.Cleanup(func() {
				if t.Failed() {
					t.Log(log.Tail(10))
				}
			})
			r := attack(t, ns, "192.0.2.4:"+port)
			for _, a := range []string{"sethostname", "kill", "mknod", "ptrace", "shocker", "chroot", "unmapped"} {
				if !strings.HasPrefix(r[a], "refused:") {
					t.Errorf("%s: %s, want it refused", a, r[a])
				}
			}
			if want := "uid:" + strconv.Itoa(int(conf.UserBase(tenant))); r["host-sees"] != want {
				t.Errorf("a host daemon sees root inside as %s, want %s", r["host-sees"], want)
			}
			if r["owned"] != "1234:1235" || r["made"] != "ok" {
				t.Errorf("owned=%s made=%s: want the root's files owned inside as on disk, and root's writes working", r["owned"], r["made"])
			}
			var st unix.Stat_t
			if err := unix.Stat(made, &st); err != nil || st.Uid != 0 || st.Gid != 0 {
				t.Errorf("the file root made inside is owned by %d:%d on disk (%v), want 0:0", st.Uid, st.Gid, err)
			}
			if got := hostname(); got != host {
				t.Errorf("the host's name is %q, want %q", got, host)
			}
		})
	}
	// The other super-servers start virtuald per connection the same way:
	// the attacks fail under each (each in a UTS namespace of its own too,
	// so that a rename that worked would rename only that).
	xinetd := testbed.RequireTool(t, "xinetd")
	xconf := roots.WriteConf("xinetd.conf", "service attack\n{\n\ttype = UNLISTED\n\tsocket_type = stream\n\tprotocol = tcp\n\tport = 7006\n"+
		"\twait = no\n\tuser = root\n\tserver = "+bin["virtuald"]+"\n\tserver_args = "+confPath+" "+argv+"\n}")
	for _, ss := range []struct {
		name    string
		port    string
		argv    []string
		virtual bool // virtuald's argv follows
	}{
		{"tcpserver", "7002", []string{"tcpserver", "-q", "-H", "-R", "0", "7002"}, true},
		{"systemd-socket-activate", "7003", []string{"systemd-socket-activate", "--inetd", "-a", "-l", "7003"}, true},
		{"xinetd", "7006", []string{xinetd, "-dontfork", "-pidfile", filepath.Join(t.TempDir(), "xinetd.pid"), "-f", xconf}, false},
	} {
		t.Run(ss.name+", isolated", func(t *testing.T) {
			args := append([]string{"--uts"}, ss.argv...)
			if ss.virtual {
				args = append(append(args, bin["virtuald"], confPath), strings.Fields(argv)...)
			}
			ns.Start(log, "unshare", args...)
			port, _ := strconv.Atoi(ss.port)
			ns.WaitListening("tcp", port)
			r := attack(t, ns, "192.0.2.2:"+ss.port)
			for _, a := range []string{"sethostname", "kill", "mknod", "ptrace", "shocker", "chroot"} {
				if !strings.HasPrefix(r[a], "refused:") {
					t.Errorf("%s: %s, want it refused", a, r[a])
				}
			}
		})
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "the other tenant's data\n" {
		t.Errorf("the other tenant's file: %q, %v", b, err)
	}
}

// hostTrustsRoot stands for a host daemon that trusts its peers by uid:
// on the abstract socket @virtuald-host-trusts-root of ns (reachable from
// every mount namespace in it) it answers each peer with the uid it sees.
func hostTrustsRoot(t *testing.T, ns *testbed.NetNS) {
	var l net.Listener
	testbed.Must(t, ns.Do(func() (err error) {
		l, err = net.Listen("unix", "@virtuald-host-trusts-root")
		return err
	}))
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			raw, _ := c.(*net.UnixConn).SyscallConn()
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					fmt.Fprintf(c, "uid:%d\n", cred.Uid)
				}
			})
			c.Close()
		}
	}()
}

// attack connects to addr and parses what the intruder reports.
func attack(t *testing.T, ns *testbed.NetNS, addr string) map[string]string {
	t.Helper()
	out, err := ns.Ask(addr)
	if err != nil || !strings.Contains(out, "chroot=") {
		t.Fatalf("%s: %q, %v", addr, out, err)
	}
	r := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			r[k] = v
		}
	}
	return r
}

// handleOf gives dir's file handle as the intruder takes it (TYPE:HEX).
func handleOf(t *testing.T, dir string) string {
	t.Helper()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err != nil {
		t.Fatalf("name_to_handle_at %s: %v", dir, err)
	}
	return strconv.Itoa(int(h.Type())) + ":" + hex.EncodeToString(h.Bytes())
}

// Per connection, virtuald-init takes virtuald's place and stays as the
// isolated service's parent: a signal the super-server sends it reaches
// the service, it exits with the service's status, and when it is killed
// the service and its whole pid namespace end with it. virtuald is
// started here as a super-server starts it, with the connection on fds
// 0-2, so that the test holds its pid.
func TestIsolatedParent(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := built(t)
	ns := testbed.NewNetNS(t)
	ns.AddAddr("192.0.2.1")
	roots := testbed.NewRoots(t)
	confPath := roots.WriteConf("conf", "192.0.2.1 "+roots.IntruderRoot("tenant"))
	var ln *net.TCPListener
	testbed.Must(t, ns.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP("192.0.2.1")})
		return err
	}))
	defer ln.Close()
	serve := func() (*exec.Cmd, net.Conn, *bufio.Reader) {
		client, err := ns.Dial("tcp", ln.Addr().String())
		testbed.Must(t, err)
		t.Cleanup(func() { client.Close() })
		conn, err := ln.AcceptTCP()
		testbed.Must(t, err)
		f, err := conn.File()
		testbed.Must(t, err)
		conn.Close()
		defer f.Close()
		cmd := exec.Command(bin["virtuald"], "-socket", filepath.Join(t.TempDir(), "absent.sock"), confPath, "/intruder", "signal")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
		testbed.Must(t, cmd.Start())
		client.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(client)
		if line, err := r.ReadString('\n'); line != "ready\n" {
			t.Fatalf("the service did not start: %q %v", line, err)
		}
		return cmd, client, r
	}

	cmd, _, r := serve()
	testbed.Must(t, cmd.Process.Signal(unix.SIGTERM))
	if line, err := r.ReadString('\n'); line != "got SIGTERM\n" {
		t.Errorf("SIGTERM to virtuald's process did not reach the service: %q %v", line, err)
	}
	if err := cmd.Wait(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 3 {
		t.Errorf("virtuald's process ended with %v, want the service's status 3", err)
	}

	cmd, _, r = serve()
	testbed.Must(t, cmd.Process.Kill())
	cmd.Wait()
	if rest, err := r.ReadString('\n'); err == nil || rest != "" {
		t.Errorf("after SIGKILL to virtuald's process the service still held the connection: %q %v", rest, err)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("after SIGKILL to virtuald's process the service lives on: the connection stayed open")
	}
}
