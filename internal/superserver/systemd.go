package superserver

import (
	"io/fs"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// unitFile is where a unit is: the first directory that has it wins.
type unitFile struct {
	path   string // the file to read (a symbolic link's target)
	masked bool   // a link to /dev/null
}

// systemdIndex is the unit files of every directory and their drop-in
// directories, earlier directories first.
type systemdIndex struct {
	units   map[string]unitFile
	dropins map[string][]string // unit name to its NAME.d directories
	sockets []string            // socket unit names, sorted
}

// systemd reads the socket units of dirs and the services they start.
func (f *finder) systemd(dirs []string) {
	idx := systemdIndex{units: map[string]unitFile{}, dropins: map[string][]string{}}
	for _, dir := range dirs {
		entries, _ := f.readDir(dir)
		for _, e := range entries {
			path := filepath.Join(dir, e.name)
			if e.mode == fs.ModeDir && strings.HasSuffix(e.name, ".d") {
				idx.dropins[strings.TrimSuffix(e.name, ".d")] = append(idx.dropins[strings.TrimSuffix(e.name, ".d")], path)
				continue
			}
			if !strings.HasSuffix(e.name, ".socket") && !strings.HasSuffix(e.name, ".service") {
				continue
			}
			if _, seen := idx.units[e.name]; seen {
				continue
			}
			switch e.mode {
			case 0:
				idx.units[e.name] = unitFile{path: path}
			case fs.ModeSymlink:
				idx.units[e.name] = unitFile{path: e.target, masked: e.target == "/dev/null"}
			default:
				continue
			}
			if strings.HasSuffix(e.name, ".socket") {
				idx.sockets = append(idx.sockets, e.name)
			}
		}
	}
	slices.Sort(idx.sockets)
	for _, name := range idx.sockets {
		f.socketUnit(&idx, name)
	}
}

// load reads a unit and its drop-ins (NAME.d/*.conf of every directory,
// by file name, the earlier directory's file winning a name).
func (f *finder) load(idx *systemdIndex, name string) (*unit, bool) {
	uf, ok := idx.units[name]
	if !ok || uf.masked {
		return nil, false
	}
	data, _ := f.readFile(uf.path)
	if data == nil {
		return nil, false
	}
	u := &unit{path: uf.path}
	u.parseUnit(string(data))
	dropins := map[string]string{}
	for _, dir := range idx.dropins[name] {
		entries, _ := f.readDir(dir)
		for _, e := range entries {
			if _, seen := dropins[e.name]; !seen && strings.HasSuffix(e.name, ".conf") && e.mode == 0 {
				dropins[e.name] = filepath.Join(dir, e.name)
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(dropins)) {
		if data, _ := f.readFile(dropins[n]); data != nil {
			u.parseUnit(string(data))
		}
	}
	return u, true
}

// socketUnit judges one socket unit and the service it starts.
func (f *finder) socketUnit(idx *systemdIndex, name string) {
	sock, ok := f.load(idx, name)
	if !ok {
		return
	}
	accept := boolean(sock.last("Socket", "Accept"))
	serviceName := sock.last("Socket", "Service")
	if serviceName == "" {
		serviceName = strings.TrimSuffix(name, ".socket") + ".service"
		if accept {
			serviceName = strings.TrimSuffix(name, ".socket") + "@.service"
		}
	}
	svc, ok := f.load(idx, serviceName)
	if !ok {
		return
	}
	execs := svc.list("Service", "ExecStart")
	var argv []string
	var server string
	for _, line := range execs {
		raw := strings.TrimLeft(line, "@-:+!|")
		words, err := splitCommand(raw)
		if err != nil {
			if strings.Contains(line, "virtuald") {
				f.problem(svc.path, "ExecStart= "+err.Error())
			}
			return
		}
		if len(words) == 0 {
			continue
		}
		server, argv = words[0], words
		if strings.Contains(line[:len(line)-len(raw)], "@") {
			argv = words[1:] // "@PROGRAM ARGV0 ARG...": the second word is argv[0]
		}
	}
	vargv, ok := virtualdArgv(server, argv)
	if !ok {
		return
	}
	f.checkServer(svc.path, "systemd", server)
	if len(execs) > 1 {
		f.problem(svc.path, "has "+strconv.Itoa(len(execs))+" ExecStart= lines; only the last is read")
	}
	s := Service{From: svc.path, SuperServer: "systemd", Name: name, Path: systemdPath}
	if why := command(&s, vargv); why != "" {
		f.problem(svc.path, why)
		return
	}
	for _, env := range svc.list("Service", "Environment") {
		words, err := splitCommand(env)
		if err != nil {
			f.problem(svc.path, "Environment= "+err.Error())
			continue
		}
		for _, kv := range words {
			if v, ok := strings.CutPrefix(kv, "PATH="); ok {
				s.Path = v
			}
		}
	}
	listens := 0
	for _, key := range []string{"ListenStream", "ListenDatagram"} {
		for _, l := range sock.list("Socket", key) {
			one := s
			one.Args = slices.Clone(s.Args)
			one.Transport = map[string]string{"ListenStream": "tcp", "ListenDatagram": "udp"}[key]
			if why := listen(&one, l); why != "" {
				f.problem(sock.path, key+"="+l+": "+why)
				continue
			}
			listens++
			if why := modeProblem(&one, !accept); why != "" {
				f.problem(svc.path, why)
			}
			f.add(one)
		}
	}
	if listens == 0 {
		f.problem(sock.path, "starts virtuald but has no ListenStream= or ListenDatagram= with an IP address")
	}
}

// listen reads a Listen*= address: "PORT", "ADDR:PORT" or "[V6ADDR]:PORT".
func listen(s *Service, v string) string {
	if strings.HasPrefix(v, "/") || strings.HasPrefix(v, "@") {
		return "is a Unix socket: it has no address for virtuald to resolve"
	}
	if n, err := strconv.ParseUint(v, 10, 16); err == nil && n > 0 {
		s.Port = uint16(n)
		return ""
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil || ap.Port() == 0 {
		return "is not PORT, ADDRESS:PORT or [ADDRESS]:PORT"
	}
	s.Port = ap.Port()
	if !ap.Addr().IsUnspecified() {
		s.Address = ap.Addr()
	}
	return ""
}
