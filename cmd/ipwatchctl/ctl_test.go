package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/buildinfo"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunMain(m)) }

// runCtl runs ipwatchctl in-process, in an environment without
// $VIRTUALD_SOCKET.
func runCtl(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
	return code, out.String(), errOut.String()
}

// withLog gives a root the dev/null and dev/log check wants (a socket
// that this test process listens on), so that check does not warn.
func withLog(t *testing.T, root string) string {
	t.Helper()
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if err := unix.Mknod(filepath.Join(root, "dev", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	listen(t, filepath.Join(root, "dev", "log"))
	return root
}

// listen serves a datagram socket at path until the test ends.
func listen(t *testing.T, path string) {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
}

// check on every broken conf file of the foundation issue: the right
// FILE[:LINE] message and exit status 1.
func TestCheckHostileConfs(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	confs := roots.HostileConfs(withLog(t, roots.Root("good", "")))
	want := map[string]string{
		"missing":    confs["missing"] + ": cannot open: no such file or directory",
		"directory":  confs["directory"] + ": is not a regular file",
		"writable":   confs["writable"] + ": is writable by group or others (mode 0666)",
		"user-owned": confs["user-owned"] + ": is owned by uid 1000, not by root",
		"empty":      confs["empty"] + ": no entries: every connection will be refused",
		"binary":     confs["binary"] + ":1: holds a NUL byte: this is not a text conf file",
		"long-line":  confs["long-line"] + ":1: line is 1048576 bytes long; the limit is 4096; the prefix and default entries are suspended while this line stands",
		"nul":        confs["nul"] + ":2: holds a NUL byte: this is not a text conf file",
	}
	for name, line := range want {
		code, out, _ := runCtl("check", confs[name])
		if code != 1 || !strings.Contains(out, line+"\n") {
			t.Errorf("%s: exit %d, output:\n%s\nwant exit 1 and the line %q", name, code, out, line)
		}
	}
}

// check on every hostile root: FILE:LINE: KEY: reason, exit 1; warnings
// for a root without /dev/log; -program finds what would keep the service
// from starting.
func TestCheckRoots(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	bin := testbed.Binaries(t)
	good := withLog(t, roots.Root("good", bin["whoami"]))
	noLog := roots.Root("no-log", bin["whoami"])
	ww := roots.Root("ww", "")
	testbed.Must(t, os.Chmod(ww, 0o777))
	gw := roots.Root("gw", "")
	testbed.Must(t, os.Chmod(gw, 0o775))
	owned := roots.Root("owned", "")
	testbed.Must(t, os.Chown(owned, 1000, 1000))
	link := filepath.Join(roots.Dir, "link")
	testbed.Must(t, os.Symlink(good, link))
	testbed.Must(t, os.Symlink(roots.Dir, filepath.Join(roots.Dir, "linkdir")))
	file := roots.WriteConf("a-file", "x")
	hostile := roots.WriteConf("hostile.conf",
		"10.0.0.1 "+good+" user=nobody",
		"10.0.0.2 "+ww,
		"10.0.0.3 "+gw,
		"10.0.0.4 "+owned,
		"10.0.0.5 "+link,
		"10.0.0.6 "+filepath.Join(roots.Dir, "linkdir", "good"),
		"10.0.0.7 relative/root",
		"10.0.0.8 "+filepath.Join(roots.Dir, "missing"),
		"10.0.0.9 "+file,
		"10.0.0.10 "+good+" user=no-such-user",
		"10.0.0.11 "+noLog+" user=nobody",
	)
	code, out, _ := runCtl("check", hostile)
	want := []string{
		hostile + `:7: 10.0.0.7: root "relative/root" is not an absolute path`,
		hostile + ":2: 10.0.0.2: " + ww + " is writable by group or others (mode 0777)",
		hostile + ":3: 10.0.0.3: " + gw + " is writable by group or others (mode 0775)",
		hostile + ":4: 10.0.0.4: " + owned + " is owned by uid 1000, not by root",
		hostile + ":5: 10.0.0.5: " + link + " is a symbolic link",
		hostile + ":6: 10.0.0.6: " + filepath.Join(roots.Dir, "linkdir") + " is a symbolic link",
		hostile + ":8: 10.0.0.8: " + filepath.Join(roots.Dir, "missing") + " does not exist",
		hostile + ":9: 10.0.0.9: " + file + " is not a directory",
		hostile + ":10: 10.0.0.10: user no-such-user does not exist",
		hostile + ":11: 10.0.0.11: warning: " + noLog + "/dev/null is missing: services that open it fail, or (as root) create it as a regular file (ipwatchctl install -dev ROOT makes it)",
		hostile + ":11: 10.0.0.11: warning: " + noLog + "/dev/log is missing: the service inside cannot log to syslog",
		hostile + ": digest " + digestLine(t, hostile),
		hostile + ": valid entries by isolation (isolate=, else -isolate all): all 2",
		hostile + ": 11 entries, 9 invalid, 9 problems, 2 warnings",
	}
	if code != 1 || strings.TrimSpace(out) != strings.Join(want, "\n") {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 and:\n%s", code, out, strings.Join(want, "\n"))
	}

	// A clean file passes; a missing /dev/log only warns, and so does an
	// entry without user= whose service runs as root inside its root with
	// nothing but a chroot: isolate=none, or -isolate none for the entries
	// without isolate=. Isolated (the default), root cannot leave.
	clean := roots.WriteConf("clean.conf", "10.0.0.1 "+good+" isolate=none", "default "+noLog+" user=nobody", "10.0.0.2 "+good)
	rootWarning := func(line, key string, iso string) string {
		return clean + ":" + line + ": " + key + ": warning: no user= and isolate=" + iso + ": the service runs as root inside " + good + " with nothing but a chroot, which root can leave"
	}
	if code, out, _ := runCtl("check", clean); code != 0 || !strings.Contains(out, "3 entries, 0 invalid, 0 problems, 3 warnings") ||
		!strings.Contains(out, rootWarning("1", "10.0.0.1", "none")) || strings.Contains(out, ":3: 10.0.0.2: warning") ||
		!strings.Contains(out, clean+": valid entries by isolation (isolate=, else -isolate all): all 2, none 1\n") {
		t.Errorf("clean file: exit %d:\n%s", code, out)
	}
	if code, out, _ := runCtl("check", "-isolate", "pid,uts", clean); code != 0 || !strings.Contains(out, "3 entries, 0 invalid, 0 problems, 4 warnings") ||
		!strings.Contains(out, rootWarning("3", "10.0.0.2", "pid,uts")) {
		t.Errorf("clean file, -isolate pid,uts: exit %d:\n%s", code, out)
	}

	// isolate=user: two roots whose uid ranges are one are told apart; the
	// same root twice, or roots with ranges of their own, are not.
	a, b := collidingRoots(roots.Dir)
	userConf := roots.WriteConf("user.conf",
		"10.0.0.1 "+withLog(t, roots.Root(a, ""))+" isolate=all,user user=nobody",
		"10.0.0.2 "+filepath.Join(roots.Dir, a)+" isolate=all,user user=nobody",
		"10.0.0.3 "+good+" isolate=all,user user=nobody",
		"10.0.0.4 "+withLog(t, roots.Root(b, ""))+" isolate=mount,user user=nobody")
	code, out, _ = runCtl("check", userConf)
	collision := fmt.Sprintf("%s:4: 10.0.0.4: warning: isolate=user maps root inside %s to uid %d outside, as it does for %s (%s:1)",
		userConf, filepath.Join(roots.Dir, b), conf.UserBase(filepath.Join(roots.Dir, b)), filepath.Join(roots.Dir, a), userConf)
	if code != 0 || !strings.Contains(out, collision) || !strings.Contains(out, "4 entries, 0 invalid, 0 problems, 1 warnings") {
		t.Errorf("isolate=user, two roots in one uid range: exit %d, want 0 and\n%s\nin:\n%s", code, collision, out)
	}

	// -program: present and static, a dynamic one without its loader, none.
	dynamic := withLog(t, roots.Root("dynamic", ""))
	data, _ := os.ReadFile("/bin/true")
	testbed.Must(t, os.WriteFile(filepath.Join(dynamic, "bin", "whoami"), data, 0o755))
	empty := withLog(t, roots.Root("empty", ""))
	progConf := roots.WriteConf("prog.conf", "10.0.0.1 "+good+" user=nobody", "10.0.0.2 "+dynamic+" user=nobody", "10.0.0.3 "+empty+" user=nobody")
	code, out, _ = runCtl("check", "-program", "whoami", progConf)
	for _, line := range []string{
		progConf + ":2: 10.0.0.2: whoami cannot start in " + dynamic + ": /bin/whoami exists but its ELF interpreter /lib64/ld-linux-x86-64.so.2 is missing inside the root",
		progConf + ":3: 10.0.0.3: whoami cannot start in " + empty + ": whoami is not in PATH",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("-program: no line %q in:\n%s", line, out)
		}
	}
	if code != 1 || strings.Contains(out, ":1: 10.0.0.1") {
		t.Errorf("-program: exit %d, want 1 with the good root silent:\n%s", code, out)
	}

	// A name is looked up where virtuald will look under Debian's inetd,
	// which gives it no PATH: not in sbin; -path says where else.
	sbin := withLog(t, roots.Root("sbin", ""))
	testbed.Must(t, os.MkdirAll(filepath.Join(sbin, "usr", "sbin"), 0o755))
	testbed.Must(t, os.Link(bin["whoami"], filepath.Join(sbin, "usr", "sbin", "whoami")))
	sbinConf := roots.WriteConf("sbin.conf", "10.0.0.1 "+sbin+" user=nobody")
	code, out, _ = runCtl("check", "-program", "whoami", sbinConf)
	if code != 1 || !strings.Contains(out, "whoami is looked up in PATH=/bin:/usr/bin inside each root") ||
		!strings.Contains(out, "whoami cannot start in "+sbin+": whoami is not in PATH (/bin:/usr/bin) inside the root") {
		t.Errorf("-program whoami in usr/sbin: exit %d, want 1 and the PATH named:\n%s", code, out)
	}
	if code, out, _ := runCtl("check", "-program", "whoami", "-path", "/usr/sbin:/usr/bin", sbinConf); code != 0 || !strings.Contains(out, "PATH=/usr/sbin:/usr/bin") {
		t.Errorf("-path /usr/sbin:/usr/bin: exit %d:\n%s", code, out)
	}
}

// collidingRoots gives two names of roots in dir whose isolate=user uid
// ranges are one (conf.UserBase): about 200 tries, by the birthday bound.
func collidingRoots(dir string) (string, string) {
	seen := map[uint32]string{}
	for i := 0; ; i++ {
		name := "r" + strconv.Itoa(i)
		base := conf.UserBase(filepath.Join(dir, name))
		if first, ok := seen[base]; ok {
			return first, name
		}
		seen[base] = name
	}
}

// Both ways to ask for the version print it and exit 0.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"version"}, {"-socket", "/x", "version"}} {
		code, out, errOut := runCtl(args...)
		if code != 0 || out != "ipwatchctl "+buildinfo.Version()+"\n" || errOut != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if code, _, errOut := runCtl("version", "extra"); code != 2 || !strings.Contains(errOut, "usage:") {
		t.Errorf("version with an argument: exit %d, stderr %q", code, errOut)
	}
}

