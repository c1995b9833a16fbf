package main

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/elfdeps"
	"github.com/virtuald/virtuald/internal/service"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// indirect returns a library of program's closure on the host that
// program does not name itself (only another library needs it).
func indirect(t *testing.T, program string) string {
	t.Helper()
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := elfdeps.Resolve(service.In(fd), program, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range c.Objects[1:] {
		if !slices.Contains(c.Objects[0].Info.Needed, path.Base(o.Path)) {
			return o.Path
		}
	}
	t.Skipf("%s needs no library through another here", program)
	return ""
}

// A root built by install serves a real dynamic program of the host
// through a real inetd and virtuald, as the entry's user named by the
// root's own etc/passwd; check -program passes it, and names a library
// that only another library needs when it goes missing (the loader
// would fail with status 127 and the log say nothing).
func TestInstallServes(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := testbed.Binaries(t)
	roots := testbed.NewRoots(t)
	root := filepath.Join(roots.Dir, "built")
	code, out, errOut := runCtl("install", "-dev", "-user", "nobody", root, "/usr/bin/id")
	if code != 0 || !strings.Contains(out, "copy /usr/bin/id to "+root+"/usr/bin/id\n") || !strings.HasSuffix(out, " changes\n") {
		t.Fatalf("install: exit %d:\n%s%s", code, out, errOut)
	}
	if code, out, _ := runCtl("install", "-dev", "-user", "nobody", root, "/usr/bin/id"); code != 0 || out != root+": nothing to change, already installed\n" {
		t.Errorf("second install: exit %d: %q", code, out)
	}
	conf := roots.WriteConf("conf", "192.0.2.1 "+root+" user=nobody")
	if code, out, _ := runCtl("check", "-program", "/usr/bin/id", conf); code != 0 || !strings.Contains(out, "1 entries, 0 invalid, 0 problems") {
		t.Errorf("check -program after install: exit %d:\n%s", code, out)
	}

	ns := testbed.NewNetNS(t)
	ns.AddAddr("192.0.2.1")
	log := testbed.NewSyslog(t, t.TempDir())
	ns.Start(log, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		"7000 stream tcp nowait root "+bin["virtuald"]+" virtuald "+conf+" /usr/bin/id"))
	ns.WaitListening("tcp", 7000)
	if got, err := ns.Ask("192.0.2.1:7000"); err != nil || !strings.HasPrefix(got, "uid=65534(nobody) gid=65534(nogroup)") {
		t.Errorf("the installed id through inetd and virtuald: %q, %v; log:\n%s", got, err, log.Tail(5))
	}

	lib := indirect(t, "/usr/bin/id")
	os.Remove(filepath.Join(root, lib))
	code, out, _ = runCtl("check", "-program", "/usr/bin/id", conf)
	if want := "shared libraries it needs are missing inside the root: " + path.Base(lib) + " (needed by "; code != 1 || !strings.Contains(out, want) {
		t.Errorf("check -program without %s: exit %d, want 1 and %q in:\n%s", lib, code, want, out)
	}
	if code, out, _ := runCtl("install", root, "/usr/bin/id"); code != 0 || !strings.Contains(out, "/"+path.Base(lib)+" ") || !strings.HasSuffix(out, root+": 1 changes\n") {
		t.Errorf("install again: exit %d:\n%s", code, out)
	}
}

// install -profile list shows the shipped profiles and an admin's own
// (from $VIRTUALD_PROFILES here, /etc/virtuald/profiles in use); an
// unknown profile is named with the ones there are.
func TestInstallProfileList(t *testing.T) {
	dir := t.TempDir()
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "rsyncd.profile"), []byte("about my rsync daemon\nprogram /usr/bin/rsync\n"), 0o644))
	ctl := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(args, &env{stdout: &out, stderr: &errOut, getenv: func(k string) string {
			return map[string]string{"VIRTUALD_PROFILES": dir}[k]
		}})
		return code, out.String(), errOut.String()
	}
	code, out, _ := ctl("install", "-profile", "list")
	for _, want := range []string{"ftpd       shipped  Debian's in.ftpd", "tftpd      shipped", "fingerd    shipped", "popa3d     shipped",
		"rsyncd     " + filepath.Join(dir, "rsyncd.profile") + " my rsync daemon", "(an admin's own: " + dir + "/NAME.profile"} {
		if !strings.Contains(out, want) {
			t.Errorf("install -profile list: exit %d, no %q in:\n%s", code, want, out)
		}
	}
	if code, _, errOut := ctl("install", "-n", "-profile", "nosuch", "/srv/x"); code != 1 || !strings.Contains(errOut, "no profile nosuch") || !strings.Contains(errOut, "rsyncd") {
		t.Errorf("an unknown profile: exit %d, %s", code, errOut)
	}
}

// adduser -password-stdin reads one line and writes a SHA-512 crypt hash
// of it; deluser takes the user out again. Usage errors exit 2.
func TestAddUserCommand(t *testing.T) {
	testbed.RequirePrivileges(t)
	root := testbed.NewRoots(t).Root("u", "")
	stdin, w, err := os.Pipe()
	testbed.Must(t, err)
	w.WriteString("pw-dave\n")
	w.Close()
	var out, errOut bytes.Buffer
	e := &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }, stdio: [3]*os.File{stdin}}
	if code := run([]string{"adduser", "-password-stdin", "-uid", "2000", root, "dave"}, e); code != 0 {
		t.Fatalf("adduser: exit %d: %s", code, errOut.String())
	}
	shadow, _ := os.ReadFile(filepath.Join(root, "etc/shadow"))
	fields := strings.Split(string(shadow), ":")
	if len(fields) < 2 || !strings.HasPrefix(fields[1], "$6$") || strings.Contains(string(shadow), "pw-dave") {
		t.Errorf("etc/shadow: %q, want dave with a $6$ hash and no password in clear", shadow)
	}
	if code, _, errOut := runCtl("deluser", root, "dave"); code != 0 {
		t.Errorf("deluser: exit %d: %s", code, errOut)
	}
	if passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); strings.Contains(string(passwd), "dave") {
		t.Errorf("etc/passwd after deluser: %q", passwd)
	}
	for _, args := range [][]string{{"adduser", root}, {"adduser", "-uid", "x", root, "a"}, {"deluser", root}} {
		if code, _, _ := runCtl(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code, _, errOut := runCtl("adduser", "-password-stdin", root, "erin"); code != 1 || !strings.Contains(errOut, "no stdin") {
		t.Errorf("-password-stdin without stdin: exit %d, %s", code, errOut)
	}
}
