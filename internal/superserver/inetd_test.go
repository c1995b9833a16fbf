package superserver

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A Debian inetd.conf with virtuald lines among others, disabled lines
// (update-inetd's "#<off>#"), a line continued on the next, a tcpd
// wrapper, per-address binds and accept mode.
func TestInetdFile(t *testing.T) {
	dir := install(t, "testdata")
	got, problems := Find(Sources{InetdConf: filepath.Join(dir, "inetd.conf"), Services: filepath.Join(dir, "services")})
	check(t, dir, got, problems, []Service{
		{From: "inetd.conf:24", SuperServer: "inetd", Name: "ftp", Conf: "/etc/virtuald/conf.ftp", Program: "in.ftpd", Args: []string{"in.ftpd", "-l"}, Transport: "tcp", Port: 21},
		{From: "inetd.conf:31", SuperServer: "inetd", Name: "pop3", Conf: "/etc/virtuald/conf.pop", Program: "/usr/sbin/in.pop3d", Args: []string{"/usr/sbin/in.pop3d"}, Transport: "tcp", Port: 110},
		{From: "inetd.conf:40", SuperServer: "inetd", Name: "192.0.2.10:tftp", Conf: "/etc/virtuald/conf.tftp", Program: "/usr/sbin/in.tftpd", Args: []string{"/usr/sbin/in.tftpd", "-s", "/srv/tftp"}, Transport: "udp", Port: 69, Address: addr("192.0.2.10")},
		{From: "inetd.conf:44", SuperServer: "inetd", Name: "[2001:db8::10]:smtp", Conf: "/etc/virtuald/conf.smtp", Program: "/usr/sbin/smtpd", Args: []string{"/usr/sbin/smtpd"}, Accept: true, Transport: "tcp", Port: 25, Address: addr("2001:db8::10")},
	}, nil)
}

