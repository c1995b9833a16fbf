package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunMain(m)) }

// The host programs the test runs: the services, which install's
// profiles (ftpd, tftpd, fingerd) copy into the roots with the PAM
// modules libpam loads, and the clients, run in the namespace. .ci/run
// installs their packages.
var (
	services   = []string{"/usr/sbin/in.ftpd", "/usr/sbin/in.tftpd", "/usr/sbin/in.fingerd", "/usr/bin/finger", "/bin/ls", "/usr/sbin/popa3d"}
	pamModules = []string{"/usr/lib/x86_64-linux-gnu/security/pam_ftp.so", "/usr/lib/x86_64-linux-gnu/security/pam_unix.so", "/usr/lib/x86_64-linux-gnu/security/pam_permit.so", "/usr/lib/x86_64-linux-gnu/security/pam_deny.so"}
	clients    = []string{"inetd", "curl", "tftp", "finger"}
)

const packages = "apt-get install openbsd-inetd ftpd tftpd-hpa fingerd popa3d finger tftp-hpa curl"

// site is one virtual host: its address, its root, and its one user.
type site struct {
	addr, name, user string
	uid              int
	root             string
}

// Passwords are pw-USER, given to ipwatchctl adduser -password-stdin
// (olive and nick, of the broken roots, have none).
var sites = []*site{
	{addr: "192.0.2.31", name: "a", user: "alice", uid: 3001},
	{addr: "192.0.2.32", name: "b", user: "bob", uid: 3002},
	{addr: "192.0.2.33", name: "c", user: "carol", uid: 3003},
}

// Two broken roots: one virtuald refuses (writable by others), one it
// serves but whose program cannot start (a library removed after install).
const (
	openAddr  = "192.0.2.34"
	nolibAddr = "192.0.2.35"
)

// writeTenant gives a root its tenant: its user, made with the real
// `ipwatchctl adduser` (etc/passwd, etc/group, etc/shadow, the home), and
// its own files (in the home, srv/tftp's, the user's mailbox). Everything
// else a root holds, install -profile made; the test writes no other file
// of a root.
func writeTenant(t *testing.T, bin map[string]string, s *site, password bool) {
	t.Helper()
	args := []string{"adduser", "-uid", strconv.Itoa(s.uid), "-gecos", strings.ToUpper(s.user[:1]) + s.user[1:] + " of " + s.name, s.root, s.user}
	if password {
		args = append([]string{"adduser", "-password-stdin"}, args[1:]...)
	}
	cmd := exec.Command(bin["ipwatchctl"], args...)
	cmd.Stdin = strings.NewReader("pw-" + s.user + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipwatchctl adduser %s %s: %v\n%s", s.root, s.user, err, out)
	}
	files := []struct {
		path, content string
		uid           int
	}{
		{"home/" + s.user + "/hello.txt", "ftp from site " + s.name + "\n", s.uid},
		{"srv/tftp/hello.txt", "tftp from site " + s.name + "\n", 0},
		{"var/mail/" + s.user, "From postmaster@example.com Sat Dec  5 10:00:00 2026\nSubject: hello\n\nmail for " + s.user + " at site " + s.name + "\n\n", s.uid},
	}
	for _, f := range files {
		p := filepath.Join(s.root, f.path)
		testbed.Must(t, os.WriteFile(p, []byte(f.content), 0o644))
		testbed.Must(t, os.Chown(p, f.uid, f.uid))
	}
}

// bed is the namespace with its daemon, inetd and roots.
type bed struct {
	t      *testing.T
	ns     *testbed.NetNS
	roots  *testbed.Roots
	log    *testbed.Syslog
	bin    map[string]string
	socket string
	confs  map[string]string // by service: ftp, tftp, finger, and ftp-as-user (the wrong kind)
	tmp    string
}

// install builds a root with the real `ipwatchctl install` and the
// project's profiles of the three services.
func (b *bed) install(root string) {
	b.t.Helper()
	args := []string{"install", "-profile", "ftpd", "-profile", "tftpd", "-profile", "fingerd", "-profile", "popa3d", root}
	if out, err := exec.Command(b.bin["ipwatchctl"], args...).CombinedOutput(); err != nil {
		b.t.Fatalf("ipwatchctl install %s: %v\n%s", root, err, out)
	}
}