// digestLine is the digest check prints for path, read from its output.
func digestLine(t *testing.T, path string) string {
	t.Helper()
	_, out, _ := runCtl("check", path)
	for _, l := range strings.Split(out, "\n") {
		if d, ok := strings.CutPrefix(l, path+": digest "); ok {
			return d
		}
	}
	t.Fatalf("check %s printed no digest:\n%s", path, out)
	return ""
}

// Two hosts' copies of a conf file that differ only in comments, layout
// and order have one digest; a changed root changes it.
func TestCheckDigest(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	a, b := withLog(t, roots.Root("a", "")), withLog(t, roots.Root("b", ""))
	hostA := roots.WriteConf("host-a.conf", "192.0.2.50 "+a+" user=nobody", "192.0.2.51 "+b+" user=nobody")
	hostB := roots.WriteConf("host-b.conf", "# host b", "192.0.2.51\t"+b+"   user=nobody  # second site", "", "  192.0.2.50  "+a+" user=nobody")
	moved := roots.WriteConf("moved.conf", "192.0.2.50 "+b+" user=nobody", "192.0.2.51 "+b+" user=nobody")
	d := digestLine(t, hostA)
	if !strings.HasPrefix(d, "sha256:") || len(d) != len("sha256:")+64 {
		t.Fatalf("digest %q: want sha256: and 64 hex digits", d)
	}
	if got := digestLine(t, hostB); got != d {
		t.Errorf("the same entries written otherwise: digest %s, want %s", got, d)
	}
	if got := digestLine(t, moved); got == d {
		t.Errorf("an entry with another root kept the digest %s", d)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"check"}, {"frobnicate"}, {"resolve"}} {
		code, out, errOut := runCtl(args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "usage:") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and usage on stderr", args, code, out, errOut)
		}
	}
}

