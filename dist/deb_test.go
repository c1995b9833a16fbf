package dist

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// testVersion is the VERSION the package is built with, as git describe
// gives it after a tag; debVersion is what Debian must see.
const (
	testVersion = "v1.2.3-4-gabcdef0"
	debVersion  = "1.2.3+git4.abcdef0"
)

var (
	debOnce sync.Once
	debPath string
	debErr  error
)

// buildDeb runs `make deb` once per test process, into a directory of its
// own, and returns the package's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	testbed.RequireTool(t, "dpkg-deb")
	debOnce.Do(func() {
		dir, err := os.MkdirTemp("", "virtuald-deb-")
		if err != nil {
			debErr = err
			return
		}
		testbed.Must(t, os.Chmod(dir, 0o755)) // lintian runs as nobody
		out, err := exec.Command("make", "-C", "..", "--no-print-directory", "deb", "DEBBUILD="+dir, "VERSION="+testVersion).CombinedOutput()
		if err != nil {
			debErr = &buildError{err, out}
			return
		}
		debPath = filepath.Join(dir, "virtuald_"+debVersion+"_"+runtime.GOARCH+".deb")
	})
	if debErr != nil {
		t.Fatalf("make deb: %v", debErr)
	}
	return debPath
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }

func TestMain(m *testing.M) {
	code := m.Run()
	if debPath != "" {
		os.RemoveAll(filepath.Dir(debPath))
	}
	os.Exit(code)
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).Output()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// The package holds what the README says it holds, root's, with the
// modes each needs, and its control fields say what it is.
func TestDebContents(t *testing.T) {
	deb := buildDeb(t)
	files := map[string]string{} // path -> mode and owner
	for _, l := range strings.Split(strings.TrimSpace(dpkgDeb(t, "-c", deb)), "\n") {
		f := strings.Fields(l)
		files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0] + " " + f[1]
	}
	want := map[string]string{
		"/usr/sbin/virtuald":                               "-rwxr-xr-x root/root",
		"/usr/sbin/ipwatchd":                               "-rwxr-xr-x root/root",
		"/usr/bin/ipwatchctl":                              "-rwxr-xr-x root/root",
		"/lib/systemd/system/ipwatchd.service":             "-rw-r--r-- root/root",
		"/etc/virtuald/":                                   "drwxr-xr-x root/root",
		"/etc/virtuald/example.conf":                       "-rw-r--r-- root/root",
		"/usr/share/man/man8/virtuald.8.gz":                "-rw-r--r-- root/root",
		"/usr/share/man/man8/ipwatchd.8.gz":                "-rw-r--r-- root/root",
		"/usr/share/man/man8/ipwatchctl.8.gz":              "-rw-r--r-- root/root",
		"/usr/share/man/man5/virtuald.conf.5.gz":           "-rw-r--r-- root/root",
		"/usr/share/doc/virtuald/copyright":                "-rw-r--r-- root/root",
		"/usr/share/doc/virtuald/changelog.gz":             "-rw-r--r-- root/root",
		"/usr/share/doc/virtuald/README.md.gz":             "-rw-r--r-- root/root",
		"/usr/share/doc/virtuald/examples/inetd.conf":      "-rw-r--r-- root/root",
		"/usr/share/doc/virtuald/examples/keepalived.conf": "-rw-r--r-- root/root",
	}
	examples, _ := filepath.Glob("examples/*")
	for _, e := range examples {
		want["/usr/share/doc/virtuald/examples/"+filepath.Base(e)] = "-rw-r--r-- root/root"
	}
	for path, mode := range want {
		if got, ok := files[path]; !ok || got != mode {
			t.Errorf("%s: %q, want %q", path, got, mode)
		}
	}
	for path, mode := range files {
		if !strings.HasSuffix(mode, " root/root") || strings.ContainsAny(mode[:10], "sStT") || mode[8] == 'w' {
			t.Errorf("%s: %s: every file root's, none setuid or writable by others", path, mode)
		}
	}

	fields := map[string]string{"Package": "virtuald", "Version": debVersion, "Architecture": runtime.GOARCH,
		"Section": "net", "Priority": "optional", "Maintainer": "virtuald maintainers <virtuald@example.org>"}
	for field, value := range fields {
		if got := strings.TrimSpace(dpkgDeb(t, "-f", deb, field)); got != value {
			t.Errorf("control field %s: %q, want %q", field, got, value)
		}
	}
	if d := dpkgDeb(t, "-f", deb, "Description"); !strings.HasPrefix(d, "per-address inetd services") {
		t.Errorf("Description: %q", d)
	}
	if d := strings.TrimSpace(dpkgDeb(t, "-f", deb, "Depends")); d != "" {
		t.Errorf("Depends: %q; the binaries are static and need nothing", d)
	}
	if c := dpkgDeb(t, "-I", deb, "conffiles"); strings.TrimSpace(c) != "/etc/virtuald/example.conf" {
		t.Errorf("conffiles: %q", c)
	}

	// The unit names the installed daemon, with nothing left to fill in.
	dir := t.TempDir()
	dpkgDeb(t, "-x", deb, dir)
	unit, _ := os.ReadFile(filepath.Join(dir, "lib/systemd/system/ipwatchd.service"))
	if !bytes.Contains(unit, []byte("\nExecStart=/usr/sbin/ipwatchd ")) || bytes.Contains(unit, []byte("@SBINDIR@")) {
		t.Errorf("the unit's ExecStart is not /usr/sbin/ipwatchd:\n%s", unit)
	}
	// The binaries carry the version they were built as.
	for _, bin := range []string{"usr/sbin/virtuald", "usr/sbin/ipwatchd", "usr/bin/ipwatchctl"} {
		want := filepath.Base(bin) + " " + testVersion + "\n"
		if out, err := exec.Command(filepath.Join(dir, bin), "-version").CombinedOutput(); err != nil || string(out) != want {
			t.Errorf("the packaged %s -version: %q, %v; want %q", bin, out, err, want)
		}
	}
}

