package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/relay"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// The tests of dist/ipwatchd.service, the unit `make install` ships. No
// systemd runs as PID 1 where they run, so they check the unit offline:
// systemd-analyze verify and security, and the places the daemon writes
// against the places the unit lets it write.

// unitSource is the unit as it is in the repository, @SBINDIR@ and all.
const unitSource = "../../dist/ipwatchd.service"

// maxExposure is the overall exposure `systemd-analyze security
// --offline=true` gives the unit (systemd 252; README records it). The
// score goes in steps of 0.1, so any step up fails. Lower it when the unit
// gets better; raise it only with a reason in the unit and in README.
const maxExposure = 2.0

// unitName is the name the unit is checked under: not ipwatchd.service, so
// that an ipwatchd installed on the machine, and its drop-ins, do not mix
// with the unit under test.
const unitName = "ipwatchd-unittest.service"

// systemdAnalyze returns the path of systemd-analyze (testbed.RequireTool).
func systemdAnalyze(t *testing.T) string { return testbed.RequireTool(t, "systemd-analyze") }

// installedUnit writes the unit as `make install` would, with @SBINDIR@
// replaced by the directory of a freshly built ipwatchd (systemd-analyze
// checks that every command exists), and returns its path.
func installedUnit(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(unitSource)
	if err != nil {
		t.Fatal(err)
	}
	sbindir := filepath.Dir(testbed.Binaries(t)["ipwatchd"])
	unit := strings.ReplaceAll(string(src), "@SBINDIR@", sbindir)
	// The Makefile substitutes @SBINDIR@ only: any other placeholder
	// would be installed as it is.
	if p := regexp.MustCompile(`@[A-Z_]+@`).FindString(unit); p != "" {
		t.Fatalf("%s: %s is not substituted by make install", unitSource, p)
	}
	path := filepath.Join(t.TempDir(), unitName)
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func analyze(sa string, args ...string) ([]byte, error) {
	cmd := exec.Command(sa, append([]string{"--no-pager"}, args...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_LOG_COLOR=0")
	return cmd.CombinedOutput()
}

// otherUnit matches a message that systemd-analyze prints about another
// unit (one the unit orders itself against, for instance): "NAME.TYPE:" or
// "/PATH/NAME.TYPE:LINE:" at the start.
var otherUnit = regexp.MustCompile(`^(?:\S*/)?([^/\s:]+\.(?:service|socket|target|mount|automount|swap|path|timer|slice|scope|device))(?::\d+)?:`)

// TestUnitVerify: systemd-analyze verify finds nothing wrong with the unit.
// Not every warning changes its exit status (an unknown key does not,
// without --recursive-errors=no), so any line it prints about the unit
// fails the test; lines about other units of the machine are only logged.
// --man=no: the Documentation= page is inetd's, from another package.
func TestUnitVerify(t *testing.T) {
	sa := systemdAnalyze(t)
	path := installedUnit(t)
	out, err := analyze(sa, "verify", "--man=no", "--recursive-errors=no", path)
	var ours []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if m := otherUnit.FindStringSubmatch(line); m != nil && m[1] != unitName {
			t.Logf("about another unit, not ours: %s", line)
			continue
		}
		ours = append(ours, line)
	}
	if err != nil || len(ours) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitSource, err, strings.Join(ours, "\n"))
	}
	// verify does not look for the program of a command whose failure is
	// ignored ("-"): look for every one.
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(string(text))
	for _, key := range []string{"ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost"} {
		for _, cmd := range u.list("Service", key) {
			args := strings.Fields(strings.TrimLeft(cmd, execPrefixes))
			if len(args) == 0 {
				t.Errorf("%s=%s: no command", key, cmd)
				continue
			}
			prog := args[0]
			if st, err := os.Stat(prog); err != nil || st.Mode()&0o111 == 0 || !st.Mode().IsRegular() {
				t.Errorf("%s=%s: %s is not an executable file here (%v)", key, cmd, prog, err)
			}
		}
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9]+)`)

// TestUnitExposure: the overall exposure systemd-analyze security gives
// the unit is no worse than maxExposure.
func TestUnitExposure(t *testing.T) {
	sa := systemdAnalyze(t)
	path := installedUnit(t)
	out, err := analyze(sa, "security", "--offline=true", path)
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true (systemd 250 or later): %v\n%s", err, out)
	}
	m := exposureLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in the output of systemd-analyze security:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("overall exposure %.1f (at most %.1f)", score, maxExposure)
	if score > maxExposure {
		var open []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "✗") {
				open = append(open, l)
			}
		}
		t.Fatalf("%s: overall exposure %.1f, more than %.1f; what is exposed:\n%s",
			unitSource, score, maxExposure, strings.Join(open, "\n"))
	}
}

// TestUnitWritablePaths: every place the daemon writes with the features
// the unit turns on is writable under the unit, and nothing else is. The
// unit runs ipwatchd without -socket or -bpf-pin-dir, so the daemon writes
// its socket in ipc.DefaultSocket's directory and its pins in
// bpf.DefaultPinDir (-bpf auto), and with -relay-syslog the dev/log of
// roots below relay.UnitRootsDir; the metrics, netlink and the conf files
// write nothing. A change of either constant without the unit, or of the
// unit without the code, fails here.
func TestUnitWritablePaths(t *testing.T) {
	src, err := os.ReadFile(unitSource)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(string(src))
	one := func(key string) string {
		v := u.values("Service", key)
		if len(v) == 0 {
			return ""
		}
		return v[len(v)-1]
	}

	// ProtectSystem=strict makes the whole tree read-only but for the
	// API file systems, which the other settings below close.
	for key, allowed := range map[string][]string{
		"ProtectSystem":         {"strict"},
		"ProtectHome":           {"yes", "read-only", "tmpfs"},
		"PrivateTmp":            {"yes"},
		"PrivateDevices":        {"yes"},
		"ProtectKernelTunables": {"yes"}, // /sys and /proc/sys, and /sys/fs/bpf
		"ProtectControlGroups":  {"yes"},
	} {
		if v := one(key); !slices.Contains(allowed, v) {
			t.Errorf("%s=%q; want one of %q, or more than the paths below is writable", key, v, allowed)
		}
	}
	for _, key := range []string{"StateDirectory", "CacheDirectory", "LogsDirectory", "ConfigurationDirectory",
		"BindPaths", "ReadWriteDirectories"} {
		if v := u.list("Service", key); len(v) > 0 {
			t.Errorf("%s=%q makes a place writable that no feature of ipwatchd writes", key, v)
		}
	}

	// The socket: its directory is the unit's RuntimeDirectory, which
	// must pass the server's rule (no group or other write).
	sockDir := filepath.Dir(ipc.DefaultSocket)
	var runtimeDirs []string
	for _, d := range u.list("Service", "RuntimeDirectory") {
		runtimeDirs = append(runtimeDirs, filepath.Join("/run", d))
	}
	if !slices.Equal(runtimeDirs, []string{sockDir}) {
		t.Errorf("RuntimeDirectory= gives %q; the socket (ipc.DefaultSocket %s) needs exactly %s",
			runtimeDirs, ipc.DefaultSocket, sockDir)
	}
	if m := one("RuntimeDirectoryMode"); m != "" {
		if mode, err := strconv.ParseUint(m, 8, 32); err != nil || mode&0o022 != 0 {
			t.Errorf("RuntimeDirectoryMode=%s: the server refuses a socket directory writable by group or others", m)
		}
	}

	// The pins: bpf.DefaultPinDir, and only it, in ReadWritePaths. It
	// must lie below /sys/fs/bpf: ProtectKernelTunables= mounts
	// /sys/fs/bpf itself read-only, and wins over ReadWritePaths= of that
	// same path.
	var rw []string
	for _, p := range u.list("Service", "ReadWritePaths") {
		rw = append(rw, strings.TrimLeft(p, "-+"))
	}
	// The log relay, which the unit turns on, binds dev/log in roots
	// below relay.UnitRootsDir.
	want := []string{bpf.DefaultPinDir}
	if strings.Contains(one("ExecStart"), " -relay-syslog") {
		want = append(want, relay.UnitRootsDir)
	}
	if !slices.Equal(rw, want) {
		t.Errorf("ReadWritePaths=%q; the pins (bpf.DefaultPinDir) and the log relay's roots need exactly %q", rw, want)
	}
	if !strings.HasPrefix(bpf.DefaultPinDir, "/sys/fs/bpf/") {
		t.Errorf("bpf.DefaultPinDir %s is not below /sys/fs/bpf", bpf.DefaultPinDir)
	}
	// ReadWritePaths= needs the directory before the sandbox is built:
	// an ExecStartPre= outside it ("+") makes it.
	made := false
	for _, cmd := range u.list("Service", "ExecStartPre") {
		prefix := cmd[:len(cmd)-len(strings.TrimLeft(cmd, execPrefixes))]
		args := strings.Fields(strings.TrimLeft(cmd, execPrefixes))
		if strings.Contains(prefix, "+") && len(args) > 0 && args[len(args)-1] == bpf.DefaultPinDir && filepath.Base(args[0]) == "mkdir" {
			made = true
		}
	}
	if !made {
		t.Errorf("no ExecStartPre=+ makes %s before the sandbox is built; ReadWritePaths= needs it to exist", bpf.DefaultPinDir)
	}
}

// execPrefixes are the characters that may start a command line of a
// unit ("-" ignore failure, "+" full privileges, and the like).
const execPrefixes = "-+@:!|"

// unitFile is a unit file parsed as systemd reads it, for the settings
// these tests look at: per section, each key's assignments in order.
type unitFile map[string]map[string][]string

func parseUnit(text string) unitFile {
	u := unitFile{}
	section := ""
	var cont string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont = strings.TrimSuffix(line, "\\")
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			section = line[1 : len(line)-1]
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if u[section] == nil {
			u[section] = map[string][]string{}
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u
}

func (u unitFile) values(section, key string) []string { return u[section][key] }

// list is a list setting: assignments add to it, an empty one empties it.
// Exec lines are one item each; other settings split on white space.
func (u unitFile) list(section, key string) []string {
	var out []string
	for _, v := range u.values(section, key) {
		switch {
		case v == "":
			out = nil
		case strings.HasPrefix(key, "Exec"):
			out = append(out, v)
		default:
			out = append(out, strings.Fields(v)...)
		}
	}
	return out
}

// The unit's ExecStartPre= that makes the pin directory runs as full
// root, in /sys/fs/bpf, which is often mode 1777: a local user may have
// planted a symbolic link there (issue 20 item 4). Run as the unit runs
// it, in a private mount namespace with a fresh sticky bpffs, it must
// leave the link's target alone (install -d chmod'ed it to 0700).
func TestUnitPinDirPlantedLink(t *testing.T) {
	testbed.RequirePrivileges(t)
	if !testbed.PrivateMounts(t) {
		return
	}
	src, err := os.ReadFile(unitSource)
	testbed.Must(t, err)
	var argv []string
	for _, cmd := range parseUnit(string(src)).list("Service", "ExecStartPre") {
		if args := strings.Fields(strings.TrimLeft(cmd, execPrefixes)); len(args) > 0 && args[len(args)-1] == bpf.DefaultPinDir {
			argv = args
		}
	}
	if argv == nil {
		t.Fatalf("no ExecStartPre= makes %s", bpf.DefaultPinDir)
	}
	testbed.Must(t, unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=1777"))
	// Following a user's link in a sticky directory is what
	// fs.protected_symlinks forbids; many hosts have it off.
	const protected = "/proc/sys/fs/protected_symlinks"
	if was, err := os.ReadFile(protected); err == nil {
		testbed.Must(t, os.WriteFile(protected, []byte("0"), 0o644))
		t.Cleanup(func() { os.WriteFile(protected, was, 0o644) })
	}
	target := t.TempDir()
	testbed.Must(t, os.Chmod(target, 0o755))
	testbed.Must(t, os.Symlink(target, bpf.DefaultPinDir))
	testbed.Must(t, unix.Lchown(bpf.DefaultPinDir, 1000, 1000))
	exec.Command(argv[0], argv[1:]...).Run() // "-": its failure is ignored
	var st unix.Stat_t
	testbed.Must(t, unix.Stat(target, &st))
	if st.Mode&0o7777 != 0o755 || st.Uid != 0 {
		t.Errorf("%s followed the planted link: its target is now mode %04o, uid %d", strings.Join(argv, " "), st.Mode&0o7777, st.Uid)
	}
	if fi, err := os.Lstat(bpf.DefaultPinDir); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the planted link: %v, %v", fi, err)
	}
}
