package superserver

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Socket units and the services they start, in two directories: the
// earlier one's unit overrides, drop-ins (the earlier directory's file
// winning a name) reset and replace ExecStart= and set PATH, a socket
// with Accept=yes starts the template, and a mask or a link changes
// which file is read.
func TestSystemd(t *testing.T) {
	imap := Service{From: "lib/virtuald-imap.service", SuperServer: "systemd", Name: "virtuald-imap.socket", Conf: "/etc/virtuald/conf.imap", Program: "/usr/sbin/imapd", Args: []string{"/usr/sbin/imapd"}, Transport: "tcp", Port: 143, Path: systemdPath}
	imapProblem := Problem{"lib/virtuald-imap.service", "virtuald gets a listening socket but has no -accept: it refuses to serve it"}
	pop3 := Service{From: "lib/virtuald-pop3@.service", SuperServer: "systemd", Name: "virtuald-pop3.socket", Conf: "/etc/virtuald/conf pop", Program: "/usr/sbin/in.pop3d", Args: []string{"/usr/sbin/in.pop3d", "-d"}, Transport: "tcp", Port: 110, Path: "/usr/sbin:/usr/bin"}
	pop3v6 := pop3
	pop3v6.Address = addr("2001:db8::10")
	tftp := Service{From: "lib/virtuald-tftp.service", SuperServer: "systemd", Name: "virtuald-tftp.socket", Conf: "/etc/virtuald/conf.tftp", Program: "/usr/sbin/in.tftpd", Args: []string{"/usr/sbin/in.tftpd", "-s", "/srv/tftp"}, Transport: "udp", Port: 69, Address: addr("192.0.2.11"), Path: systemdPath}
	for _, c := range []struct {
		name     string
		change   func(t *testing.T, dir string)
		want     []Service
		problems []Problem
	}{
		{"as written", nil, []Service{imap, pop3, pop3v6, tftp}, []Problem{imapProblem}},
		{"masked", func(t *testing.T, dir string) {
			if err := os.Symlink("/dev/null", filepath.Join(dir, "etc/virtuald-imap.socket")); err != nil {
				t.Fatal(err)
			}
		}, []Service{pop3, pop3v6, tftp}, nil},
		{"a link to another file", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "elsewhere/imap.service"), "[Service]\nExecStart=-+@/usr/sbin/virtuald virtuald -accept /etc/virtuald/conf.imap imapd\n")
			if err := os.Symlink(filepath.Join(dir, "elsewhere/imap.service"), filepath.Join(dir, "etc/virtuald-imap.service")); err != nil {
				t.Fatal(err)
			}
		}, []Service{{From: "elsewhere/imap.service", SuperServer: "systemd", Name: "virtuald-imap.socket", Conf: "/etc/virtuald/conf.imap", Program: "imapd", Args: []string{"imapd"}, Accept: true, Transport: "tcp", Port: 143, Path: systemdPath}, pop3, pop3v6, tftp}, nil},
		{"a drop-in for the socket", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "etc/virtuald-tftp.socket.d/more.conf"), "[Socket]\nListenDatagram=\nListenDatagram=0.0.0.0:6969\nListenDatagram=/run/tftp.sock\n")
		}, []Service{imap, pop3, pop3v6, func() Service { s := tftp; s.Address, s.Port = netipZero, 6969; return s }()},
			[]Problem{imapProblem, {"etc/virtuald-tftp.socket", "ListenDatagram=/run/tftp.sock: is a Unix socket: it has no address for virtuald to resolve"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := install(t, "testdata/systemd")
			if c.change != nil {
				c.change(t, dir)
			}
			got, problems := Find(Sources{SystemdDirs: []string{filepath.Join(dir, "etc"), filepath.Join(dir, "lib")}})
			check(t, dir, got, problems, c.want, c.problems)
		})
	}
}

// ExecStart= words as systemd splits them.
func TestSplitCommand(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: `/usr/sbin/virtuald /c p -l`, want: []string{"/usr/sbin/virtuald", "/c", "p", "-l"}},
		{in: `a "b c" 'd e'f`, want: []string{"a", "b c", "d ef"}},
		{in: `a\sb \x41 \101 c\\d "\""`, want: []string{"a b", "A", "A", `c\d`, `"`}},
		{in: `100%% $$HOME`, want: []string{"100%", "$HOME"}},
		{in: `/etc/virtuald/conf.%i`, err: true},
		{in: `$CONF`, err: true},
		{in: `"open`, err: true},
		{in: `a\`, err: true},
		{in: `a\q`, err: true},
	} {
		got, err := splitCommand(c.in)
		if (err != nil) != c.err || !slices.Equal(got, c.want) {
			t.Errorf("%s: %q %v, want %q (error: %v)", c.in, got, err, c.want, c.err)
		}
	}
}

// A unit file's lines as systemd reads them: sections, both kinds of
// comment, a backslash that joins the next line with a space (skipping
// comments between), an empty assignment that empties a list.
func TestParseUnit(t *testing.T) {
	u := &unit{}
	u.parseUnit("# c\n[Service]\n; c\nExecStart=/a\\\n# skipped\n/b\nEnvironment=A=1\n  Environment = \nEnvironment=B=2\n[Socket]\nEnvironment=C=3\n")
	for _, c := range []struct {
		section, key string
		want         []string
	}{
		{"Service", "ExecStart", []string{"/a /b"}},
		{"Service", "Environment", []string{"B=2"}},
		{"Socket", "Environment", []string{"C=3"}},
	} {
		if got := u.list(c.section, c.key); !slices.Equal(got, c.want) {
			t.Errorf("[%s] %s: %q, want %q", c.section, c.key, got, c.want)
		}
	}
}
