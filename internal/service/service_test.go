package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func openRoot(t testing.TB, dir string) Root {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return In(fd)
}

// The host's own root holds everything /bin/true needs: nothing is
// reported missing, and PATH lookup finds it.
func TestCompleteRoot(t *testing.T) {
	r := openRoot(t, "/")
	env := []string{"PATH=/nonexistent:/usr/bin:/bin"}
	p, err := r.LookPath("true", env)
	if err != nil || !strings.HasSuffix(p, "/true") {
		t.Fatalf("LookPath: %q, %v", p, err)
	}
	if libs := r.MissingLibraries(p, env); libs != "" {
		t.Fatalf("libraries reported missing on the host: %s", libs)
	}
}

// A root holding only a copy of a dynamic program: its loader and
// libraries are reported, and paths resolve inside the root, not on the
// host (an absolute symbolic link inside the root stays inside).
func TestBareRoot(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	testbed.Must(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "bin/prog"), data, 0o755))
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "bin/plain"), data, 0o644))
	testbed.Must(t, os.Symlink("/bin/true", filepath.Join(dir, "bin/link"))) // would be the host's /bin/true outside the root
	r := openRoot(t, dir)
	env := []string{"PATH=/bin"}
	if libs := r.MissingLibraries("/bin/prog", env); !strings.Contains(libs, "libc.so.6") {
		t.Fatalf("missing libraries: %q, want libc.so.6", libs)
	}
	if r.Exists("/bin/link") {
		t.Fatal("an absolute link was followed out of the root")
	}
	tests := []struct {
		path  string
		errno syscall.Errno
		want  string
	}{
		{"/bin/prog", syscall.ENOENT, "/bin/prog exists but its ELF interpreter"},
		{"/bin/plain", syscall.EACCES, "/bin/plain is not executable (mode 0644)"},
		{"/bin/none", syscall.ENOENT, "/bin/none does not exist inside the root"},
		{"/bin", syscall.EACCES, "/bin is a directory, not a program"},
	}
	for _, tt := range tests {
		if got := r.Explain(tt.path, tt.errno, env).Error(); !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.path, got, tt.want)
		}
	}
	if _, err := r.LookPath("missing", env); err == nil || !strings.Contains(err.Error(), "is not in PATH (/bin) inside the root") {
		t.Errorf("LookPath of a missing program: %v", err)
	}
}

// Check sorts why a program cannot start: ipwatchd's status gives each
// kind its own state. A script whose interpreter is in place is ready.
func TestCheckKinds(t *testing.T) {
	dir := t.TempDir()
	tr, err := os.ReadFile("/bin/true")
	testbed.Must(t, err)
	testbed.Must(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	for name, body := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"bare":       {tr, 0o755},
		"plain":      {tr, 0o644},
		"script":     {[]byte("#!/bin/sh\necho hi\n"), 0o755},
		"nointerp":   {[]byte("#!/bin/nosuch\n"), 0o755},
		"scriptbare": {[]byte("#!/bin/bare\n"), 0o755},
	} {
		testbed.Must(t, os.WriteFile(filepath.Join(dir, "bin", name), body.data, body.mode))
	}
	// /bin/sh with every library it needs: the host's, copied as
	// ipwatchctl install would.
	host := openRoot(t, "/")
	if _, err := host.Check("/bin/sh", nil); err != nil {
		t.Fatalf("the host's /bin/sh: %v", err)
	}
	r := openRoot(t, dir)
	tests := []struct {
		program string
		kind    error
		want    string
	}{
		{"/bin/none", ErrMissing, "/bin/none does not exist inside the root"},
		{"none", ErrMissing, "none is not in PATH (/bin:/usr/bin) inside the root"},
		{"/bin/plain", ErrMissing, "is not executable"},
		{"/bin", ErrMissing, "is not a regular file"},
		{"/bin/bare", ErrInterpreterMissing, "its ELF interpreter"},
		{"/bin/nointerp", ErrInterpreterMissing, "its script interpreter /bin/nosuch is missing"},
		{"/bin/scriptbare", ErrInterpreterMissing, "its script interpreter /bin/bare cannot start: its ELF interpreter"},
	}
	for _, tt := range tests {
		_, err := r.Check(tt.program, nil)
		if !errors.Is(err, tt.kind) || !strings.Contains(fmt.Sprint(err), tt.want) {
			t.Errorf("Check(%s) = %v, want %v: %q", tt.program, err, tt.kind, tt.want)
		}
	}
	// On the host, a script whose interpreter is there starts.
	script := filepath.Join(dir, "bin/script")
	if _, err := host.Check(script, nil); err != nil {
		t.Errorf("a script with its interpreter in place: %v", err)
	}
}

// ReadFile allocates what the file holds, not its limit: the loader's
// cache is read with a limit of megabytes on every check, and a buffer
// that size costs the page faults and garbage collection of a
// dynamically linked service's connection.
func TestReadFileSizedByFile(t *testing.T) {
	dir := t.TempDir()
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "small"), []byte("0123456789"), 0o644))
	r := openRoot(t, dir)
	var got []byte
	allocs := testing.AllocsPerRun(10, func() {
		got, _ = r.ReadFile("/small", 4<<20)
	})
	if string(got) != "0123456789" {
		t.Fatalf("read %q", got)
	}
	if c := cap(got); c > 64 {
		t.Errorf("a 10-byte file was read into a buffer of %d bytes", c)
	}
	if allocs > 2 {
		t.Errorf("%v allocations per read", allocs)
	}
}