// Each rule of inetd.conf that changes what runs where, one line (or a
// few) at a time.
func TestInetd(t *testing.T) {
	const v = "stream tcp nowait root /usr/sbin/virtuald virtuald"
	ftp := func(change func(*Service)) Service {
		s := Service{From: "inetd.conf:1", SuperServer: "inetd", Name: "ftp", Conf: "/c", Program: "p", Args: []string{"p"}, Transport: "tcp", Port: 21}
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
		{"the seed's line", "ftp " + v + " /c p", []Service{ftp(nil)}, nil},
		{"tabs, and a port number", "2121\t" + v + "\t/c\tp", []Service{ftp(func(s *Service) { s.Name, s.Port = "2121", 2121 })}, nil},
		{"a comment", "#ftp " + v + " /c p", nil, nil},
		{"update-inetd's disabled line", "#<off># ftp " + v + " /c p", nil, nil},
		{"a comment only at the start of the line", " #ftp " + v + " /c p", []Service{ftp(func(s *Service) { s.Name, s.Port = "#ftp", 0 })}, nil},
		{"another program", "ftp stream tcp nowait root /usr/sbin/in.ftpd in.ftpd -l", nil, nil},
		{"another program that mentions virtuald", "ftp stream tcp nowait root /usr/sbin/tcpd /usr/sbin/in.ftpd /etc/virtuald/conf", nil, nil},
		{"through tcpd, argv[0] a name", "ftp stream tcp nowait root /usr/sbin/tcpd virtuald /c p", []Service{ftp(nil)}, nil},
		{"a continued line", "ftp " + v + "\n\t/c p\n p2", []Service{ftp(func(s *Service) { s.Args = []string{"p", "p2"} })}, nil},
		{"a comment ends an entry", "ftp " + v + " /c p\n#x\n\tp2", []Service{ftp(nil)}, nil},
		{"an address", "192.0.2.1:ftp " + v + " /c p", []Service{ftp(func(s *Service) { s.Name, s.Address = "192.0.2.1:ftp", addr("192.0.2.1") })}, nil},
		{"an IPv6 address in brackets", "[2001:db8::1]:ftp " + v + " /c p", []Service{ftp(func(s *Service) { s.Name, s.Address = "[2001:db8::1]:ftp", addr("2001:db8::1") })}, nil},
		{"several addresses", "192.0.2.1,*,192.0.2.2:ftp " + v + " /c p", []Service{
			ftp(func(s *Service) { s.Name, s.Address = "192.0.2.1,*,192.0.2.2:ftp", addr("192.0.2.1") }),
			ftp(func(s *Service) { s.Name = "192.0.2.1,*,192.0.2.2:ftp" }),
			ftp(func(s *Service) { s.Name, s.Address = "192.0.2.1,*,192.0.2.2:ftp", addr("192.0.2.2") }),
		}, nil},
		{"an address as a field of its own", "192.0.2.1: ftp " + v + " /c p", []Service{ftp(func(s *Service) { s.Address = addr("192.0.2.1") })}, nil},
		{"a host name", "mail.example:ftp " + v + " /c p", []Service{ftp(func(s *Service) { s.Name, s.Host = "mail.example:ftp", "mail.example" })}, nil},
		{"a default address, then the wildcard again", "192.0.2.1:\nftp " + v + " /c p\n*:\nftp " + v + " /c p", []Service{
			ftp(func(s *Service) { s.From, s.Address = "inetd.conf:2", addr("192.0.2.1") }),
			ftp(func(s *Service) { s.From = "inetd.conf:4" }),
		}, nil},
		{"a name not in services", "gopher " + v + " /c p", []Service{ftp(func(s *Service) { s.Name, s.Port = "gopher", 0 })}, nil},
		{"udp", "tftp dgram udp wait root /usr/sbin/virtuald virtuald /c p", []Service{ftp(func(s *Service) { s.Name, s.Transport, s.Port = "tftp", "udp", 69 })}, nil},
		{"buffer sizes after the protocol", "ftp stream tcp6,rcvbuf=64k " + v[11:] + " /c p", []Service{ftp(nil)}, nil},
		{"a protocol that is neither", "ftp stream tcpx " + v[11:] + " /c p", nil, []Problem{{"inetd.conf:1", "protocol tcpx is not tcp or udp"}}},
		{"accept mode", "ftp stream tcp wait.10 root /usr/sbin/virtuald virtuald -accept /c p", []Service{ftp(func(s *Service) { s.Accept = true })}, nil},
		{"an rpc service has no port", "rstatd/1-3 stream rpc/tcp nowait root /usr/sbin/virtuald virtuald /c p", []Service{ftp(func(s *Service) { s.Name, s.Port = "rstatd/1-3", 0 })}, nil},
		{"a relative conf is opened in /", "ftp " + v + " c p", []Service{ftp(func(s *Service) { s.Conf = "/c" })}, nil},
		{"no argv: argv[0] is the server's name", "ftp " + v[:len(v)-9], nil, []Problem{{"inetd.conf:1", "virtuald needs CONF PROGRAM after its options"}}},
		{"inetd's 20 words", "ftp " + v + " /c p" + strings.Repeat(" a", 20), []Service{ftp(func(s *Service) { s.Args = append([]string{"p"}, strings.Fields(strings.Repeat(" a", 17))...) })},
			[]Problem{{"inetd.conf:1", "inetd passes only the first 20 words of argv; the rest are dropped"}}},
		{"wait without -accept", "ftp stream tcp wait root /usr/sbin/virtuald virtuald /c p", []Service{ftp(nil)},
			[]Problem{{"inetd.conf:1", "virtuald gets a listening socket but has no -accept: it refuses to serve it"}}},
		{"nowait with -accept", "ftp " + v + " -accept /c p", []Service{ftp(func(s *Service) { s.Accept = true })},
			[]Problem{{"inetd.conf:1", "virtuald -accept gets a connection, not a listening socket: it refuses to serve it"}}},
		{"a bad flag", "ftp " + v + " -frobnicate /c p", nil, []Problem{{"inetd.conf:1", "virtuald's options: unknown option -frobnicate"}}},
		{"no program", "ftp " + v + " /c", nil, []Problem{{"inetd.conf:1", "virtuald needs CONF PROGRAM after its options"}}},
		{"-version", "ftp " + v + " -version /c p", nil, []Problem{{"inetd.conf:1", "virtuald -h or -version only prints and exits"}}},
		{"a Unix socket", "/run/x.sock stream unix nowait root /usr/sbin/virtuald virtuald /c p", nil, []Problem{{"inetd.conf:1", "is a Unix socket: it has no address for virtuald to resolve"}}},
		{"too few fields", "ftp stream tcp nowait /usr/sbin/virtuald", nil, []Problem{{"inetd.conf:1", "has 5 fields; inetd needs at least 6 (service socket-type protocol wait user server)"}}},
		{"too long", "ftp " + v + " /c p " + strings.Repeat("a", maxLine), nil, []Problem{{"inetd.conf:1", "is longer than 8192 bytes"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &finder{ports: ports{"ftp/tcp": 21, "tftp/udp": 69}}
			f.parseInetd("inetd.conf", c.text)
			check(t, "", f.found, f.problems, c.want, c.problems)
		})
	}
}

// However many lines start virtuald, Find keeps maxServices of them and
// says that it left the rest out.
func TestMaxServices(t *testing.T) {
	f := &finder{}
	f.parseInetd("inetd.conf", strings.Repeat("ftp stream tcp nowait root /usr/sbin/virtuald virtuald /c p\n", maxServices+2))
	want := []Problem{{"inetd.conf:4097", "more than the 4096 services Find reads; this one and the rest are left out"}}
	if len(f.found) != maxServices || !reflect.DeepEqual(f.problems, want) {
		t.Errorf("%d services, problems %q; want %d and %q", len(f.found), f.problems, maxServices, want)
	}
}

// Ports come from services(5): the first line for a name wins, aliases
// count, and a port is per protocol.
func TestServices(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/services", "# comment\nftp\t\t21/tcp\nfsp\t\t21/udp\t\tfspd # alias\nftp 2121/tcp\nbad x/tcp\nshort\n")
	f := &finder{}
	p := f.readServices(dir + "/services")
	for _, c := range []struct {
		service, transport string
		want               uint16
	}{{"ftp", "tcp", 21}, {"ftp", "udp", 0}, {"fspd", "udp", 21}, {"bad", "tcp", 0}, {"8080", "udp", 8080}, {"70000", "tcp", 0}} {
		if got := p.port(c.service, c.transport); got != c.want {
			t.Errorf("%s/%s: %d, want %d", c.service, c.transport, got, c.want)
		}
	}
	if f.problems != nil {
		t.Errorf("problems %q", f.problems)
	}
}

// With Advise (ipwatchd's), a line whose virtuald (or tcpd before
// it) cannot be executed is a Problem, found as a Service still: the
// trial's `/usr/local/sbin/virtuald` where the package put
// /usr/sbin/virtuald failed every connection with only inetd's log
// saying so.
func TestAdvise(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "sbin", "virtuald")
	plain := filepath.Join(dir, "plain", "virtuald")
	tcpd := filepath.Join(dir, "sbin", "tcpd")
	for p, mode := range map[string]os.FileMode{good: 0o755, plain: 0o644, tcpd: 0o755} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "local", "virtuald")
	conf := filepath.Join(dir, "inetd.conf")
	text := strings.Join([]string{
		"1 stream tcp wait root " + good + " virtuald -accept /c p",
		"2 stream tcp wait root " + missing + " virtuald -accept /c p",
		"3 stream tcp wait root " + plain + " virtuald -accept /c p",
		"4 stream tcp wait root " + good + " " + missing + " -accept /c p", // not tcpd: argv[0] is only a name
		"5 stream tcp wait root " + filepath.Join(dir, "tcpd") + " " + good + " -accept /c p",
		"6 stream tcp wait root " + tcpd + " " + missing + " -accept /c p",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	found, problems := Find(Sources{InetdConf: conf, Advise: true})
	want := []string{
		conf + ":2: inetd starts " + missing + ", which it cannot execute (no such file or directory)",
		conf + ":3: inetd starts " + plain + ", which it cannot execute (permission denied)",
		conf + ":5: inetd starts " + filepath.Join(dir, "tcpd") + ", which it cannot execute (no such file or directory)",
		conf + ":6: tcpd starts " + missing + ", which it cannot execute (no such file or directory)",
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.From+": "+strings.TrimSuffix(p.Reason, ": every connection fails before virtuald runs"))
	}
	if len(found) != 6 || !reflect.DeepEqual(got, want) {
		t.Errorf("found %d services; problems:\n%s\nwant:\n%s", len(found), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, problems := Find(Sources{InetdConf: conf}); len(problems) != 0 {
		t.Errorf("without Advise: %v", problems)
	}
}

// With Advise, a per-connection stream line is reported with the limit
// inetd applies to it (-R, or the line's nowait.N), when one client can
// reach it; accept mode and datagrams are not.
func TestInetdRateAdvice(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "inetd.conf")
	text := strings.Join([]string{
		"ftp stream tcp nowait root /nonexistent/virtuald virtuald /c p",
		"ftp stream tcp nowait.40 root /nonexistent/virtuald virtuald /c p",
		"ftp stream tcp nowait.60000 root /nonexistent/virtuald virtuald /c p", // one client cannot reach it
		"ftp stream tcp wait root /nonexistent/virtuald virtuald -accept /c p",
		"tftp dgram udp wait root /nonexistent/virtuald virtuald /c p",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	_, problems := Find(Sources{InetdConf: conf, Advise: true, InetdRate: 1000})
	var got []string
	for _, p := range problems {
		if strings.Contains(p.Reason, "per connection") {
			got = append(got, strings.TrimPrefix(p.From, conf)+" "+p.Reason[:strings.Index(p.Reason, ":")])
		}
	}
	want := []string{
		":1 per connection (nowait), inetd starts at most 1000 virtualds a minute for this line (inetd -R), every address together",
		":2 per connection (nowait), inetd starts at most 40 virtualds a minute for this line (nowait.40), every address together",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRateArg(t *testing.T) {
	for _, tt := range []struct {
		argv []string
		want int
	}{
		{[]string{"inetd"}, 0},
		{[]string{"inetd", "-R", "1000000", "/etc/inetd.conf"}, 1000000},
		{[]string{"/usr/sbin/inetd", "-d", "-R500"}, 500},
		{[]string{"inetd", "-R"}, 0},
		{[]string{"inetd", "-R", "x"}, 0},
	} {
		if got := rateArg(tt.argv); got != tt.want {
			t.Errorf("%q: %d, want %d", tt.argv, got, tt.want)
		}
	}
}
