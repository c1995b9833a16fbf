package main

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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
// the host's: a rename that works renames only that. tcpserver and
// systemd-socket-activate start virtuald the same way, isolated.
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
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		ns.AddAddr(a)
	}
	conf := roots.WriteConf("conf",
		"192.0.2.1 "+tenant+" isolate=none",
		"192.0.2.2 "+tenant,
		"192.0.2.3 "+tenant+" hostname=tenant.example")
	argv := "/intruder escape " + secret + " " + handle + " SECRET"
	inetd := ns.Start(log, "unshare", "--uts", "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		"7000 stream tcp nowait root "+bin["virtuald"]+" virtuald "+conf+" "+argv,
		"7001 stream tcp wait root "+bin["virtuald"]+" virtuald -accept "+conf+" "+argv,
		"7004 stream tcp nowait root "+bin["virtuald"]+" virtuald "+conf+" /intruder orphan",
		"7005 stream tcp wait root "+bin["virtuald"]+" virtuald -accept "+conf+" /intruder orphan"))
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
	}
	// The other super-servers start virtuald per connection the same way:
	// the attacks fail under each (each in a UTS namespace of its own too,
	// so that a rename that worked would rename only that).
	for _, ss := range []struct {
		name string
		port string
		argv []string
	}{
		{"tcpserver", "7002", []string{"tcpserver", "-q", "-H", "-R", "0", "7002"}},
		{"systemd-socket-activate", "7003", []string{"systemd-socket-activate", "--inetd", "-a", "-l", "7003"}},
	} {
		t.Run(ss.name+", isolated", func(t *testing.T) {
			args := append(append([]string{"--uts"}, ss.argv...), bin["virtuald"], conf)
			args = append(args, strings.Fields(argv)...)
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
