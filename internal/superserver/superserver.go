// Package superserver reads the super-servers' configuration (inetd.conf,
// xinetd, systemd socket units) and finds the services that start
// virtuald: for each, its conf file, program, mode, port and protocol, so
// that ipwatchd can load every conf file and check every program inside
// its roots before the first client connects.
//
// It reads these files as the super-servers do, but only what decides
// where a connection goes and what runs; a line it cannot understand is a
// Problem, never a guess. virtuald's own arguments are read with
// cmdline.Parse, virtuald's parser. The files are root's configuration,
// so they are read only under the rules of conf.Read (root-owned, not
// writable by group or others, every directory on the way too, no
// symbolic link followed) and within fixed bounds: a file an attacker can
// write cannot make ipwatchd load a conf file or trust a program.
package superserver

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/virtuald/virtuald/internal/cmdline"
	"github.com/virtuald/virtuald/internal/conf"
	"golang.org/x/sys/unix"
)

// Sources says where to look; an empty path (or nil dirs) turns a source off.
type Sources struct {
	InetdConf   string   // default "/etc/inetd.conf"
	XinetdConf  string   // default "/etc/xinetd.conf" (its includedir lines followed, e.g. /etc/xinetd.d)
	SystemdDirs []string // earlier directories override later ones, as in systemd
	// Services is the services(5) file that gives named services their
	// port (default "/etc/services"); without it only numeric ports are
	// known.
	Services string
	// Advise reports, as Problems, what a super-server will do wrong with
	// a line it reads fine: start a program (virtuald, or tcpd before
	// it) that does not exist or cannot be executed (every connection
	// fails before virtuald runs, and only the super-server's log says
	// so: inetd's "execv ...: No such file or directory"), or stop a per
	// connection line for every address when one client trips its rate
	// limit (InetdRate). ipwatchd advises; the parsers' tests do not.
	Advise bool
	// InetdRate is inetd's -R, the virtualds it starts a minute for one
	// line before it stops the line for 10 minutes (0: with Advise, the
	// running inetd's, else openbsd-inetd's default, InetdRateDefault).
	InetdRate int
}

// InetdRateDefault is openbsd-inetd's -R when not given.
const InetdRateDefault = 256

// DefaultSources are the places Debian's super-servers read. /lib/systemd
// is not among them: on a merged-/usr system it is a symbolic link to
// /usr/lib/systemd, which is listed.
func DefaultSources() Sources {
	return Sources{
		InetdConf:   "/etc/inetd.conf",
		XinetdConf:  "/etc/xinetd.conf",
		SystemdDirs: []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system"},
		Services:    "/etc/services",
	}
}

// Service is one socket of a super-server that starts virtuald.
type Service struct {
	From        string     // where it is written: "FILE:LINE" (inetd), "FILE:LINE" of the service block (xinetd), the .service unit path (systemd)
	SuperServer string     // "inetd", "xinetd", "systemd"
	Name        string     // inetd's service field as written ("ftp", "192.0.2.10:tftp"), xinetd's service name, systemd's socket unit name
	Conf        string     // virtuald's conf file, as virtuald will open it
	Program     string     // the program virtuald runs (as written: a name is looked up in PATH)
	Args        []string   // the program's argv, argv[0] first
	Accept      bool       // virtuald -accept
	Transport   string     // "tcp" or "udp"
	Port        uint16     // 0 when unknown (a name not in the services file, an rpc service)
	Address     netip.Addr // the address the socket is bound to; zero for a wildcard bind (or a host name: see Host)
	Host        string     // the bind address as written when it is a host name, which Find does not resolve
	Path        string     // the PATH virtuald gets from this super-server ("" = none: virtuald then uses service.DefaultPath)
	Isolate     string     // virtuald's -isolate, canonical, when not the default ("all")
}

// Problem is a line or unit that starts virtuald but cannot be understood
// (bad virtuald flags, no conf, an unreadable or untrusted file...), or a
// source that exists but cannot be read. A line whose socket virtuald
// will refuse (a listening socket without -accept, or the other way
// round) is found as a Service and reported as a Problem too.
type Problem struct{ From, Reason string }

// Bounds on what Find reads: root writes these files, but a runaway
// generator or a corrupted disk must not make ipwatchd hold gigabytes.
const (
	MaxFileSize = 1 << 20 // bytes of one file
	maxLine     = 8192    // bytes of one line (a continued line counts whole)
	maxFiles    = 4096    // files read from one directory
	maxServices = 4096    // services found in all
	maxArgs     = 256     // words of one command line
)