// ctl runs ipwatchctl against the test's daemon; it returns the output
// and the exit status.
func (b *bed) ctl(args ...string) (string, int) {
	b.t.Helper()
	out, err := exec.Command(b.bin["ipwatchctl"], append([]string{"-socket", b.socket}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		b.t.Fatalf("ipwatchctl %q: %v", args, err)
	}
	return string(out), 0
}

// client runs a real client inside the namespace (only its network: the
// clients need nothing else of it).
func (b *bed) client(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + b.ns.Path, "--", name}, args...)...)
	cmd.Dir = b.tmp
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (b *bed) ftp(addr, user, file string) (string, error) {
	return b.client("curl", "-sS", "--max-time", "20", "--user", user+":pw-"+user, "ftp://"+addr+"/"+file)
}

func newBed(t *testing.T) *bed {
	testbed.RequirePrivileges(t)
	for _, p := range append(append([]string{}, services...), pamModules...) {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v: this test runs Debian's own services (%s)", err, packages)
		}
	}
	for _, c := range clients {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is missing: %s", c, packages)
		}
	}
	b := &bed{t: t, bin: testbed.Binaries(t), confs: map[string]string{}, tmp: t.TempDir()}
	b.ns = testbed.NewNetNS(t)
	b.roots = testbed.NewRoots(t)
	b.log = testbed.NewSyslog(t, b.tmp)
	b.socket = filepath.Join(b.tmp, "run", "ipwatchd.sock")

	for _, s := range sites {
		s.root = filepath.Join(b.roots.Dir, s.name)
		b.install(s.root)
		writeTenant(t, b.bin, s, true)
		b.ns.AddAddr(s.addr)
	}
	open := &site{addr: openAddr, name: "open", user: "olive", uid: 3004, root: filepath.Join(b.roots.Dir, "open")}
	b.install(open.root)
	writeTenant(t, b.bin, open, false)
	os.Chmod(open.root, 0o777)
	nolib := &site{addr: nolibAddr, name: "nolib", user: "nick", uid: 3005, root: filepath.Join(b.roots.Dir, "nolib")}
	b.install(nolib.root)
	writeTenant(t, b.bin, nolib, false)
	// Not one in.ftpd names: libpam's own (the closure is what counts).
	for _, p := range []string{"usr/lib/x86_64-linux-gnu/libaudit.so.1"} {
		if err := os.Remove(filepath.Join(nolib.root, p)); err != nil {
			t.Fatal(err)
		}
	}
	b.ns.AddAddr(openAddr)
	b.ns.AddAddr(nolibAddr)

	// Services that drop privileges themselves (in.ftpd after PAM,
	// in.tftpd to -u tftp) start as root: no user=. in.fingerd does not:
	// user=nobody (a host user) confines it.
	for _, svc := range []string{"ftp", "tftp", "finger"} {
		opts := ""
		if svc == "finger" {
			opts = " user=nobody"
		}
		var lines []string
		for _, s := range append(append([]*site{}, sites...), open) {
			lines = append(lines, s.addr+" "+s.root+opts)
		}
		if svc == "ftp" {
			lines = append(lines, nolib.addr+" "+nolib.root)
		}
		b.confs[svc] = b.roots.WriteConf("conf."+svc, lines...)
	}

	b.confs["ftp-as-user"] = b.roots.WriteConf("conf.ftp-as-user", sites[0].addr+" "+sites[0].root+" user=nobody")
	b.confs["ftp-userns"] = b.roots.WriteConf("conf.ftp-userns", sites[0].addr+" "+sites[0].root+" isolate=all,user")

	b.startDaemon()
	virtuald := b.bin["virtuald"] + " virtuald -socket " + b.socket + " "
	inetd := []string{
		"21 stream tcp nowait root " + virtuald + b.confs["ftp"] + " /usr/sbin/in.ftpd -l",
		// The same service in accept mode.
		"2100 stream tcp wait root " + virtuald + "-accept " + b.confs["ftp"] + " /usr/sbin/in.ftpd -l",
		"79 stream tcp nowait root " + virtuald + b.confs["finger"] + " /usr/sbin/in.fingerd",
		// The wrong kind: a service that drops privileges itself, given user=.
		"2121 stream tcp nowait root " + virtuald + b.confs["ftp-as-user"] + " /usr/sbin/in.ftpd -l",
		// With a user namespace, in both modes.
		"2122 stream tcp nowait root " + virtuald + b.confs["ftp-userns"] + " /usr/sbin/in.ftpd -l",
		"2101 stream tcp wait root " + virtuald + "-accept " + b.confs["ftp-userns"] + " /usr/sbin/in.ftpd -l",
		// A program by name, as the first try had it.
		"7079 stream tcp nowait root " + virtuald + b.confs["finger"] + " in.fingerd",
		// POP3, in accept mode, as the popa3d profile says.
		"110 stream tcp wait root " + virtuald + "-accept " + b.confs["ftp"] + " /usr/sbin/popa3d",
	}
	// A datagram service gets one line per address: inetd's socket then
	// carries that address's datagrams only.
	for _, s := range append(append([]*site{}, sites...), open) {
		inetd = append(inetd, s.addr+":69 dgram udp wait root "+virtuald+b.confs["tftp"]+" /usr/sbin/in.tftpd -s -u tftp /srv/tftp")
	}
	b.ns.Start(b.log, "inetd", "-d", "-R", "1000000", b.roots.WriteConf("inetd.conf", inetd...))
	b.ns.WaitListening("tcp", 21)
	b.ns.WaitListening("tcp", 79)
	b.ns.WaitListening("udp", 69)
	b.ns.WaitListening("tcp", 7079)
	b.ns.WaitListening("tcp", 2121)
	b.ns.WaitListening("tcp", 110)
	return b
}

