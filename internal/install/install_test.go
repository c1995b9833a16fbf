package install

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/virtuald/virtuald/internal/service"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func run(t *testing.T, root string, o Options, programs ...string) (int, string, error) {
	t.Helper()
	var out bytes.Buffer
	o.Out = &out
	n, err := Run(root, programs, o)
	return n, out.String(), err
}

// inRoot runs a program chrooted into root, as uid (with no_new_privs
// off: this is the test's own exec, not virtuald's).
func inRoot(t *testing.T, root string, uid uint32, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%q in %s: %v: %s", argv, root, err, out)
	}
	return string(out)
}

// Real programs of the host, with every library the loader maps, run
// inside a root that held nothing; a second run changes nothing.
func TestInstallRealPrograms(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	root := filepath.Join(roots.Dir, "fresh")
	programs := []string{"/usr/bin/id"}
	if _, err := os.Stat("/usr/bin/curl"); err == nil {
		programs = append(programs, "/usr/bin/curl") // thirty-odd libraries
	}
	n, out, err := run(t, root, Options{Dev: true, User: "nobody"}, programs...)
	if err != nil || n == 0 {
		t.Fatalf("install: %d changes, %v:\n%s", n, err, out)
	}
	if got := inRoot(t, root, 65534, "/usr/bin/id"); !strings.HasPrefix(got, "uid=65534(nobody) gid=65534(nogroup)") {
		t.Errorf("id inside the root as nobody: %q, want the names from the root's etc/passwd and etc/group", got)
	}
	if len(programs) > 1 {
		if got := inRoot(t, root, 0, "/usr/bin/curl", "--version"); !strings.HasPrefix(got, "curl ") {
			t.Errorf("curl inside the root: %q", got)
		}
	}
	for name, dev := range map[string]uint64{"null": unix.Mkdev(1, 3), "zero": unix.Mkdev(1, 5), "urandom": unix.Mkdev(1, 9)} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, "dev", name), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != dev || st.Mode&0o777 != 0o666 {
			t.Errorf("dev/%s: %v, mode %o rdev %x", name, err, st.Mode, st.Rdev)
		}
	}
	// Everything root's, nothing writable by others, no set-id bit.
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || (fi.Mode()&os.ModeSymlink == 0 && fi.Mode()&os.ModeDevice == 0 && st.Mode&0o7022 != 0) {
			t.Errorf("%s: uid %d mode %o", p, st.Uid, st.Mode)
		}
		return nil
	})
	for _, p := range programs {
		fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := service.In(fd).Check(p, nil); err != nil {
			t.Errorf("check %s: %v", p, err)
		}
		unix.Close(fd)
	}
	if n, out, err := run(t, root, Options{Dev: true, User: "nobody"}, programs...); n != 0 || err != nil || out != "" {
		t.Errorf("second run: %d changes, %v:\n%s", n, err, out)
	}
}

// A dry run says what it would do and does nothing; its count is the
// real run's.
func TestInstallDryRun(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	root := filepath.Join(roots.Dir, "dry")
	n, out, err := run(t, root, Options{DryRun: true, Dev: true, User: "nobody"}, "/usr/bin/id")
	if err != nil || !strings.Contains(out, "would copy /usr/bin/id to "+root+"/usr/bin/id\n") {
		t.Fatalf("dry run: %v:\n%s", err, out)
	}
	if _, err := os.Lstat(root); !os.IsNotExist(err) {
		t.Fatalf("a dry run made %s: %v", root, err)
	}
	if real, _, err := run(t, root, Options{Dev: true, User: "nobody"}, "/usr/bin/id"); err != nil || real != n {
		t.Errorf("the real run made %d changes (%v); the dry run said %d", real, err, n)
	}
}

