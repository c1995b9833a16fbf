package install

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func TestAddAndDelUser(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	root := roots.Root("users", "")
	var out bytes.Buffer
	testbed.Must(t, AddUser(root, User{Name: "alice", UID: -1, Hash: "$6$s$h", Gecos: "Alice A."}, &out))
	testbed.Must(t, AddUser(root, User{Name: "bob", UID: -1, Home: "/srv/bob", Shell: "/usr/sbin/nologin"}, &out))
	read := func(rel string) string {
		b, _ := os.ReadFile(filepath.Join(root, rel))
		return string(b)
	}
	if got := read("etc/passwd"); got != "alice:x:1000:1000:Alice A.:/home/alice:/bin/sh\nbob:x:1001:1001::/srv/bob:/usr/sbin/nologin\n" {
		t.Errorf("etc/passwd:\n%s", got)
	}
	if got := read("etc/group"); got != "alice:x:1000:\nbob:x:1001:\n" {
		t.Errorf("etc/group:\n%s", got)
	}
	shadow := read("etc/shadow")
	if !strings.HasPrefix(shadow, "alice:$6$s$h:") || !strings.Contains(shadow, "\nbob:!:") {
		t.Errorf("etc/shadow:\n%s", shadow)
	}
	var st unix.Stat_t
	if unix.Stat(filepath.Join(root, "etc/shadow"), &st); st.Mode&0o777 != 0o640 || st.Uid != 0 {
		t.Errorf("etc/shadow: mode %o uid %d, want 0640 root's", st.Mode&0o777, st.Uid)
	}
	if unix.Lstat(filepath.Join(root, "home/alice"), &st); st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o777 != 0o700 || st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("home/alice: mode %o, %d:%d, want alice's 0700 directory", st.Mode, st.Uid, st.Gid)
	}
	if unix.Lstat(filepath.Join(root, "home"), &st); st.Uid != 0 || st.Mode&0o777 != 0o755 {
		t.Errorf("home: mode %o uid %d, want root's 0755", st.Mode&0o777, st.Uid)
	}

	for _, tt := range []struct {
		u    User
		want string
	}{
		{User{Name: "alice", UID: -1}, "user alice exists"},
		{User{Name: "carol", UID: 1001}, "id 1001 is taken"},
		{User{Name: "Carol", UID: -1}, "a name is a lower-case letter"},
		{User{Name: "carol", UID: 70000}, "a root's ids are below 65536"},
		{User{Name: "carol", UID: -1, Home: "home/carol"}, "an absolute, clean path"},
		{User{Name: "carol", UID: -1, Hash: "a:b"}, "no ':'"},
		{User{Name: "carol", UID: -1, Gecos: "a\nb"}, "a full name holds no ':'"},
	} {
		if err := AddUser(root, tt.u, &out); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.u, err, tt.want)
		}
	}
	if err := AddUser(filepath.Join(roots.Dir, "none"), User{Name: "x", UID: -1}, &out); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("a missing root: %v", err)
	}

	// A tenant's traps: a link where etc/shadow is, a link where the
	// home goes. Nothing changes, nothing outside is touched.
	before := read("etc/passwd")
	testbed.Must(t, os.Rename(filepath.Join(root, "etc/shadow"), filepath.Join(root, "etc/shadow.real")))
	testbed.Must(t, os.Symlink("/etc/shadow", filepath.Join(root, "etc/shadow")))
	if err := AddUser(root, User{Name: "carol", UID: -1}, &out); err == nil || !strings.Contains(err.Error(), "is a symbolic link to /etc/shadow") {
		t.Errorf("etc/shadow a link: %v", err)
	}
	testbed.Must(t, os.Remove(filepath.Join(root, "etc/shadow")))
	testbed.Must(t, os.Rename(filepath.Join(root, "etc/shadow.real"), filepath.Join(root, "etc/shadow")))
	outside := t.TempDir()
	testbed.Must(t, os.Symlink(outside, filepath.Join(root, "home/carol")))
	if err := AddUser(root, User{Name: "carol", UID: -1}, &out); err == nil || !strings.Contains(err.Error(), "home/carol is a symbolic link") {
		t.Errorf("home/carol a link: %v", err)
	}
	if got := read("etc/passwd"); got != before {
		t.Errorf("a refused adduser changed etc/passwd:\n%s", got)
	}
	if unix.Stat(outside, &st); st.Uid != 0 {
		t.Errorf("the directory outside the root is now uid %d's", st.Uid)
	}

	// deluser: the lines go, alice leaves the groups she was in; her home stays.
	testbed.Must(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte(read("etc/group")+"ftp:x:50:alice,bob\n"), 0o644))
	out.Reset()
	testbed.Must(t, DelUser(root, "alice", &out))
	if got := read("etc/passwd"); strings.Contains(got, "alice") || !strings.Contains(got, "bob:") {
		t.Errorf("etc/passwd after deluser:\n%s", got)
	}
	if got := read("etc/group"); got != "bob:x:1001:\nftp:x:50:bob\n" {
		t.Errorf("etc/group after deluser:\n%s", got)
	}
	if got := read("etc/shadow"); strings.Contains(got, "alice") {
		t.Errorf("etc/shadow after deluser:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(root, "home/alice")); err != nil || !strings.Contains(out.String(), "kept "+root+"/home/alice") {
		t.Errorf("home/alice after deluser: %v; %s", err, out.String())
	}
	if err := DelUser(root, "alice", &out); err == nil || !strings.Contains(err.Error(), "user alice is not in") {
		t.Errorf("deluser twice: %v", err)
	}
	// The last user gone, the files are empty, without a blank line.
	testbed.Must(t, DelUser(root, "bob", &out))
	if got := read("etc/passwd"); got != "" {
		t.Errorf("etc/passwd without users: %q", got)
	}
}