// startDaemon runs ipwatchd in the namespace (it must see the addresses)
// with the log relay, which serves dev/log in every valid root.
func (b *bed) startDaemon() {
	b.t.Helper()
	confs := []string{b.confs["ftp"], b.confs["tftp"], b.confs["finger"]}
	ipwatchdtest.Settle(b.t, confs...)
	args := []string{"-socket", b.socket, "-bpf", "off", "-relay-syslog"}
	for _, c := range confs {
		args = append(args, "-conf", c)
	}
	b.ns.Start(b.log, b.bin["ipwatchd"], args...)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := (admin.Client{Socket: b.socket}).Confs(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("ipwatchd did not answer within 10s")
		}
	}
}

// status is `ipwatchctl status -json`'s entry for key in conf.
func (b *bed) status(conf, key string) *admin.EntryStatus {
	b.t.Helper()
	out, code := b.ctl("status", "-json", "-all")
	if code != 0 {
		b.t.Fatalf("status: %d: %s", code, out)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		b.t.Fatalf("status -json: %v\n%s", err, out)
	}
	for _, c := range st.Confs {
		for i := range c.Entries {
			if c.Path == conf && c.Entries[i].Key == key {
				return &c.Entries[i]
			}
		}
	}
	b.t.Fatalf("status has no entry %s in %s:\n%s", key, conf, out)
	return nil
}