// lintian finds nothing to say: no error, warning or note beyond the
// overrides the package carries (each with its reason).
func TestDebLintian(t *testing.T) {
	lintian := testbed.RequireTool(t, "lintian")
	deb := buildDeb(t)
	// As nobody: lintian unpacks what it checks, and warns against root.
	home := filepath.Dir(deb)
	cmd := exec.Command(lintian, "--tag-display-limit", "0", "--display-info", "--fail-on", "error,warning,info", deb)
	cmd.Env = append(os.Environ(), "HOME="+home, "TMPDIR="+home)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscallCred
	}
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("lintian: %v\n%s", err, out)
	}
}

// Installed with the real dpkg on this machine's own files, seen through
// overlays in a private mount namespace (nothing reaches the host): the
// files are in place, the unit is enabled and nothing started; removed,
// nothing is left but the conffile; installed again and purged, nothing
// at all.
func TestDebInstallRemove(t *testing.T) {
	if !testbed.PrivateMounts(t) {
		return
	}
	testbed.RequireTool(t, "dpkg")
	deb := buildDeb(t)
	groupsBefore := readAll(t, groupFiles...)
	uppers := overlaySystem(t)

	dpkg := func(args ...string) {
		t.Helper()
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	dpkg("-i", deb)
	for _, p := range []string{"/usr/sbin/virtuald", "/usr/sbin/ipwatchd", "/usr/bin/ipwatchctl", "/etc/virtuald/example.conf", "/usr/share/man/man5/virtuald.conf.5.gz"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	if err := exec.Command("getent", "group", "virtuald").Run(); err != nil {
		t.Errorf("installed, there is no group virtuald for the unit's socket: %v", err)
	}
	wants := "/etc/systemd/system/multi-user.target.wants/ipwatchd.service"
	if target, err := os.Readlink(wants); err != nil || target != "/lib/systemd/system/ipwatchd.service" {
		t.Errorf("the unit is not enabled: %s -> %q, %v", wants, target, err)
	}
	if pids := running("/usr/sbin/ipwatchd"); len(pids) > 0 {
		t.Errorf("installing started ipwatchd: pids %v", pids)
	}
	if out, err := exec.Command("/usr/bin/ipwatchctl", "help").CombinedOutput(); err != nil || !bytes.Contains(out, []byte("usage:")) {
		t.Errorf("the installed ipwatchctl: %v\n%s", err, out)
	}

	dpkg("-r", "virtuald")
	if left := changes(t, uppers); !slices.Equal(left, []string{"/etc/group", "/etc/gshadow", "/etc/virtuald/example.conf", "/var/lib/virtuald/group-created"}) {
		t.Errorf("removed, the package left behind %q; want only its conffile, its group and the record that it made the group", left)
	}
	// Installed again, it is enabled again: remove forgot the state.
	dpkg("-i", deb)
	if _, err := os.Readlink(wants); err != nil {
		t.Errorf("installed again after a remove, the unit is not enabled: %v", err)
	}
	dpkg("-P", "virtuald")
	if after := readAll(t, groupFiles...); after != groupsBefore {
		t.Errorf("purged, the group files differ from before the install:\n%s\nwant\n%s", after, groupsBefore)
	}
	left := slices.DeleteFunc(changes(t, uppers), func(p string) bool { return slices.Contains(groupFiles, p) }) // copied up, compared above
	if len(left) > 0 {
		t.Errorf("purged, the package left behind %q", left)
	}
	if _, err := os.Stat("/etc/virtuald"); err == nil {
		t.Error("purged, /etc/virtuald is still there")
	}

	// A group virtuald the host had before (with a member) is the host's:
	// purge leaves it as it was (issue 20 item 9).
	for _, cmd := range [][]string{{"groupadd", "--system", "virtuald"}, {"usermod", "-a", "-G", "virtuald", "nobody"}} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
	}
	before := readAll(t, groupFiles...)
	dpkg("-i", deb)
	dpkg("-P", "virtuald")
	if after := readAll(t, groupFiles...); after != before {
		t.Errorf("purged, a group virtuald the host had before the install changed:\n%s\nwant\n%s", after, before)
	}
}

// syscallCred runs lintian as nobody.
var syscallCred = syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}

