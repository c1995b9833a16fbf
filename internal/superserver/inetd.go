package superserver

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// inetdMaxArgv is how many argv words openbsd-inetd passes (MAXARGV);
// it drops the rest without a word.
const inetdMaxArgv = 20

// inetd reads an inetd.conf.
func (f *finder) inetd(path string) {
	if data, _ := f.readFile(path); data != nil {
		f.parseInetd(path, string(data))
	}
}

// parseInetd reads inetd.conf text as Debian's openbsd-inetd does: a line
// starting with '#' is a comment (update-inetd's "#<off>#" lines too),
// fields are separated by spaces and tabs, a line starting with a space
// or tab continues the entry before it, and "HOST:" alone sets the
// address of the lines that follow.
func (f *finder) parseInetd(path, text string) {
	lines := strings.Split(text, "\n")
	defHost := "*"
	for i := 0; i < len(lines); i++ {
		no := i + 1
		if strings.HasPrefix(lines[i], "#") {
			continue
		}
		fields := strings.FieldsFunc(lines[i], blank)
		size := len(lines[i])
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			fields = append(fields, strings.FieldsFunc(lines[i], blank)...)
			size += len(lines[i])
		}
		from := path + ":" + strconv.Itoa(no)
		if size > maxLine {
			if mentionsVirtuald(fields) {
				f.problem(from, "is longer than "+strconv.Itoa(maxLine)+" bytes")
			}
			continue
		}
		if len(fields) == 0 {
			continue
		}
		host, hasHost := "", false
		if c := strings.LastIndexByte(fields[0], ':'); c >= 0 {
			host, hasHost = fields[0][:c], true
			if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
				host = host[1 : len(host)-1]
			} else if host == "" {
				host = "*"
			}
			if c == len(fields[0])-1 {
				if len(fields) == 1 {
					defHost = host
					continue
				}
				fields = fields[1:] // "HOST: service ...": the service is the next field
			}
		}
		if !hasHost {
			host = defHost
		}
		f.inetdEntry(from, host, fields)
	}
}

func blank(r rune) bool { return r == ' ' || r == '\t' }

func mentionsVirtuald(words []string) bool {
	for _, w := range words {
		if strings.Contains(w, "virtuald") {
			return true
		}
	}
	return false
}

// inetdEntry reads one entry's fields: service socktype proto
// wait[.max] user[.group] server argv...
func (f *finder) inetdEntry(from, host string, fields []string) {
	if len(fields) < 6 {
		if mentionsVirtuald(fields) {
			f.problem(from, "has "+strconv.Itoa(len(fields))+" fields; inetd needs at least 6 (service socket-type protocol wait user server)")
		}
		return
	}
	server, argv := fields[5], fields[6:]
	if len(argv) > inetdMaxArgv {
		argv = argv[:inetdMaxArgv]
	}
	if len(argv) == 0 {
		argv = []string{filepath.Base(server)}
	}
	vargv, ok := virtualdArgv(server, argv)
	if !ok {
		return
	}
	f.checkServer(from, "inetd", server)
	if filepath.Base(server) == "tcpd" {
		f.checkServer(from, "tcpd", vargv[0]) // tcpd runs argv[0]
	}
	s := Service{From: from, SuperServer: "inetd", Name: fields[0]}
	if why := command(&s, vargv); why != "" {
		f.problem(from, why)
		return
	}
	if len(fields)-6 > inetdMaxArgv {
		f.problem(from, "inetd passes only the first "+strconv.Itoa(inetdMaxArgv)+" words of argv; the rest are dropped")
	}
	service := fields[0][strings.LastIndexByte(fields[0], ':')+1:]
	proto, _, _ := strings.Cut(fields[2], ",") // ",sndbuf=SIZE,rcvbuf=SIZE"
	// An rpc service's name is "NAME/VERSIONS": no services(5) name, so
	// its port is left 0 (the portmapper chooses it).
	switch strings.TrimPrefix(proto, "rpc/") {
	case "unix":
		f.problem(from, "is a Unix socket: it has no address for virtuald to resolve")
		return
	case "tcp", "tcp4", "tcp6", "tcp46":
		s.Transport = "tcp"
	case "udp", "udp4", "udp6":
		s.Transport = "udp"
	default:
		f.problem(from, "protocol "+proto+" is not tcp or udp")
		return
	}
	switch fields[1] {
	case "stream", "dgram":
	default:
		f.problem(from, "socket type "+fields[1]+" is not stream or dgram")
		return
	}
	s.Port = f.ports.port(service, s.Transport)
	wait, perLine, _ := strings.Cut(fields[3], ".")
	if why := modeProblem(&s, fields[1] == "stream" && wait == "wait"); why != "" {
		f.problem(from, why)
	}
	if f.advise && fields[1] == "stream" && wait == "nowait" {
		f.inetdRateProblem(from, perLine)
	}
	for _, h := range strings.Split(host, ",") {
		if h == "" {
			continue
		}
		one := s
		one.Args = append([]string(nil), s.Args...)
		setAddress(&one, h)
		f.add(one)
	}
}

// setAddress records a bind address: "*", "" or a wildcard address is
// none, a host name is kept as written.
func setAddress(s *Service, host string) {
	if host == "*" || host == "" {
		return
	}
	a, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		s.Host = host
	case !a.IsUnspecified():
		s.Address = a
	}
}

// trippable is the lowest inetd limit (a minute) that one client cannot
// reach: 1,000 connections a second, more than virtuald per connection
// serves on the machines measured (BENCHMARKS.md).
const trippable = 60000

// inetdRateProblem reports a per-connection stream line: inetd counts the
// virtualds it starts for the line, every address together, and past its
// limit (nowait.N, else -R) stops the line for 10 minutes, every virtual
// host with it. Accept mode starts virtuald once and is not counted.
func (f *finder) inetdRateProblem(from, perLine string) {
	limit, how := f.inetdRate, "inetd -R"
	if n, err := strconv.Atoi(perLine); err == nil && n > 0 {
		limit, how = n, "nowait."+perLine
	}
	if limit >= trippable {
		return
	}
	f.problem(from, "per connection (nowait), inetd starts at most "+strconv.Itoa(limit)+" virtualds a minute for this line ("+how+
		"), every address together: one client's "+strconv.Itoa(limit)+" connections in a minute stop it for every address for 10 minutes; "+
		"serve it in accept mode (wait, virtuald -accept), or raise the limit and give the entries a flood may reach rate= (ipwatchd has the kernel refuse their connections past it before inetd counts them)")
}

// RunningInetdRate is the -R of the inetd running on this host (the
// lowest, if several run; InetdRateDefault for one without -R), or 0
// when none runs.
func RunningInetdRate() int {
	procs, _ := os.ReadDir("/proc")
	rate := 0
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + p.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "inetd" {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil {
			continue
		}
		r := rateArg(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"))
		if r == 0 {
			r = InetdRateDefault
		}
		if rate == 0 || r < rate {
			rate = r
		}
	}
	return rate
}

// rateArg finds -R N (or -RN) in inetd's argv.
func rateArg(argv []string) int {
	for i := 1; i < len(argv); i++ {
		v, ok := strings.CutPrefix(argv[i], "-R")
		if !ok {
			continue
		}
		if v == "" && i+1 < len(argv) {
			v = argv[i+1]
		}
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return 0
}
