package elfdeps

import (
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// hostFS is the host's own file system.
type hostFS struct{}

func (hostFS) Exists(p string) bool { _, err := os.Stat(p); return err == nil }
func (hostFS) ReadFile(p string, limit int) ([]byte, error) {
	b, err := os.ReadFile(p)
	if len(b) > limit {
		b = b[:limit]
	}
	return b, err
}
func (hostFS) Open(p string) (File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, os.ErrInvalid
	}
	return f, nil
}

// lddNames runs the host's loader in trace mode: the names of what it
// maps for program, the interpreter and the vDSO aside.
func lddNames(t *testing.T, program string) []string {
	t.Helper()
	out, err := exec.Command("ldd", program).Output()
	if err != nil {
		t.Skipf("ldd %s: %v", program, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		name, _, ok := strings.Cut(strings.TrimSpace(line), " => ")
		if ok && !strings.HasPrefix(name, "linux-vdso") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Resolve finds what the host's own loader maps, library for library,
// for real programs: /usr/bin/id (libselinux needs libpcre2-8, which id
// does not name), curl (thirty-odd libraries) and systemctl (its
// libsystemd-shared through RUNPATH).
func TestResolveLikeTheLoader(t *testing.T) {
	for _, program := range []string{"/usr/bin/id", "/usr/bin/curl", "/usr/bin/systemctl"} {
		if _, err := os.Stat(program); err != nil {
			t.Logf("%s: not on this host", program)
			continue
		}
		c, err := Resolve(hostFS{}, program, "")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range c.Objects[1:] {
			names = append(names, path.Base(o.Path))
		}
		slices.Sort(names)
		want := lddNames(t, program)
		if !slices.Equal(names, want) || len(c.Missing) > 0 || c.InterpMissing || c.Truncated {
			t.Errorf("%s: found %q, missing %v; the loader maps %q", program, names, c.Missing, want)
		}
	}
}

// The whole closure, with who needs what: a library that only another
// library needs is named with it; the search follows RUNPATH and $ORIGIN
// of the object that needs it, not of the program.
func TestResolveNamesWhoNeeds(t *testing.T) {
	id, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		t.Skip("no /usr/bin/id")
	}
	info, err := Read(strings.NewReader(string(id)))
	if err != nil || len(info.Needed) == 0 {
		t.Skip("/usr/bin/id is not dynamic here")
	}
	c, err := Resolve(hostFS{}, "/usr/bin/id", "")
	if err != nil {
		t.Fatal(err)
	}
	// Every library is found; now take one that only a library needs
	// away, through a file system that hides it.
	var hidden Object
	for _, o := range c.Objects[1:] {
		if !slices.Contains(info.Needed, path.Base(o.Path)) {
			hidden = o
			break
		}
	}
	if hidden.Path == "" {
		t.Skip("/usr/bin/id has no indirect library here")
	}
	c, err = Resolve(hiding{hidden: path.Base(hidden.Path)}, "/usr/bin/id", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Missing) != 1 || c.Missing[0].Name != path.Base(hidden.Path) || c.Missing[0].NeededBy == "/usr/bin/id" {
		t.Fatalf("missing %+v, want %s named with the library that needs it", c.Missing, path.Base(hidden.Path))
	}
}

// hiding is the host without one library name anywhere.
type hiding struct {
	hostFS
	hidden string
}

func (h hiding) Exists(p string) bool {
	return path.Base(p) != h.hidden && h.hostFS.Exists(p)
}
func (h hiding) Open(p string) (File, error) {
	if path.Base(p) == h.hidden {
		return nil, os.ErrNotExist
	}
	return h.hostFS.Open(p)
}

// The host's real cache lists its libc where the loader finds it.
func TestCachePathsHost(t *testing.T) {
	b, err := os.ReadFile("/etc/ld.so.cache")
	if err != nil {
		t.Skip("no /etc/ld.so.cache")
	}
	paths := cachePaths(b, "libc.so.6")
	if len(paths) == 0 {
		t.Fatalf("libc.so.6 not found in the host's cache")
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("cache lists %s: %v", p, err)
		}
	}
	if got := cachePaths(b[:100], "libc.so.6"); got != nil {
		t.Errorf("a truncated cache gave %q", got)
	}
}