// overlaid are the trees dpkg writes to; /run is hidden apart, so that no
// maintainer script finds a systemd to talk to.
var overlaid = []string{"/etc", "/usr", "/var"}

// overlaySystem mounts an overlay on each overlaid tree, its writes going
// to a tmpfs, and a tmpfs on /run; it returns the upper directory of each
// tree, where every change made through the overlay shows. The mount
// namespace is the test's own (PrivateMounts): all of it vanishes with it.
func overlaySystem(t *testing.T) map[string]string {
	t.Helper()
	scratch := t.TempDir()
	mount(t, "tmpfs", scratch, "tmpfs", "mode=0755")
	uppers := map[string]string{}
	for _, tree := range overlaid {
		upper, work := filepath.Join(scratch, "upper", tree), filepath.Join(scratch, "work", tree)
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		mount(t, "overlay", tree, "overlay", "lowerdir="+tree+",upperdir="+upper+",workdir="+work)
		uppers[tree] = upper
	}
	mount(t, "tmpfs", "/run", "tmpfs", "mode=0755")
	return uppers
}

// mount mounts, and unmounts at cleanup (before t.TempDir's removal).
func mount(t *testing.T, source, target, fstype, data string) {
	t.Helper()
	if err := unix.Mount(source, target, fstype, 0, data); err != nil {
		t.Fatalf("mount %s on %s: %v", fstype, target, err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
}

// bookkeeping is where dpkg and the tools it runs keep their own records:
// its database and log, man-db's cache. Not the package's leftovers.
// The shadow tools keep a backup of each file they change (/etc/group-)
// and take their lock file.
var bookkeeping = []string{"/var/lib/dpkg/", "/var/log/", "/var/cache/man/", "/var/cache/debconf/", "/etc/group-", "/etc/gshadow-", "/etc/.pwd.lock"}

// groupFiles are what groupadd changes.
var groupFiles = []string{"/etc/group", "/etc/gshadow"}

// readAll returns the files' contents, one after the other.
func readAll(t *testing.T, paths ...string) string {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// changes lists every file, link or deletion (whiteout) made through the
// overlays, outside dpkg's bookkeeping. Directories are left out: the
// overlay copies a file's parents up with it.
func changes(t *testing.T, uppers map[string]string) []string {
	t.Helper()
	var out []string
	for tree, upper := range uppers {
		filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			path := tree + strings.TrimPrefix(p, upper)
			for _, b := range bookkeeping {
				if strings.HasPrefix(path, b) {
					return nil
				}
			}
			out = append(out, path)
			return nil
		})
	}
	slices.Sort(out)
	return out
}

// running returns the pids of processes running exe.
func running(exe string) []string {
	var pids []string
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if target, err := os.Readlink(p); err == nil && target == exe {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

// make install into a DESTDIR puts the programs and the unit there, and
// make uninstall takes away exactly those (issue 21: there was none, and
// make install's unit shadows the package's).
func TestMakeInstallUninstall(t *testing.T) {
	dest := t.TempDir()
	run := func(target string) {
		t.Helper()
		out, err := exec.Command("make", "-C", "..", "--no-print-directory", target, "DESTDIR="+dest).CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	run("install")
	for _, p := range []string{"/usr/local/sbin/virtuald", "/usr/local/sbin/ipwatchd", "/usr/local/bin/ipwatchctl", "/usr/local/lib/systemd/system/ipwatchd.service"} {
		if _, err := os.Stat(dest + p); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	run("uninstall")
	var left []string
	filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, dest))
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("make uninstall left %q", left)
	}
}