// An absent daemon is said as such, in one line.
func TestAbsentDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, cmd := range [][]string{{"status"}, {"reload"}, {"resolve", "10.0.0.1"}} {
		code, out, errOut := runCtl(append([]string{"-socket", sock}, cmd...)...)
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "ipwatchd is not running (nothing answers at "+sock+")") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", cmd, code, out, errOut)
		}
	}
}

// What a chroot usually gets wrong in dev/: check warns about a dev/null
// that is not the null device and a dev/log nobody listens on, and it
// asks the socket it checked, never one a tenant's link leads to.
func TestCheckDev(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	hostLive := filepath.Join(t.TempDir(), "live.sock")
	listen(t, hostLive)
	type want struct{ null, log string }
	cases := map[string]struct {
		prepare func(dev string)
		want    want
	}{
		"good": {func(dev string) {}, want{}},
		"null-file": {func(dev string) {
			os.Remove(filepath.Join(dev, "null"))
			os.WriteFile(filepath.Join(dev, "null"), []byte("a service's output"), 0o644)
		}, want{null: "/dev/null is a regular file, not the character device 1:3"}},
		"null-zero": {func(dev string) {
			os.Remove(filepath.Join(dev, "null"))
			unix.Mknod(filepath.Join(dev, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5)))
		}, want{null: "/dev/null is the character device 1:5, not the character device 1:3"}},
		"null-missing": {func(dev string) { os.Remove(filepath.Join(dev, "null")) }, want{null: "/dev/null is missing"}},
		"log-dead": {func(dev string) {
			os.Remove(filepath.Join(dev, "log"))
			c, _ := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dev, "log"), Net: "unixgram"})
			c.Close() // a socket file nobody listens on, as cp -a leaves it
		}, want{log: "/dev/log is a socket nobody listens on"}},
		// A tenant's link to a live socket of the host: inside the root
		// it leads nowhere, and check says what the service will see.
		"log-link-out": {func(dev string) {
			os.Remove(filepath.Join(dev, "log"))
			os.Symlink(hostLive, filepath.Join(dev, "log"))
		}, want{log: "/dev/log is missing"}},
		// The same link, and a dead socket where it leads inside the
		// root: the service's messages are lost, though a connect by
		// path from the host would reach the host's live socket.
		"log-link": {func(dev string) {
			os.Remove(filepath.Join(dev, "log"))
			os.Symlink(hostLive, filepath.Join(dev, "log"))
			inside := filepath.Join(filepath.Dir(dev), hostLive)
			os.MkdirAll(filepath.Dir(inside), 0o755)
			c, _ := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: inside, Net: "unixgram"})
			c.Close()
		}, want{log: "/dev/log is, or is reached through, a symbolic link: check does not follow it"}},
		// A FIFO is not opened (it would block), only named.
		"log-fifo": {func(dev string) {
			os.Remove(filepath.Join(dev, "log"))
			unix.Mkfifo(filepath.Join(dev, "log"), 0o666)
		}, want{log: "/dev/log is a FIFO, not a socket"}},
	}
	var lines []string
	keys := map[string]string{}
	i := 0
	for name, c := range cases {
		i++
		root := withLog(t, roots.Root(name, ""))
		c.prepare(filepath.Join(root, "dev"))
		keys[name] = fmt.Sprintf("10.0.0.%d", i)
		lines = append(lines, keys[name]+" "+root+" user=nobody")
	}
	conf := roots.WriteConf("dev.conf", lines...)
	code, out, _ := runCtl("check", conf)
	if code != 0 {
		t.Errorf("warnings only, yet exit %d:\n%s", code, out)
	}
	for name, c := range cases {
		prefix := keys[name] + ": warning: " + filepath.Join(roots.Dir, name)
		for _, w := range []string{c.want.null, c.want.log} {
			if w != "" && !strings.Contains(out, prefix+w) {
				t.Errorf("%s: no warning %q in:\n%s", name, prefix+w, out)
			}
		}
		if c.want.null == "" && strings.Contains(out, prefix+"/dev/null") || c.want.log == "" && strings.Contains(out, prefix+"/dev/log") {
			t.Errorf("%s: a warning it should not have:\n%s", name, out)
		}
	}
}

