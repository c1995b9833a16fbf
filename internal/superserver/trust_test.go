package superserver

import (
	"os"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

// A file that someone other than root could have written is never read:
// it is a problem with its reason. A source that is not there is none.
func TestUntrusted(t *testing.T) {
	const line = "ftp stream tcp nowait root /usr/sbin/virtuald virtuald /c p\n"
	for _, c := range []struct {
		name   string
		root   bool // needs root (to give a file away)
		setup  func(t *testing.T, dir string) Sources
		reason string // of the one problem; "" for none
		from   string
	}{
		{name: "absent", setup: func(t *testing.T, dir string) Sources {
			return Sources{InetdConf: dir + "/inetd.conf", XinetdConf: dir + "/none/xinetd.conf", SystemdDirs: []string{dir + "/none"}}
		}},
		{name: "group-writable", setup: func(t *testing.T, dir string) Sources {
			write(t, dir+"/inetd.conf", line)
			chmod(t, dir+"/inetd.conf", 0o664)
			return Sources{InetdConf: dir + "/inetd.conf"}
		}, from: "inetd.conf", reason: "is writable by group or others (mode 0664)"},
		{name: "in a group-writable directory", setup: func(t *testing.T, dir string) Sources {
			write(t, dir+"/etc/inetd.conf", line)
			chmod(t, dir+"/etc", 0o775)
			return Sources{InetdConf: dir + "/etc/inetd.conf"}
		}, from: "etc/inetd.conf", reason: "its directory is not safe: " + "DIR/etc is writable by group or others (mode 0775)"},
		{name: "someone else's", root: true, setup: func(t *testing.T, dir string) Sources {
			write(t, dir+"/inetd.conf", line)
			if err := os.Chown(dir+"/inetd.conf", 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return Sources{InetdConf: dir + "/inetd.conf"}
		}, from: "inetd.conf", reason: "is owned by uid 65534, not by root"},
		{name: "a symbolic link", setup: func(t *testing.T, dir string) Sources {
			write(t, dir+"/real", line)
			if err := os.Symlink(dir+"/real", dir+"/inetd.conf"); err != nil {
				t.Fatal(err)
			}
			return Sources{InetdConf: dir + "/inetd.conf"}
		}, from: "inetd.conf", reason: "is a symbolic link"},
		{name: "a NUL byte", setup: func(t *testing.T, dir string) Sources {
			write(t, dir+"/inetd.conf", line+line+"\x00"+line)
			return Sources{InetdConf: dir + "/inetd.conf"}
		}, from: "inetd.conf:3", reason: "holds a NUL byte: this is not a text file"},
		{name: "too large", setup: func(t *testing.T, dir string) Sources {
			write(t, dir+"/inetd.conf", line+strings.Repeat("#", MaxFileSize))
			return Sources{InetdConf: dir + "/inetd.conf"}
		}, from: "inetd.conf", reason: "is 1048636 bytes; the limit is 1048576"},
		{name: "a unit directory writable by others", setup: func(t *testing.T, dir string) Sources {
			write(t, dir+"/units/v.socket", "[Socket]\nListenStream=21\n")
			chmod(t, dir+"/units", 0o777)
			return Sources{SystemdDirs: []string{dir + "/units"}}
		}, from: "units", reason: "is not safe to read: DIR/units is writable by group or others (mode 0777)"},
		{name: "one xinetd file of several", setup: func(t *testing.T, dir string) Sources {
			svc := "service ftp\n{\n socket_type = stream\n server = /usr/sbin/virtuald\n server_args = /c p\n}\n"
			write(t, dir+"/xinetd.d/a", svc)
			write(t, dir+"/xinetd.d/b", svc)
			chmod(t, dir+"/xinetd.d/a", 0o666)
			write(t, dir+"/xinetd.conf", "includedir "+dir+"/xinetd.d\n")
			return Sources{XinetdConf: dir + "/xinetd.conf"}
		}, from: "xinetd.d/a", reason: "is writable by group or others (mode 0666)"},
		// A merged /usr: /lib is root's own link to usr/lib, in a
		// directory nobody else can write. Units read through it are
		// root's as surely as through their real path.
		{name: "a unit directory through root's own link", setup: func(t *testing.T, dir string) Sources {
			mergedUsr(t, dir)
			return Sources{SystemdDirs: []string{dir + "/lib/systemd/system"}}
		}},
		{name: "a unit directory through someone else's link", root: true, setup: func(t *testing.T, dir string) Sources {
			mergedUsr(t, dir)
			if err := os.Lchown(dir+"/lib", 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return Sources{SystemdDirs: []string{dir + "/lib/systemd/system"}}
		}, from: "lib/systemd/system", reason: "is not safe to read: DIR/lib is a symbolic link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.root {
				testbed.RequirePrivileges(t)
			}
			dir := t.TempDir()
			got, problems := Find(c.setup(t, dir))
			for i := range problems {
				problems[i].From = strings.TrimPrefix(problems[i].From, dir+"/")
				problems[i].Reason = strings.ReplaceAll(problems[i].Reason, dir, "DIR")
			}
			switch {
			case c.reason == "" && len(problems) > 0:
				t.Errorf("problems %q, want none", problems)
			case c.reason != "" && (len(problems) != 1 || problems[0] != Problem{c.from, c.reason}):
				t.Errorf("problems %q, want %s: %s", problems, c.from, c.reason)
			}
			for _, s := range got {
				if strings.HasPrefix(s.From, dir+"/"+c.from) && c.reason != "" {
					t.Errorf("read the refused file: %+v", s)
				}
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// mergedUsr makes dir/usr/lib/systemd/system with a socket unit and its
// service that runs virtuald, and dir/lib, a link to usr/lib, as Debian's
// merged /usr has it.
func mergedUsr(t *testing.T, dir string) {
	t.Helper()
	write(t, dir+"/usr/lib/systemd/system/v.socket", "[Socket]\nListenStream=21\nAccept=yes\n")
	write(t, dir+"/usr/lib/systemd/system/v@.service", "[Service]\nExecStart=/usr/sbin/virtuald virtuald /c /p\nStandardInput=socket\n")
	if err := os.Symlink("usr/lib", dir+"/lib"); err != nil {
		t.Fatal(err)
	}
}
