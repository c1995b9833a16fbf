package superserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// xinetd's main file with defaults and an includedir of Debian-style
// service files: internal and disabled services, defaults' disabled
// list, names xinetd skips (a dot, a trailing ~), tcpd with NAMEINARGS,
// += on server_args, env and passenv.
func TestXinetdFiles(t *testing.T) {
	dir := install(t, "testdata")
	in, err := os.ReadFile(filepath.Join(dir, "xinetd.conf.in"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "xinetd.conf"), strings.ReplaceAll(string(in), "@DIR@", dir))
	got, problems := Find(Sources{XinetdConf: filepath.Join(dir, "xinetd.conf"), Services: filepath.Join(dir, "services")})
	check(t, dir, got, problems, []Service{
		{From: "xinetd.d/custom:2", SuperServer: "xinetd", Name: "virtual-finger", Conf: "/etc/virtuald/conf.finger", Program: "in.fingerd", Args: []string{"in.fingerd", "-l"}, Transport: "tcp", Port: 7979, Path: systemdPath},
		{From: "xinetd.d/ftp:3", SuperServer: "xinetd", Name: "ftp", Conf: "/etc/virtuald/conf.ftp", Program: "/usr/sbin/in.ftpd", Args: []string{"/usr/sbin/in.ftpd", "-l"}, Transport: "tcp", Port: 21, Path: systemdPath},
		{From: "xinetd.d/pop3:2", SuperServer: "xinetd", Name: "pop3", Conf: "/etc/virtuald/conf.pop", Program: "/usr/sbin/in.pop3d", Args: []string{"/usr/sbin/in.pop3d"}, Accept: true, Transport: "tcp", Port: 110, Address: addr("192.0.2.20"), Path: "/usr/sbin:/usr/bin"},
		{From: "xinetd.d/tftp:1", SuperServer: "xinetd", Name: "tftp", Conf: "/etc/virtuald/conf.tftp", Program: "/usr/sbin/in.tftpd", Args: []string{"/usr/sbin/in.tftpd", "-s", "/srv/tftp"}, Transport: "udp", Port: 69},
	}, nil)
}

