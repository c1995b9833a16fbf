package testbed

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Roots holds test root directories. It lives under /var/lib because a
// root must pass validation: every component from / down owned by root and
// not writable by group or others, which /tmp (mode 1777) fails.
type Roots struct {
	Dir string
	t   T
}

// NewRoots makes an empty directory for roots, removed at cleanup.
func NewRoots(t T) *Roots {
	t.Helper()
	dir, err := os.MkdirTemp("/var/lib", "virtuald-test-")
	if err != nil {
		t.Fatalf("roots: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	Must(t, os.Chmod(dir, 0o755))
	return &Roots{Dir: dir, t: t}
}

// Root makes a valid root called name holding /ROOT-NAME (which the test
// service reports) and the program at service as /bin/<its base name>.
func (r *Roots) Root(name, service string) string {
	r.t.Helper()
	root := filepath.Join(r.Dir, name)
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		r.t.Fatalf("root %s: %v", name, err)
	}
	for _, d := range []string{root, filepath.Join(root, "bin")} {
		Must(r.t, os.Chmod(d, 0o755))
	}
	if err := os.WriteFile(filepath.Join(root, "ROOT-NAME"), []byte(name+"\n"), 0o644); err != nil {
		r.t.Fatalf("root %s: %v", name, err)
	}
	if service != "" {
		if err := linkOrCopy(service, filepath.Join(root, "bin", filepath.Base(service))); err != nil {
			r.t.Fatalf("root %s: %v", name, err)
		}
	}
	return root
}

// IntruderRoot makes a valid root called name holding the hostile
// tenant's program (testbed/intruder) as /intruder, built static.
func (r *Roots) IntruderRoot(name string) string {
	r.t.Helper()
	root := r.Root(name, "")
	if err := linkOrCopy(Binaries(r.t)["intruder"], filepath.Join(root, "intruder")); err != nil {
		r.t.Fatalf("root %s: %v", name, err)
	}
	return root
}

// WriteConf writes a conf file (mode 0644, owned by root) with the lines given.
func (r *Roots) WriteConf(name string, lines ...string) string {
	r.t.Helper()
	p := filepath.Join(r.Dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		r.t.Fatalf("conf %s: %v", name, err)
	}
	return p
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Build compiles the given packages of this module (e.g. "./cmd/virtuald")
// as static binaries into dir and returns their paths by base name.
func Build(dir string, pkgs ...string) (map[string]string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	modRoot := filepath.Dir(strings.TrimSpace(string(gomod)))
	paths := make(map[string]string)
	for _, pkg := range pkgs {
		out := filepath.Join(dir, filepath.Base(pkg))
		if pkg == "./cmd/virtuald" && FrontInUse() {
			// Installed as make build does: the front as virtuald, the
			// Go program beside it as virtuald-go.
			front, err := os.ReadFile(filepath.Join(modRoot, "internal/enter/init_amd64.elf"))
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(out, front, 0o755); err != nil {
				return nil, err
			}
			paths["virtuald-front"], paths["virtuald"] = out, out
			out = filepath.Join(dir, "virtuald-go")
			paths["virtuald-go"] = out
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
		cmd.Dir = modRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
		}
		if _, ok := paths[filepath.Base(pkg)]; !ok {
			paths[filepath.Base(pkg)] = out
		}
	}
	return paths, nil
}

// FrontEnv turns virtuald's front off for the tests when set to "off":
// Build then makes virtuald the Go program itself, as on a machine
// without the front, so that make test runs the end-to-end tests once
// through the front and once through the Go program alone.
const FrontEnv = "VIRTUALD_TEST_FRONT"

// FrontInUse reports whether Build installs virtuald's front as
// virtuald (on amd64, the one architecture it is built for, unless
// FrontEnv says off).
func FrontInUse() bool {
	return runtime.GOARCH == "amd64" && os.Getenv(FrontEnv) != "off"
}

var (
	buildOnce sync.Once
	built     map[string]string
	buildErr  error
)

// Binaries builds, once per test process, every program the end-to-end
// tests run (virtuald, ipwatchd, ipwatchctl and the whoami test service)
// into a directory that lasts as long as the process.
func Binaries(t T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "virtuald-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		if buildErr = os.Chmod(dir, 0o755); buildErr != nil {
			os.RemoveAll(dir)
			return
		}
		built, buildErr = Build(dir, "./cmd/virtuald", "./cmd/ipwatchd", "./cmd/ipwatchctl", "./internal/testbed/whoami", "./internal/testbed/intruder")
	})
	if buildErr != nil {
		t.Fatalf("building: %v", buildErr)
	}
	return built
}

// RunMain runs the tests and removes what Binaries built.
func RunMain(m interface{ Run() int }) int {
	code := m.Run()
	for _, p := range built {
		os.RemoveAll(filepath.Dir(p))
		break
	}
	return code
}

// HostileRoot is a root every program must refuse: Entry is what follows
// the key on its conf line (the root, and options), Why what every refusal
// of it says.
type HostileRoot struct {
	Name, Entry, Why string
}

