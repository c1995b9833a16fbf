package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

// testTools are the tools `scripts/need test` looks for, besides the three
// this test hides; the commands the script itself runs come first.
var testTools = []string{"bash", "cut", "sort", "paste", "id",
	"ip", "ss", "nsenter", "unshare", "tcpserver", "systemd-socket-activate", "systemd-analyze",
	"dpkg-deb", "lintian", "setpriv", "groff", "make", "finger", "tftp", "curl"}

// pathWith returns a directory holding links to the real tools named,
// to be the whole PATH of the script.
func pathWith(t *testing.T, tools []string) string {
	t.Helper()
	// Not t.TempDir: its parent is 0700, closed to nobody.
	dir, err := os.MkdirTemp("", "need-path-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	testbed.Must(t, os.Chmod(dir, 0o755))
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s is not installed here (scripts/need test installs it as root): %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// need runs scripts/need as a user who is not root: as nobody when the
// test runs as root (through setpriv), so that it can never install.
func need(t *testing.T, path string, groups ...string) (stdout, stderr string, code int) {
	t.Helper()
	script, _ := filepath.Abs("need")
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", script}, groups...)...)
	} else {
		cmd = exec.Command(script, groups...)
	}
	cmd.Env = []string{"PATH=" + path, "LANG=C"}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if x, ok := err.(*exec.ExitError); ok {
		code = x.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// Without root, a missing tool stops it at once: one line naming every
// missing tool and the command that installs them, and exit 1.
func TestNeedNamesWhatIsMissing(t *testing.T) {
	testbed.RequirePrivileges(t)
	stdout, stderr, code := need(t, pathWith(t, testTools), "test")
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and nothing on stdout", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines, want one:\n%s", len(lines), stderr)
	}
	for _, want := range []string{"missing inetd keepalived xinetd ", "apt-get install -y --no-install-recommends keepalived openbsd-inetd, ",
		"xinetd unpacked from its .deb, never installed: it conflicts with openbsd-inetd"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("the line lacks %q:\n%s", want, lines[0])
		}
	}
}

// With every tool there it says nothing and lets make go on.
func TestNeedSilentWhenComplete(t *testing.T) {
	testbed.RequirePrivileges(t)
	stdout, stderr, code := need(t, pathWith(t, append(testTools, "inetd", "keepalived", "xinetd")), "test")
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 0 and no output", code, stdout, stderr)
	}
	// A misspelt group is an error, not a check of nothing.
	if _, stderr, code := need(t, pathWith(t, testTools), "tset"); code != 2 || !strings.Contains(stderr, "no group tset") {
		t.Errorf("a group that does not exist: exit %d, %q", code, stderr)
	}
}

// The README's commands check what they need first: `make test`, `make
// demo` and `make bench` each run scripts/need for their group before
// anything else (make applies no pattern rule to a .PHONY target, which
// once left need-% never run: both README commands then failed on a fresh
// machine, issue 21).
func TestMakeRunsNeed(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Fatalf("make is not installed: %v", err)
	}
	for _, target := range []string{"test", "demo", "bench"} {
		// Under make test this runs inside make: its MAKEFLAGS and
		// MAKELEVEL would add "Entering directory" lines.
		cmd := exec.Command(makeBin, "--no-print-directory", "-n", target)
		cmd.Dir = ".."
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=") || strings.HasPrefix(kv, "MFLAGS=")
		})
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n %s: %v\n%s", target, err, out)
		}
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if first != "scripts/need "+target {
			t.Errorf("make -n %s runs first %q, want scripts/need %s; all of it:\n%s", target, first, target, out)
		}
	}
}
