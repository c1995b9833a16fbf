package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func TestParseProfile(t *testing.T) {
	tests := []struct {
		text, err string
	}{
		{"about x y\nprogram /bin/ls\nmodule security/pam_unix.so\ndev\ndir /srv 0755\nfile /etc/x 0640\n\tline\n\n\tafter a blank? no\n", "p:9: a line starting with a tab belongs to a file directive"},
		{"colour red\n", `p:1: unknown directive "colour"`},
		{"program\n", "p:1: program takes 1 fields, not 0"},
		{"program bin/ls\n", `p:1: "bin/ls": an absolute, clean path`},
		{"program /usr/../bin/ls\n", "an absolute, clean path"},
		{"module /lib/x.so\n", `p:1: module "/lib/x.so": a clean path below a library directory`},
		{"module ../x.so\n", "a clean path below a library directory"},
		{"dir /srv 0775\n", `p:1: mode "0775": octal, within 7755`},
		{"file /etc/x 0755\n", `mode "0755": octal, within 0644`},
		{"file /etc/x 9\n", "octal"},
		{"user a:b 1 1 / /x\n", "a name is a lower-case letter"},
		{"user a 70000 1 / /x\n", `uid "70000": a number below 65536`},
		{"user a 1 1 home /x\n", `"home": an absolute, clean path`},
		{"include ../x\n", `include "../x": a profile's name`},
		{"\tstray\n", "p:1: a line starting with a tab"},
	}
	for _, tt := range tests {
		_, err := ParseProfile("p", tt.text)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: %v, want %q", tt.text, err, tt.err)
		}
	}
	p, err := ParseProfile("p", "# c\nabout a b\nfile /etc/x 0640\n\tone\n\ttwo\nuser tftp 100 101 /srv/tftp /usr/sbin/nologin\n")
	if err != nil || p.About != "a b" || len(p.Files) != 1 || p.Files[0].Content != "one\ntwo\n" || p.Files[0].Mode != 0o640 ||
		len(p.Users) != 1 || p.Users[0] != (ProfileUser{Name: "tftp", UID: 100, GID: 101, Home: "/srv/tftp", Shell: "/usr/sbin/nologin"}) {
		t.Errorf("%+v, %v", p, err)
	}
}

// Every shipped profile parses, with what it includes; an admin's
// profile takes precedence over the shipped one of its name, and one
// that does not parse is listed as broken.
func TestShippedProfiles(t *testing.T) {
	dir := t.TempDir()
	list, err := Profiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list {
		names = append(names, p.Name)
		if p.About == "" || p.Source != "shipped" {
			t.Errorf("%s: about %q, source %q", p.Name, p.About, p.Source)
		}
	}
	if got := strings.Join(names, " "); got != "base fingerd ftpd pam popa3d tftpd" {
		t.Errorf("shipped: %s", got)
	}
	ftpd, err := LoadProfile(dir, "ftpd")
	if err != nil || !ftpd.Dev || !strings.Contains(strings.Join(ftpd.Modules, " "), "security/pam_unix.so") || len(ftpd.Users) == 0 {
		t.Errorf("ftpd, with pam and base included: %+v, %v", ftpd, err)
	}
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "ftpd.profile"), []byte("about mine\nprogram /bin/true\n"), 0o644))
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "broken.profile"), []byte("nonsense\n"), 0o644))
	testbed.Must(t, os.WriteFile(filepath.Join(dir, "loop.profile"), []byte("include loop\n"), 0o644))
	if p, err := LoadProfile(dir, "ftpd"); err != nil || p.About != "mine" {
		t.Errorf("the admin's ftpd: %+v, %v", p, err)
	}
	if _, err := LoadProfile(dir, "broken"); err == nil || !strings.Contains(err.Error(), "broken.profile:1: unknown directive") {
		t.Errorf("broken: %v", err)
	}
	if _, err := LoadProfile(dir, "loop"); err == nil || !strings.Contains(err.Error(), "includes nest deeper than 4") {
		t.Errorf("loop: %v", err)
	}
	if _, err := LoadProfile(dir, "nosuch"); err == nil || !strings.Contains(err.Error(), "no profile nosuch") || !strings.Contains(err.Error(), "ftpd, loop, pam") {
		t.Errorf("nosuch: %v", err)
	}
	list, _ = Profiles(dir)
	for _, p := range list {
		if p.Name == "broken" && !strings.HasPrefix(p.About, "(broken: ") {
			t.Errorf("broken is listed as %q", p.About)
		}
	}
}

// A profile makes its directories, files and users; a second run changes
// nothing; a file an admin edited is kept (and said to differ), a user the
// root has is kept; a link a tenant planted where a file goes is refused.
func TestInstallProfile(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	p, err := ParseProfile("t", "dev\ndir /srv/x 0750\nfile /etc/motd 0640\n\thello\nuser svc 100 101 /srv/x /usr/sbin/nologin\nuser root 0 0 /root /bin/sh\n")
	testbed.Must(t, err)
	p.Name = "t"
	root := filepath.Join(roots.Dir, "missing", "parents", "p")
	if _, out, err := run(t, root, Options{Profiles: []*Profile{p}}); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	for _, d := range []string{filepath.Join(roots.Dir, "missing"), filepath.Join(roots.Dir, "missing", "parents"), root} {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil || st.Uid != 0 || st.Mode&0o7777 != 0o755 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("%s: mode %o uid %d, %v: want a directory of root's, 0755", d, st.Mode, st.Uid, err)
		}
	}
	check := func(rel string, mode uint32, content string) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, rel), &st); err != nil || st.Mode&0o7777 != mode || st.Uid != 0 {
			t.Errorf("%s: mode %o uid %d, %v, want %o", rel, st.Mode&0o7777, st.Uid, err, mode)
		}
		if content != "" {
			if b, _ := os.ReadFile(filepath.Join(root, rel)); string(b) != content {
				t.Errorf("%s: %q, want %q", rel, b, content)
			}
		}
	}
	check("srv/x", 0o750, "")
	check("etc/motd", 0o640, "hello\n")
	check("etc/passwd", 0o644, "svc:x:100:101::/srv/x:/usr/sbin/nologin\nroot:x:0:0::/root:/bin/sh\n")
	check("etc/group", 0o644, "svc:x:101:\nroot:x:0:\n")
	check("dev/null", 0o666, "")
	if n, out, err := run(t, root, Options{Profiles: []*Profile{p}}); err != nil || n != 0 {
		t.Errorf("a second run: %d changes, %v:\n%s", n, err, out)
	}

	// The admin's edits stay.
	testbed.Must(t, os.WriteFile(filepath.Join(root, "etc/motd"), []byte("mine\n"), 0o644))
	testbed.Must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("svc:x:200:200::/:/bin/sh\n"), 0o644))
	if n, out, err := run(t, root, Options{Profiles: []*Profile{p}}); err != nil || !strings.Contains(out, "keep "+root+"/etc/motd: it differs from profile t's") ||
		strings.Contains(out, "svc:x:100") || n != 1 { // the one change: root's line
		t.Errorf("edited files: %d changes, %v:\n%s", n, err, out)
	}
	// A tenant's link where a file goes.
	testbed.Must(t, os.Remove(filepath.Join(root, "etc/motd")))
	testbed.Must(t, os.Symlink("/etc/shadow", filepath.Join(root, "etc/motd")))
	if _, _, err := run(t, root, Options{Profiles: []*Profile{p}}); err == nil || !strings.Contains(err.Error(), "etc/motd is a symbolic link to /etc/shadow where install needs a regular file: refused") {
		t.Errorf("a link at etc/motd: %v", err)
	}
}