// HostileRoots makes the roots every program must refuse, each but the
// ones that are no directory holding the program at service, and
// returns them: writable by others, by the group, owned by a user, a
// symbolic link, under one, relative, missing, a file, an unknown user
// and an unknown group. Tests that know another condition of a root add
// it here, so that every test taking this list covers it (TestAgree).
func (r *Roots) HostileRoots(service string) []HostileRoot {
	r.t.Helper()
	mode := func(name string, perm os.FileMode) string {
		root := r.Root(name, service)
		Must(r.t, os.Chmod(root, perm))
		return root
	}
	owned := r.Root("user-owned", service)
	Must(r.t, os.Chown(owned, 1000, 1000))
	link := filepath.Join(r.Dir, "symlink")
	Must(r.t, os.Symlink(r.Root("symlink-target", service), link))
	Must(r.t, os.Symlink(r.Dir, filepath.Join(r.Dir, "linkdir")))
	r.Root("under/inside", service)
	return []HostileRoot{
		{"world-writable", mode("world-writable", 0o777), "is writable by group or others (mode 0777)"},
		{"group-writable", mode("group-writable", 0o775), "is writable by group or others (mode 0775)"},
		{"user-owned", owned, "is owned by uid 1000, not by root"},
		{"symlink", link, "is a symbolic link"},
		{"under a symlink", filepath.Join(r.Dir, "linkdir", "under", "inside"), "linkdir is a symbolic link"},
		{"relative", "relative/root", "is not an absolute path"},
		{"missing", filepath.Join(r.Dir, "missing"), "does not exist"},
		{"a file", r.WriteConf("a-file", "not a directory"), "is not a directory"},
		{"unknown user", r.Root("baduser", service) + " user=no-such-user", "user no-such-user does not exist"},
		{"unknown group", r.Root("badgroup", service) + " user=nobody group=no-such-group", "group no-such-group does not exist"},
	}
}

// HostileConfs makes the broken conf files every program must refuse
// plainly, each meant for 192.0.2.1 and the valid root good, and returns
// their paths by name: "missing", "directory", "writable", "user-owned",
// "empty", "binary", "long-line" (a 1 MiB line, then a default), "nul",
// and three a directory of whose path is hostile: "in-writable-dir",
// "symlink" and "under-symlink".
func (r *Roots) HostileConfs(good string) map[string]string {
	r.t.Helper()
	c := map[string]string{"missing": filepath.Join(r.Dir, "no-such-conf")}
	c["directory"] = filepath.Join(r.Dir, "conf-dir")
	Must(r.t, os.Mkdir(c["directory"], 0o755))
	c["writable"] = r.WriteConf("conf-writable", "192.0.2.1 "+good)
	Must(r.t, os.Chmod(c["writable"], 0o666))
	c["user-owned"] = r.WriteConf("conf-user-owned", "192.0.2.1 "+good)
	Must(r.t, os.Chown(c["user-owned"], 1000, 1000))
	c["empty"] = r.WriteConf("conf-empty")
	Must(r.t, os.Truncate(c["empty"], 0))
	c["binary"] = filepath.Join(r.Dir, "conf-binary")
	Must(r.t, os.WriteFile(c["binary"], []byte("\x7fELF\x02\x01\x01\x00\x00\x00192.0.2.1 "+good+"\n"), 0o644))
	c["long-line"] = r.WriteConf("conf-long-line", strings.Repeat("x", 1<<20), "default "+good)
	c["nul"] = filepath.Join(r.Dir, "conf-nul")
	Must(r.t, os.WriteFile(c["nul"], []byte("192.0.2.2 /\n192.0.2.1 "+good+"\x00\n"), 0o644))
	// Whoever can rename in a directory of the path chooses the content.
	open := filepath.Join(r.Dir, "conf-open-dir")
	Must(r.t, os.Mkdir(open, 0o777))
	Must(r.t, os.Chmod(open, 0o777))
	c["in-writable-dir"] = filepath.Join(open, "conf")
	Must(r.t, os.WriteFile(c["in-writable-dir"], []byte("192.0.2.1 "+good+"\n"), 0o644))
	target := r.WriteConf("conf-link-target", "192.0.2.1 "+good)
	c["symlink"] = filepath.Join(r.Dir, "conf-symlink")
	Must(r.t, os.Symlink(target, c["symlink"]))
	Must(r.t, os.Symlink(r.Dir, filepath.Join(r.Dir, "conf-linkdir")))
	c["under-symlink"] = filepath.Join(r.Dir, "conf-linkdir", "conf-link-target")
	return c
}

// CopyDynamic puts the dynamically linked program src into root as dst,
// with the libraries ldd finds for it and the host's /etc/ld.so.cache,
// as in a root copied from a Debian system (the cache is most of what
// the library check reads).
func CopyDynamic(t T, root, src, dst string) {
	t.Helper()
	out, err := exec.Command("ldd", src).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", src, err)
	}
	files := map[string]string{src: dst, "/etc/ld.so.cache": "/etc/ld.so.cache"}
	for _, line := range strings.Split(string(out), "\n") {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or the
		// loader's "/lib64/ld-linux-x86-64.so.2 (0x...)".
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/") {
			files[f[2]] = f[2]
		} else if len(f) == 2 && strings.HasPrefix(f[0], "/") {
			files[f[0]] = f[0]
		}
	}
	for from, to := range files {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatalf("%v", err)
		}
		p := filepath.Join(root, to)
		Must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		Must(t, os.WriteFile(p, data, 0o755))
	}
}
