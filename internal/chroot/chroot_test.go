package chroot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func TestOpen(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	base := roots.Dir
	mk := func(rel string, perm os.FileMode, uid int) string {
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		testbed.Must(t, unix.Chmod(p, uint32(perm)))
		testbed.Must(t, os.Chown(p, uid, 0))
		return p
	}
	good := mk("good/inner", 0o755, 0)
	mk("ww", 0o777, 0)
	mk("ww/inner", 0o755, 0)
	mk("gw", 0o775, 0)
	mk("uo", 0o755, 1000)
	mk("uo/inner", 0o755, 0)
	sticky := mk("sticky", 0o1777, 0)
	testbed.Must(t, os.Symlink(good, filepath.Join(base, "link")))
	testbed.Must(t, os.Symlink(filepath.Join(base, "good"), filepath.Join(base, "linkdir")))
	testbed.Must(t, os.WriteFile(filepath.Join(base, "file"), nil, 0o644))

	tests := []struct {
		path  string
		where string // the component the error must name
		why   string
	}{
		{"/", "", ""},
		{good, "", ""},
		{filepath.Join(base, "ww/inner"), filepath.Join(base, "ww"), "is writable by group or others (mode 0777)"},
		{filepath.Join(base, "gw"), filepath.Join(base, "gw"), "is writable by group or others (mode 0775)"},
		{filepath.Join(base, "uo/inner"), filepath.Join(base, "uo"), "is owned by uid 1000, not by root"},
		{sticky, sticky, "is writable by group or others (mode 1777)"},
		{filepath.Join(base, "link"), filepath.Join(base, "link"), "is a symbolic link"},
		{filepath.Join(base, "linkdir/inner"), filepath.Join(base, "linkdir"), "is a symbolic link"},
		{filepath.Join(base, "file"), filepath.Join(base, "file"), "is not a directory"},
		{filepath.Join(base, "missing/x"), filepath.Join(base, "missing"), "does not exist"},
		{"relative/x", "relative/x", "is not an absolute path"},
		{base + "/good/../good", base + "/good/../good", "is not a clean path"},
		{base + "//good", base + "//good", "is not a clean path"},
	}
	for _, tt := range tests {
		d, err := Open(tt.path)
		if tt.why == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.path, err)
				continue
			}
			var st unix.Stat_t
			unix.Fstat(d.fd, &st)
			var want unix.Stat_t
			testbed.Must(t, unix.Stat(tt.path, &want))
			if st.Ino != want.Ino || st.Dev != want.Dev {
				t.Errorf("%s: opened another directory", tt.path)
			}
			d.Close()
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Path != tt.where || !strings.Contains(e.Problem, tt.why) {
			t.Errorf("%s: got %v, want %s %s", tt.path, err, tt.where, tt.why)
		}
	}
}

// An unprivileged user must not be able to swap a checked component: Open
// holds descriptors, not paths, so renaming a checked directory away after
// the check leaves the returned descriptor on the directory that was checked.
func TestOpenHoldsTheCheckedDirectory(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	p := filepath.Join(roots.Dir, "a")
	testbed.Must(t, os.Mkdir(p, 0o755))
	d, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var before unix.Stat_t
	unix.Fstat(d.fd, &before)
	testbed.Must(t, os.Rename(p, p+".old"))
	testbed.Must(t, os.Mkdir(p, 0o777))
	var after unix.Stat_t
	unix.Fstat(d.fd, &after)
	if before.Ino != after.Ino {
		t.Fatal("the descriptor followed the path")
	}
}

// A Checker says of every path what Open says, whatever path came
// before it (it reuses the directories the two share), and keeps no
// descriptor once closed.
func TestCheckerAgreesWithOpen(t *testing.T) {
	testbed.RequirePrivileges(t)
	base, err := os.MkdirTemp("/", "chroot-checker-")
	testbed.Must(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	testbed.Must(t, os.Chmod(base, 0o755))
	for _, d := range []string{"a", "a/b", "a/c", "open", "open/x"} {
		testbed.Must(t, os.Mkdir(filepath.Join(base, d), 0o755))
	}
	testbed.Must(t, os.Chmod(filepath.Join(base, "open"), 0o777))
	testbed.Must(t, os.Symlink("a", filepath.Join(base, "link")))
	testbed.Must(t, os.WriteFile(filepath.Join(base, "file"), nil, 0o644))
	paths := []string{"a/b", "a/c", "a", "a/b", "open/x", "a/b", "link", "link/b", "file", "missing", "a/missing", "a/c", "", "a/../a", "a//b"}
	before := openFDs(t)
	var c Checker
	for i := 0; i < 2; i++ { // then in the order the first round left
		for _, p := range paths {
			path := filepath.Join(base, p)
			if strings.Contains(p, "..") || strings.Contains(p, "//") {
				path = base + "/" + p
			}
			got := c.Check(path)
			d, want := Open(path)
			if d != nil {
				d.Close()
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: Checker says %v, Open %v", path, got, want)
			}
		}
	}
	c.Close()
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after Close, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	testbed.Must(t, err)
	return len(fds)
}