// systemdPath is the PATH systemd gives system services (and so xinetd,
// which passes its own environment on unless told otherwise).
const systemdPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"

// Find reads every source and returns the services that start virtuald,
// in the order of the sources and of their files, and the problems met.
// It never fails as a whole: a source that does not exist is absent, one
// that cannot be read or trusted is a Problem.
func Find(s Sources) ([]Service, []Problem) {
	f := &finder{advise: s.Advise, inetdRate: s.InetdRate}
	if f.inetdRate <= 0 && s.Advise {
		f.inetdRate = RunningInetdRate()
	}
	if f.inetdRate <= 0 {
		f.inetdRate = InetdRateDefault
	}
	if s.Services != "" {
		f.ports = f.readServices(s.Services)
	}
	if s.InetdConf != "" {
		f.inetd(s.InetdConf)
	}
	if s.XinetdConf != "" {
		f.xinetd(s.XinetdConf)
	}
	if len(s.SystemdDirs) > 0 {
		f.systemd(s.SystemdDirs)
	}
	return f.found, f.problems
}

// finder collects what Find finds.
type finder struct {
	advise    bool
	inetdRate int
	ports     ports
	found     []Service
	problems  []Problem
	full      bool // maxServices reached (reported once)
}

func (f *finder) problem(from, reason string) {
	f.problems = append(f.problems, Problem{From: from, Reason: reason})
}

// checkServer reports a program the super-server starts for a virtuald
// line that it cannot start. A name (not a path) is left alone: systemd
// looks it up in its own PATH.
func (f *finder) checkServer(from, superServer, path string) {
	if !f.advise || !filepath.IsAbs(path) {
		return
	}
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	switch {
	case err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = errors.New("not a regular file")
	case err == nil:
		err = unix.Access(path, unix.X_OK)
	}
	if err != nil {
		f.problem(from, superServer+" starts "+path+", which it cannot execute ("+err.Error()+"): every connection fails before virtuald runs")
	}
}

func (f *finder) add(s Service) {
	if len(f.found) >= maxServices {
		if !f.full {
			f.full = true
			f.problem(s.From, "more than the "+strconv.Itoa(maxServices)+" services Find reads; this one and the rest are left out")
		}
		return
	}
	f.found = append(f.found, s)
}

// virtualdArgv returns virtuald's argv when a super-server that runs
// server with argv starts virtuald: directly, or through tcpd (which
// runs argv[0], a path or a name in its own directory, after its checks).
func virtualdArgv(server string, argv []string) ([]string, bool) {
	switch filepath.Base(server) {
	case "virtuald":
		return argv, true
	case "tcpd":
		if len(argv) > 0 && (argv[0] == "virtuald" || strings.HasSuffix(argv[0], "/virtuald")) {
			return argv, true
		}
	}
	return nil, false
}

// command fills in what virtuald's argv says (conf, program, -accept),
// with cmdline.Parse, virtuald's own parser; it returns the reason when
// virtuald would refuse the line.
func command(s *Service, argv []string) string {
	if len(argv) == 0 {
		return "virtuald is started with no argv"
	}
	o, rest, err := cmdline.Parse(argv)
	switch {
	case err != nil:
		return "virtuald's options: " + err.Error()
	case o.Help || o.Version:
		return "virtuald -h or -version only prints and exits"
	case len(rest) < 3 || rest[1] == "" || rest[2] == "":
		return "virtuald needs CONF PROGRAM after its options"
	}
	s.Conf = rest[1]
	// Every super-server starts its services in "/" (inetd and xinetd
	// as daemons, systemd for system services), where virtuald opens a
	// relative conf path.
	if !filepath.IsAbs(s.Conf) {
		s.Conf = filepath.Join("/", s.Conf)
	}
	s.Program, s.Args, s.Accept = rest[2], rest[2:], o.Accept
	if o.Isolate != conf.IsolateAll {
		s.Isolate = o.Isolate.String()
	}
	return ""
}

// modeProblem says why virtuald will refuse the socket it gets: a
// listening socket (inetd's stream "wait", systemd's Accept=no) is for
// -accept, a connection is not; datagrams are never accepted.
func modeProblem(s *Service, listening bool) string {
	switch {
	case s.Transport == "udp" && s.Accept:
		return "-accept is for stream sockets; virtuald refuses a datagram socket"
	case s.Transport == "tcp" && listening && !s.Accept:
		return "virtuald gets a listening socket but has no -accept: it refuses to serve it"
	case s.Transport == "tcp" && !listening && s.Accept:
		return "virtuald -accept gets a connection, not a listening socket: it refuses to serve it"
	}
	return ""
}