// check validates the limits (issue 23): a malformed or out-of-range
// max=, rate= or per-source= is an error at FILE:LINE that makes the
// entry invalid; valid limits pass.
func TestCheckLimits(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	good := withLog(t, roots.Root("good", ""))
	conf := roots.WriteConf("limits.conf",
		"10.0.0.1 "+good+" user=nobody max=16 rate=50/s per-source=4",
		"10.0.0.2 "+good+" user=nobody rate=5/h",
		"10.0.0.3 "+good+" user=nobody max=0",
		"10.0.0.4 "+good+" user=nobody max=2 per-source=3",
		"10.0.0.5 "+good+" user=nobody rate=600/m",
	)
	code, out, _ := runCtl("check", conf)
	for _, want := range []string{
		conf + `:2: 10.0.0.2: rate="5/h": unit "h" is not s or m (connections a second or a minute)`,
		conf + `:3: 10.0.0.3: max="0": out of range (1 to 1000000; without the option there is no limit)`,
		conf + ":4: 10.0.0.4: per-source=3 is more than max=2, so it would never apply",
		conf + ": 5 entries, 3 invalid, 3 problems, 0 warnings",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no line %q in:\n%s", want, out)
		}
	}
	if code != 1 || strings.Contains(out, ":1: ") || strings.Contains(out, ":5: ") {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 and no problem on lines 1 and 5", code, out)
	}
}