// The rules of xinetd's format one block at a time.
func TestXinetd(t *testing.T) {
	block := func(attrs ...string) string {
		return "service ftp\n{\n\tsocket_type = stream\n\twait = no\n\tserver = /usr/sbin/virtuald\n\t" + strings.Join(attrs, "\n\t") + "\n}\n"
	}
	ftp := func(change func(*Service)) Service {
		s := Service{From: "x:1", SuperServer: "xinetd", Name: "ftp", Conf: "/c", Program: "p", Args: []string{"p"}, Transport: "tcp", Port: 21, Path: systemdPath}
		if change != nil {
			change(&s)
		}
		return s
	}
	for _, c := range []struct {
		name     string
		text     string
		want     []Service
		problems []Problem
	}{
		{"plain", block("server_args = /c p"), []Service{ftp(nil)}, nil},
		{"argv[0] is the server's base name", block("server_args = -accept /c p", "wait = yes"), []Service{ftp(func(s *Service) { s.Accept = true })}, nil},
		{"disabled", block("server_args = /c p", "disable = yes"), nil, nil},
		{"disabled by defaults", "defaults\n{\n disabled = ftp\n}\n" + block("server_args = /c p"), nil, nil},
		{"not enabled by defaults", "defaults\n{\n enabled = other\n}\n" + block("server_args = /c p"), nil, nil},
		{"enabled by its id", "defaults\n{\n enabled = f1\n}\n" + block("server_args = /c p", "id = f1"), []Service{ftp(func(s *Service) { s.From = "x:5" })}, nil},
		{"+= and -=", block("server_args = /c p", "passenv = LANG", "passenv += PATH TZ", "passenv -= PATH"), []Service{ftp(func(s *Service) { s.Path = "" })}, nil},
		{"+= where xinetd takes only =", block("server_args = /c", "server_args += p"), nil, []Problem{{"x:1", "xinetd refuses this service: x:7: += is not for server_args"}}},
		{"bind and the defaults' bind", "defaults\n{\n bind = 192.0.2.9\n}\n" + block("server_args = /c p") + block("server_args = /c p", "interface = 2001:db8::1"),
			[]Service{ftp(func(s *Service) { s.From, s.Address = "x:5", addr("192.0.2.9") }), ftp(func(s *Service) { s.From, s.Address = "x:12", addr("2001:db8::1") })}, nil},
		{"NAMEINARGS without tcpd", block("flags = NAMEINARGS", "server_args = virtuald /c p"), []Service{ftp(nil)}, nil},
		{"tcpd without NAMEINARGS runs tcpd", "service ftp\n{\n server = /usr/sbin/tcpd\n server_args = /usr/sbin/virtuald /c p\n}\n", nil, nil},
		{"an unlisted port", block("server_args = /c p", "port = 2121"), []Service{ftp(func(s *Service) { s.Port = 2121 })}, nil},
		{"a bad port", block("server_args = /c p", "port = ftp"), nil, []Problem{{"x:1", "port ftp is not a number"}}},
		{"udp by socket type", "service tftp\n{\n socket_type = dgram\n wait = yes\n server = /usr/sbin/virtuald\n server_args = /c p\n}\n",
			[]Service{ftp(func(s *Service) { s.Name, s.Transport, s.Port = "tftp", "udp", 69 })}, nil},
		{"passenv without PATH", block("server_args = /c p", "passenv = LANG"), []Service{ftp(func(s *Service) { s.Path = "" })}, nil},
		{"the defaults' passenv", "defaults\n{\n passenv = PATH\n}\n" + block("server_args = /c p", "passenv ="), []Service{ftp(func(s *Service) { s.From = "x:5" })}, nil},
		{"env's PATH", block("server_args = /c p", "env = LANG=C PATH=/sbin"), []Service{ftp(func(s *Service) { s.Path = "/sbin" })}, nil},
		{"env's PATH beside passenv", block("server_args = /c p", "env = PATH=/sbin", "passenv = LANG"), []Service{ftp(func(s *Service) { s.Path = "/sbin" })}, nil},
		{"internal", block("server_args = /c p", "type = INTERNAL"), nil, nil},
		{"redirected", block("server_args = /c p", "redirect = 192.0.2.1 21"), nil, nil},
		{"the brace on the service line", "service ftp {\n server = /usr/sbin/virtuald\n socket_type = stream\n server_args = /c p\n}\n", []Service{ftp(nil)}, nil},
		{"no brace", "service ftp\n server = /usr/sbin/virtuald\n", nil, []Problem{{"x:1", "has no { after it"}}},
		{"not closed", "service ftp\n{\n server = /usr/sbin/virtuald\n", nil, []Problem{{"x:1", "is not closed with }"}}},
		{"bad virtuald flags", block("server_args = -max-children 0 /c p"), nil, []Problem{{"x:1", "virtuald's options: -max-children takes a positive number"}}},
		{"wait = yes without -accept", block("server_args = /c p", "wait = yes"), []Service{ftp(nil)}, []Problem{{"x:1", "virtuald gets a listening socket but has no -accept: it refuses to serve it"}}},
		{"includes past the depth", "includedir /etc/xinetd.d\n", nil, []Problem{{"x:1", "includes nested more than 4 deep"}}},
		{"a relative include", "includefile xinetd.d/ftp\n", nil, []Problem{{"x:1", "includefile needs one absolute path"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &finder{ports: ports{"ftp/tcp": 21, "tftp/udp": 69}}
			st := &xinetdState{defaults: xblock{attrs: map[string][]string{}}}
			depth := 0
			if strings.HasPrefix(c.text, "includedir") {
				depth = maxIncludeDepth // never the host's files
			}
			f.parseXinetd(st, "x", c.text, depth)
			for _, b := range st.services {
				f.xinetdService(st, b)
			}
			check(t, "", f.found, f.problems, c.want, c.problems)
		})
	}
}

// A file of an includedir that is a symbolic link is read at its target,
// under the same rules.
func TestXinetdLink(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/elsewhere/ftp", "service ftp\n{\n socket_type = stream\n server = /usr/sbin/virtuald\n server_args = /c p\n}\n")
	write(t, dir+"/xinetd.conf", "includedir "+dir+"/xinetd.d\n")
	if err := os.Mkdir(dir+"/xinetd.d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../elsewhere/ftp", dir+"/xinetd.d/ftp"); err != nil {
		t.Fatal(err)
	}
	got, problems := Find(Sources{XinetdConf: dir + "/xinetd.conf"})
	check(t, dir, got, problems, []Service{{From: "xinetd.d/ftp:1", SuperServer: "xinetd", Name: "ftp", Conf: "/c", Program: "p", Args: []string{"p"}, Transport: "tcp", Path: systemdPath}}, nil)
}