// A tenant owns what is in its root and plants links and files where
// install will write. Nothing outside the root is ever written, and each
// is refused with the reason.
func TestInstallTenantTraps(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	outside := filepath.Join(roots.Dir, "outside")
	testbed.Must(t, os.Mkdir(outside, 0o755))
	secret := filepath.Join(outside, "shadow")
	testbed.Must(t, os.WriteFile(secret, []byte("secret\n"), 0o600))

	trap := func(name string, plant func(root string), want string, o Options) {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(roots.Dir, name)
			if _, _, err := run(t, root, Options{}, "/usr/bin/id"); err != nil {
				t.Fatal(err)
			}
			plant(root)
			_, out, err := run(t, root, o, "/usr/bin/id")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want an error holding %q; output:\n%s", err, want, out)
			}
			if b, _ := os.ReadFile(secret); string(b) != "secret\n" {
				t.Errorf("the file outside was written: %q", b)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Errorf("something was made outside the root: %v", ents)
			}
		})
	}
	replace := func(p, target string) {
		os.RemoveAll(p)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	trap("lib-link-out", func(root string) { replace(filepath.Join(root, "lib"), outside) },
		"/lib is a symbolic link to "+outside+" where the host has one to usr/lib: refused", Options{})
	trap("program-link-out", func(root string) { replace(filepath.Join(root, "usr/bin/id"), secret) },
		"/usr/bin/id is a symbolic link to "+secret+" where install needs a regular file: refused", Options{})
	trap("dir-link-out", func(root string) { replace(filepath.Join(root, "usr/bin"), outside) },
		"/usr/bin is a symbolic link to "+outside+" where install needs a directory: refused", Options{})
	trap("dev-link-out", func(root string) {
		testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
		replace(filepath.Join(root, "dev/null"), secret)
	}, "/dev/null is a symbolic link to "+secret+" where install needs a device: refused", Options{Dev: true})
	trap("etc-link-out", func(root string) {
		testbed.Must(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
		replace(filepath.Join(root, "etc/passwd"), secret)
	}, "/etc/passwd is a symbolic link to "+secret+" where install needs a regular file: refused", Options{User: "nobody"})
	// All or nothing: a link at etc/group stops install before etc/passwd
	// changes (it wrote etc/passwd, then failed on etc/group).
	trap("etc-group-link-out", func(root string) {
		testbed.Must(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
		testbed.Must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/:/bin/sh\n"), 0o644))
		replace(filepath.Join(root, "etc/group"), secret)
		t.Cleanup(func() {
			if b, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); string(b) != "root:x:0:0::/:/bin/sh\n" {
				t.Errorf("etc/passwd changed though etc/group could not: %q", b)
			}
			if ents, _ := os.ReadDir(filepath.Join(root, "etc")); len(ents) != 2 {
				t.Errorf("etc/ holds more than before: %v", ents)
			}
		})
	}, "/etc/group is a symbolic link to "+secret+" where install needs a regular file: refused", Options{User: "nobody"})
	trap("fifo", func(root string) {
		os.Remove(filepath.Join(root, "usr/bin/id"))
		testbed.Must(t, unix.Mkfifo(filepath.Join(root, "usr/bin/id"), 0o644))
	}, "/usr/bin/id is a FIFO where install needs a regular file: refused", Options{})
	// A directory the tenant owns could be renamed out of the root
	// between install's opening it and writing in it (to any directory of
	// the same file system the tenant can write): install writes only in
	// directories nobody but root can change.
	trap("tenant-dir", func(root string) {
		testbed.Must(t, os.Chown(filepath.Join(root, "usr/lib"), 1000, 1000))
		os.Remove(filepath.Join(root, "usr/lib/x86_64-linux-gnu/libc.so.6"))
	}, "/usr/lib is owned by uid 1000 with mode 0755: install writes only in directories owned by root and not writable by group or others", Options{})
	trap("writable-dir", func(root string) {
		testbed.Must(t, os.Chmod(filepath.Join(root, "usr/bin"), 0o777))
	}, "/usr/bin is owned by uid 0 with mode 0777", Options{})
}

// A root virtuald would refuse is refused, with virtuald's reason; a
// regular file where a device belongs (a root-run service made it) is
// replaced by the device.
func TestInstallRefusesBadRoots(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	ww := roots.Root("ww", "")
	testbed.Must(t, os.Chmod(ww, 0o777))
	link := filepath.Join(roots.Dir, "link")
	testbed.Must(t, os.Symlink(roots.Root("target", ""), link))
	for root, want := range map[string]string{
		ww:                              ww + " is writable by group or others (mode 0777): virtuald would refuse this root",
		link:                            link + " is a symbolic link: virtuald would refuse this root",
		filepath.Join(ww, "new"):        ww + " is writable by group or others (mode 0777): virtuald would refuse this root",
		"relative":                      "relative is not an absolute path: virtuald would refuse this root",
		filepath.Join(link, "new-root"): link + " is a symbolic link: virtuald would refuse this root",
		// virtuald serves "default /", but install into it would write
		// the host's own etc/passwd.
		"/": "/ is the host's own root: install builds the root of a virtual host, give its directory",
	} {
		if _, _, err := run(t, root, Options{}, "/usr/bin/id"); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", root, err, want)
		}
	}
	if ents, _ := os.ReadDir(ww); len(ents) != 2 { // ROOT-NAME and bin, as testbed made it
		t.Errorf("install wrote into a refused root: %v", ents)
	}

	root := roots.Root("devfile", "")
	testbed.Must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
	testbed.Must(t, os.WriteFile(filepath.Join(root, "dev/null"), []byte("oops"), 0o644))
	if _, out, err := run(t, root, Options{Dev: true}); err != nil || !strings.Contains(out, "replace "+root+"/dev/null (a regular file) with the device 1:3") {
		t.Fatalf("%v:\n%s", err, out)
	}
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(root, "dev/null"), &st); st.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("dev/null is still not a device: mode %o", st.Mode)
	}
}

// A module its program loads itself (a PAM module: not executable, no ELF
// interpreter) is installed with its closure and checked as the loader
// will load it, not refused as a program that cannot start.
func TestInstallModule(t *testing.T) {
	testbed.RequirePrivileges(t)
	module := "/usr/lib/x86_64-linux-gnu/security/pam_unix.so"
	if _, err := os.Stat(module); err != nil {
		t.Skipf("%s: %v", module, err)
	}
	root := filepath.Join(testbed.NewRoots(t).Dir, "pam")
	if n, out, err := run(t, root, Options{}, module); err != nil || n == 0 {
		t.Fatalf("install %s: %d changes, %v:\n%s", module, n, err, out)
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := service.In(fd).CheckLibrary(module); err != nil {
		t.Errorf("after install: %v", err)
	}
	// libcrypt is pam_unix's, not libpam's: the module's own closure came.
	if matches, _ := filepath.Glob(filepath.Join(root, "usr/lib/x86_64-linux-gnu/libcrypt.so.1*")); len(matches) == 0 {
		t.Errorf("libcrypt.so.1, which pam_unix.so needs, is not in the root")
	}
	os.Remove(filepath.Join(root, "usr/lib/x86_64-linux-gnu/libcrypt.so.1"))
	if err := service.In(fd).CheckLibrary(module); err == nil || !strings.Contains(err.Error(), "libcrypt.so.1") {
		t.Errorf("with libcrypt.so.1 removed: %v, want it named", err)
	}
}
