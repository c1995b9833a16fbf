package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

func TestCheck(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	good := roots.Root("good", "")
	ww := roots.Root("ww", "")
	os.Chmod(ww, 0o777)
	clean := roots.WriteConf("clean.conf", "# ok", "10.0.0.1 "+good, "default /")
	broken := roots.WriteConf("broken.conf",
		"10.0.0.1 "+good,
		"10.0.0.300 "+good,
		"10.0.0.2 "+ww,
		"10.0.0.3 "+filepath.Join(roots.Dir, "missing"),
		"10.0.0.1 /",
		"10.0.0.4 "+good+" user=no-such-user",
	)
	tests := []struct {
		args []string
		code int
		out  []string
	}{
		{[]string{"check", clean}, 0, []string{clean + ": 2 entries, 0 invalid, 0 problems"}},
		{[]string{"check", broken}, 1, []string{
			broken + `:2: key "10.0.0.300" is not an address, a prefix or default`,
			broken + ":5: duplicate key 10.0.0.1: line 1 already maps it; this line is ignored",
			broken + ":3: 10.0.0.2: " + ww + " is writable by group or others (mode 0777)",
			broken + ":4: 10.0.0.3: " + filepath.Join(roots.Dir, "missing") + " does not exist",
			broken + ":6: 10.0.0.4: user no-such-user does not exist",
			broken + ": 4 entries, 3 invalid, 5 problems",
		}},
		{[]string{"check", filepath.Join(roots.Dir, "nope")}, 1, []string{filepath.Join(roots.Dir, "nope") + ": cannot open: no such file or directory"}},
		{[]string{"check"}, 2, nil},
		{[]string{"frobnicate"}, 2, nil},
		{nil, 2, nil},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		if code != tt.code {
			t.Errorf("%q: exit %d, want %d; stdout %q stderr %q", tt.args, code, tt.code, stdout.String(), stderr.String())
		}
		got := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if tt.out == nil {
			if stdout.Len() != 0 || !strings.Contains(stderr.String(), "usage:") {
				t.Errorf("%q: want usage on stderr only, got %q / %q", tt.args, stdout.String(), stderr.String())
			}
			continue
		}
		if strings.Join(got, "\n") != strings.Join(tt.out, "\n") {
			t.Errorf("%q:\n got %s\nwant %s", tt.args, strings.Join(got, "\n"), strings.Join(tt.out, "\n"))
		}
	}
}