// TestRealServices: Debian's in.ftpd (PAM), in.tftpd (UDP) and in.fingerd
// (which runs finger) in three roots built by install, each address
// serving its own root's files and users and nothing else, through a real
// inetd, virtuald and ipwatchd, to real clients; broken roots refused, or
// named, with the same reason by status, resolve, check and the log.
func TestRealServices(t *testing.T) {
	b := newBed(t)

	t.Run("ftp: each address its own users and files", func(t *testing.T) {
		for _, s := range sites {
			got, err := b.ftp(s.addr, s.user, "hello.txt")
			if err != nil || got != "ftp from site "+s.name+"\n" {
				t.Errorf("%s as %s: %q, %v; log ends:\n%s", s.addr, s.user, got, err, b.log.Tail(8))
			}
			// The root's own etc/passwd, by absolute path: this root's
			// user, no other site's.
			got, err = b.ftp(s.addr, s.user, "%2Fetc/passwd")
			if err != nil || !strings.Contains(got, s.user+":x:") {
				t.Errorf("%s: /etc/passwd: %q, %v", s.addr, got, err)
			}
			for _, o := range sites {
				if o != s && strings.Contains(got, o.user) {
					t.Errorf("%s: /etc/passwd holds %s of site %s: %q", s.addr, o.user, o.name, got)
				}
			}
			// Another site's user does not exist here.
			for _, o := range sites {
				if o == s {
					continue
				}
				if got, err := b.ftp(s.addr, o.user, "hello.txt"); err == nil || !strings.Contains(got, "Access denied") {
					t.Errorf("%s as %s (a user of site %s): %q, %v, want the login denied", s.addr, o.user, o.name, got, err)
				}
			}
		}
	})

	t.Run("ftp runs isolated, in both modes", func(t *testing.T) {
		// Every entry has the default isolation: in.ftpd runs as root,
		// with PAM, in its own mount, pid, ipc and uts namespaces.
		s := sites[1]
		got, err := b.client("curl", "-sS", "--max-time", "20", "--user", s.user+":pw-"+s.user, "ftp://"+s.addr+":2100/hello.txt")
		if err != nil || got != "ftp from site "+s.name+"\n" {
			t.Errorf("accept mode, %s as %s: %q, %v; log ends:\n%s", s.addr, s.user, got, err, b.log.Tail(8))
		}
		for _, port := range []string{"21", "2100"} {
			if l, ok := b.log.WaitFor(10*time.Second, "local="+s.addr+":"+port, "program=/usr/sbin/in.ftpd", "isolate=all"); !ok {
				t.Errorf("port %s: no line saying in.ftpd ran with isolate=all: %q; log ends:\n%s", port, l, b.log.Tail(10))
			}
		}
	})

	t.Run("ftp: login, upload and listing, isolated, with and without a user namespace", func(t *testing.T) {
		// The user's files are theirs on disk whichever way in.ftpd ran:
		// in a user namespace the root's mounts are idmapped, so alice
		// inside is alice on disk. The listing is /bin/ls, run by in.ftpd.
		s := sites[0]
		local := filepath.Join(b.tmp, "upload.txt")
		testbed.Must(t, os.WriteFile(local, []byte("uploaded\n"), 0o644))
		for _, port := range []string{"21", "2122", "2101"} {
			name := "up-" + port + ".txt"
			url := "ftp://" + s.addr + ":" + port + "/"
			if out, err := b.client("curl", "-sS", "--max-time", "20", "--user", s.user+":pw-"+s.user, "-T", local, url+name); err != nil {
				t.Errorf("port %s: upload: %q, %v; log ends:\n%s", port, out, err, b.log.Tail(8))
				continue
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(s.root, "home", s.user, name), &st); err != nil || st.Uid != uint32(s.uid) {
				t.Errorf("port %s: the upload on disk: uid %d, %v, want %s's %d", port, st.Uid, err, s.user, s.uid)
			}
			list, err := b.client("curl", "-sS", "--max-time", "20", "--user", s.user+":pw-"+s.user, url)
			if err != nil || !strings.Contains(list, "hello.txt") || !strings.Contains(list, name) || !strings.Contains(list, s.user) {
				t.Errorf("port %s: listing: %q, %v, want hello.txt and %s, owned by %s", port, list, err, name, s.user)
			}
		}
		if l, ok := b.log.WaitFor(10*time.Second, "local="+s.addr+":2122", "isolate=all,user"); !ok {
			t.Errorf("no line saying in.ftpd ran with isolate=all,user: %q", l)
		}
	})

	t.Run("ftp logs through the relay under its own address", func(t *testing.T) {
		// in.ftpd -l logs each login to syslog from inside its root;
		// ipwatchd's relay serves that root's dev/log.
		if l, ok := b.log.WaitFor(10*time.Second, "virtuald[192.0.2.31]:", "FTP LOGIN FROM", "alice"); !ok {
			t.Errorf("no login line of alice relayed from 192.0.2.31's root; log ends:\n%s", b.log.Tail(10))
		} else {
			t.Logf("relayed: %q", l)
		}
		if _, ok := b.log.WaitFor(0, "virtuald[192.0.2.31]:", "FTP LOGIN FROM", "bob"); ok {
			t.Errorf("bob's login was relayed from 192.0.2.31's root")
		}
	})

	t.Run("pop3: each address its own users and mail (popa3d profile)", func(t *testing.T) {
		for _, s := range sites[:2] {
			got, err := b.client("curl", "-sS", "--max-time", "20", "--user", s.user+":pw-"+s.user, "pop3://"+s.addr+"/1")
			if err != nil || !strings.Contains(got, "mail for "+s.user+" at site "+s.name) {
				t.Errorf("%s as %s: %q, %v; log ends:\n%s", s.addr, s.user, got, err, b.log.Tail(8))
			}
		}
		if got, err := b.client("curl", "-sS", "--max-time", "20", "--user", sites[1].user+":pw-"+sites[1].user, "pop3://"+sites[0].addr+"/1"); err == nil {
			t.Errorf("%s as %s (a user of site %s): %q, want the login refused", sites[0].addr, sites[1].user, sites[1].name, got)
		}
	})

	t.Run("tftp: each address its own files", func(t *testing.T) {
		for _, s := range sites {
			out := filepath.Join(b.tmp, "tftp-"+s.name)
			got, err := b.client("tftp", "-m", "binary", s.addr, "-c", "get", "hello.txt", out)
			content, _ := os.ReadFile(out)
			if err != nil || string(content) != "tftp from site "+s.name+"\n" {
				t.Errorf("%s: %q (client said %q, %v); log ends:\n%s", s.addr, content, got, err, b.log.Tail(8))
			}
		}
		// The datagram's source is logged, as a connection's remote is.
		if l, ok := b.log.WaitFor(5*time.Second, "local=192.0.2.32:69", "outcome=exec"); !ok || !strings.Contains(l, "remote=192.0.2.32:") {
			t.Errorf("the datagram's log line lacks its source: %q", l)
		}
	})

	t.Run("finger: each address its own users", func(t *testing.T) {
		for _, s := range sites {
			got, err := b.client("finger", s.user+"@"+s.addr)
			want := "Name: " + strings.ToUpper(s.user[:1]) + s.user[1:] + " of " + s.name
			if err != nil || !strings.Contains(got, want) {
				t.Errorf("finger %s@%s: %q, %v, want %q; log ends:\n%s", s.user, s.addr, got, err, want, b.log.Tail(8))
			}
			for _, o := range sites {
				if o == s {
					continue
				}
				if got, _ := b.client("finger", o.user+"@"+s.addr); !strings.Contains(got, "no such user") {
					t.Errorf("finger %s@%s (a user of site %s): %q, want no such user", o.user, s.addr, o.name, got)
				}
			}
		}
		if l, ok := b.log.WaitFor(5*time.Second, "local=192.0.2.31:79", "outcome=exec"); !ok || !strings.Contains(l, "user=nobody(65534:65534)") {
			t.Errorf("finger did not run as nobody: %q", l)
		}
	})

	t.Run("a root writable by others: refused, the same reason everywhere", func(t *testing.T) {
		why := "is writable by group or others (mode 0777)"
		if got, err := b.ftp(openAddr, "olive", "hello.txt"); err == nil || got == "" {
			t.Errorf("ftp to %s: %q, %v, want the connection closed", openAddr, got, err)
		}
		if got, _ := b.client("finger", "olive@"+openAddr); strings.Contains(got, "olive") {
			t.Errorf("finger to %s: %q", openAddr, got)
		}
		for _, port := range []string{":21", ":79"} {
			if _, ok := b.log.WaitFor(5*time.Second, "local="+openAddr+port, "outcome=refused", why); !ok {
				t.Errorf("no refusal in the log for %s%s; log ends:\n%s", openAddr, port, b.log.Tail(8))
			}
		}
		for _, svc := range []string{"ftp", "tftp", "finger"} {
			conf := b.confs[svc]
			if e := b.status(conf, openAddr); e.State != "invalid" || !strings.Contains(e.Reason, why) {
				t.Errorf("status of %s in conf.%s: %s %q, want invalid: %s", openAddr, svc, e.State, e.Reason, why)
			}
			if out, code := b.ctl("resolve", "-conf", conf, openAddr); code != 1 || !strings.Contains(out, "refused") || !strings.Contains(out, why) {
				t.Errorf("resolve %s in conf.%s: exit %d: %s", openAddr, svc, code, out)
			}
			if out, code := b.ctl("check", conf); code != 1 || !strings.Contains(out, openAddr+": ") || !strings.Contains(out, why) {
				t.Errorf("check conf.%s: exit %d:\n%s", svc, code, out)
			}
		}
	})

	t.Run("a library missing: named by check and the log", func(t *testing.T) {
		// libpam's path is the one the root's ld.so.cache gives.
		want := "shared libraries it needs are missing inside the root: libaudit.so.1 (needed by "
		out, code := b.ctl("check", "-program", "/usr/sbin/in.ftpd", b.confs["ftp"])
		if code != 1 || !strings.Contains(out, nolibAddr+": /usr/sbin/in.ftpd cannot start") || !strings.Contains(out, want) || !strings.Contains(out, "/libpam.so.0)") {
			t.Errorf("check -program: exit %d:\n%s", code, out)
		}
		for _, s := range sites {
			if strings.Contains(out, s.addr+": /usr/sbin/in.ftpd cannot start") || strings.Contains(out, s.addr+": warning: "+s.root+"/dev/") {
				t.Errorf("check -program: a good root fails or lacks something in dev/:\n%s", out)
			}
		}
		// What it cannot see (PAM, NSS, the files in writeTenant), said.
		if !strings.Contains(out, "check cannot see what the service looks for by itself") || !strings.Contains(out, "strace -f -e trace=file") {
			t.Errorf("check -program does not say what it cannot see:\n%s", out)
		}
		got, _ := b.ftp(nolibAddr, "nick", "hello.txt")
		// The check runs once the service failed as the loader fails
		// (status 127), not on every connection: the line of its end.
		if _, ok := b.log.WaitFor(5*time.Second, "local="+nolibAddr+":21", "outcome=exited", "status=127", "warning=", "libaudit.so.1 (needed by ", "/libpam.so.0)"); !ok {
			t.Errorf("no warning naming libaudit.so.1 and libpam.so.0 in the log (the client got %q); log ends:\n%s", got, b.log.Tail(8))
		}
		// Accept mode checks the same, for the service that failed only.
		got, _ = b.client("curl", "-sS", "--max-time", "20", "--user", "nick:pw-nick", "ftp://"+nolibAddr+":2100/hello.txt")
		if _, ok := b.log.WaitFor(5*time.Second, "local="+nolibAddr+":2100", "outcome=exited", "status=127", "warning=", "libaudit.so.1 (needed by ", "/libpam.so.0)"); !ok {
			t.Errorf("accept mode: no warning naming libaudit.so.1 and libpam.so.0 in the log (the client got %q); log ends:\n%s", got, b.log.Tail(8))
		}
	})

	t.Run("a program by name: looked up where virtuald looks, by check too", func(t *testing.T) {
		// Debian's inetd gives virtuald no PATH: in.fingerd, in
		// /usr/sbin, is not found, and check says so before a client does.
		why := "in.fingerd is not in PATH (/bin:/usr/bin) inside the root"
		if got, err := b.ns.Ask(sites[0].addr + ":7079"); got != "" {
			t.Errorf("in.fingerd by name: %q, %v, want the connection closed", got, err)
		}
		if _, ok := b.log.WaitFor(5*time.Second, "local="+sites[0].addr+":7079", "outcome=refused", why); !ok {
			t.Errorf("no refusal saying %q; log ends:\n%s", why, b.log.Tail(5))
		}
		out, code := b.ctl("check", "-program", "in.fingerd", b.confs["finger"])
		if code != 1 || !strings.Contains(out, sites[0].addr+": in.fingerd cannot start in "+sites[0].root+": "+why) || !strings.Contains(out, "PATH=/bin:/usr/bin") {
			t.Errorf("check -program in.fingerd: exit %d:\n%s", code, out)
		}
		if out, code := b.ctl("check", "-program", "/usr/sbin/in.fingerd", b.confs["finger"]); strings.Contains(out, "cannot start") || code != 1 {
			t.Errorf("check -program /usr/sbin/in.fingerd: exit %d (1 for the open root only):\n%s", code, out)
		}
	})

	t.Run("a service that drops privileges itself, given user=: foreseen by check", func(t *testing.T) {
		// Started as nobody (no_new_privs), in.ftpd cannot read
		// etc/shadow nor take on alice's groups: every login fails.
		if got, err := b.client("curl", "-sS", "--max-time", "20", "--user", "alice:pw-alice", "ftp://"+sites[0].addr+":2121/hello.txt"); err == nil || strings.Contains(got, "ftp from site") {
			t.Errorf("in.ftpd as nobody served a login: %q, %v", got, err)
		}
		for prog, why := range map[string]string{
			"/usr/sbin/in.ftpd":  "/usr/sbin/in.ftpd calls initgroups and links libpam",
			"/usr/sbin/in.tftpd": "/usr/sbin/in.tftpd calls initgroups",
		} {
			out, code := b.ctl("check", "-program", prog, b.confs["ftp-as-user"])
			if code != 0 || !strings.Contains(out, sites[0].addr+": warning: "+why+", as services that drop privileges themselves do, but user=nobody starts it without root") {
				t.Errorf("check -program %s with user=nobody: exit %d:\n%s", prog, code, out)
			}
			// Without user= (the right kind), no such warning.
			if out, _ := b.ctl("check", "-program", prog, b.confs["ftp"]); strings.Contains(out, "drop privileges themselves") {
				t.Errorf("check -program %s without user=: \n%s", prog, out)
			}
		}
	})
}
