package superserver

import (
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// maxIncludeDepth bounds includedir and includefile inside included files.
const maxIncludeDepth = 4

// xblock is a "service NAME { ... }" or "defaults { ... }" block.
type xblock struct {
	from  string // FILE:LINE of its first line
	name  string // the service's name ("" for defaults)
	attrs map[string][]string
	bad   string // why xinetd rejects the block, if it does
}

// xinetdState is what reading xinetd's files collects before the
// services are judged: the defaults apply to every service, wherever
// they are written.
type xinetdState struct {
	defaults xblock
	services []xblock
	files    int
}

// xinetd reads xinetd's main file and the files it includes.
func (f *finder) xinetd(path string) {
	st := &xinetdState{defaults: xblock{attrs: map[string][]string{}}}
	data, _ := f.readFile(path)
	if data == nil {
		return
	}
	f.parseXinetd(st, path, string(data), 0)
	for _, b := range st.services {
		f.xinetdService(st, b)
	}
}

// parseXinetd reads one file of xinetd's configuration into st.
func (f *finder) parseXinetd(st *xinetdState, path, text string, depth int) {
	st.files++
	var cur *xblock
	open := false // cur's "{" was seen
	for i, line := range strings.Split(text, "\n") {
		from := path + ":" + strconv.Itoa(i+1)
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if len(line) > maxLine {
			f.problem(from, "is longer than "+strconv.Itoa(maxLine)+" bytes")
			continue
		}
		fields := strings.Fields(line)
		switch {
		case cur != nil && !open:
			if fields[0] != "{" {
				f.problem(cur.from, "has no { after it")
				cur = nil
				continue
			}
			open = true
			continue
		case cur != nil && fields[0] == "}":
			if cur.name != "" {
				st.services = append(st.services, *cur)
			}
			cur, open = nil, false
			continue
		case cur != nil:
			if why := xattr(cur.attrs, line); why != "" && cur.bad == "" {
				cur.bad = from + ": " + why
			}
			continue
		}
		switch fields[0] {
		case "service", "defaults":
			b := xblock{from: from, attrs: map[string][]string{}}
			if fields[0] == "defaults" {
				b.attrs = st.defaults.attrs // cumulative: a second block adds to the first
			} else if len(fields) >= 2 {
				b.name = fields[1]
			} else {
				f.problem(from, "service has no name")
			}
			cur, open = &b, slices.Contains(fields, "{")
		case "includedir", "includefile":
			if len(fields) != 2 || !filepath.IsAbs(fields[1]) {
				f.problem(from, fields[0]+" needs one absolute path")
				continue
			}
			if depth >= maxIncludeDepth {
				f.problem(from, "includes nested more than "+strconv.Itoa(maxIncludeDepth)+" deep")
				continue
			}
			if fields[0] == "includefile" {
				if data, _ := f.readFile(fields[1]); data != nil {
					f.parseXinetd(st, fields[1], string(data), depth+1)
				}
				continue
			}
			f.xinetdDir(st, fields[1], depth+1)
		}
	}
	if cur != nil {
		f.problem(cur.from, "is not closed with }")
	}
}

// xinetdDir reads the files of an includedir in C-locale order, leaving
// out, as xinetd does, names that hold a '.' or end in '~'.
func (f *finder) xinetdDir(st *xinetdState, dir string, depth int) {
	entries, _ := f.readDir(dir)
	for _, e := range entries {
		if strings.Contains(e.name, ".") || strings.HasSuffix(e.name, "~") {
			continue
		}
		path := filepath.Join(dir, e.name)
		switch e.mode {
		case 0:
		case fs.ModeSymlink: // its target, read under the same rules
			path = e.target
		default:
			continue
		}
		if st.files >= maxFiles {
			f.problem(dir, "xinetd's configuration holds more than "+strconv.Itoa(maxFiles)+" files; the rest are not read")
			return
		}
		if data, _ := f.readFile(path); data != nil {
			f.parseXinetd(st, filepath.Join(dir, e.name), string(data), depth)
		}
	}
}

// xlists are the attributes that take "+=" and "-=" (xinetd.conf(5));
// on any other, xinetd rejects the service.
var xlists = []string{"only_from", "no_access", "log_on_success", "log_on_failure", "passenv", "env", "disabled", "enabled", "log_type"}

// xattr applies one "attribute OP value..." line: "=" sets, "+=" adds,
// "-=" removes values. It returns why xinetd would refuse the line.
func xattr(attrs map[string][]string, line string) string {
	eq := strings.IndexByte(line, '=')
	if eq <= 0 {
		return "is not ATTRIBUTE = VALUE..."
	}
	name, op := strings.TrimSpace(line[:eq]), "="
	if c := name[len(name)-1]; c == '+' || c == '-' {
		name, op = strings.TrimSpace(name[:len(name)-1]), string(c)+"="
		if !slices.Contains(xlists, name) {
			return op + " is not for " + name
		}
	}
	values := strings.Fields(line[eq+1:])
	if len(values) > maxArgs {
		values = values[:maxArgs]
	}
	switch op {
	case "=":
		attrs[name] = values
	case "+=":
		attrs[name] = append(attrs[name], values...)
	case "-=":
		attrs[name] = slices.DeleteFunc(attrs[name], func(v string) bool { return slices.Contains(values, v) })
	}
	return ""
}

// xinetdService judges one service block.
func (f *finder) xinetdService(st *xinetdState, b xblock) {
	one := func(name string) string { return first(b.attrs[name]) }
	id := one("id")
	if id == "" {
		id = b.name
	}
	enabled, hasEnabled := st.defaults.attrs["enabled"]
	switch {
	case one("disable") == "yes",
		slices.Contains(st.defaults.attrs["disabled"], id),
		hasEnabled && !slices.Contains(enabled, id),
		slices.Contains(b.attrs["type"], "INTERNAL"),
		len(b.attrs["redirect"]) > 0:
		return
	}
	server := one("server")
	argv := b.attrs["server_args"]
	if !slices.Contains(b.attrs["flags"], "NAMEINARGS") {
		argv = append([]string{filepath.Base(server)}, argv...)
	}
	vargv, ok := virtualdArgv(server, argv)
	if !ok {
		return
	}
	f.checkServer(b.from, "xinetd", server)
	s := Service{From: b.from, SuperServer: "xinetd", Name: b.name}
	if b.bad != "" {
		f.problem(b.from, "xinetd refuses this service: "+b.bad)
		return
	}
	if why := command(&s, vargv); why != "" {
		f.problem(b.from, why)
		return
	}
	socktype := one("socket_type")
	switch proto := one("protocol"); {
	case proto == "tcp" || proto == "" && socktype == "stream":
		s.Transport = "tcp"
	case proto == "udp" || proto == "" && socktype == "dgram":
		s.Transport = "udp"
	default:
		f.problem(b.from, "protocol "+proto+" (socket_type "+socktype+") is not tcp or udp")
		return
	}
	if p := one("port"); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			f.problem(b.from, "port "+p+" is not a number")
			return
		}
		s.Port = uint16(n)
	} else if !slices.Contains(b.attrs["type"], "RPC") {
		s.Port = f.ports.port(b.name, s.Transport)
	}
	bind := one("bind")
	if bind == "" {
		bind = one("interface")
	}
	if bind == "" {
		bind = first(st.defaults.attrs["bind"])
	}
	setAddress(&s, bind)
	s.Path = xinetdPath(b.attrs, st.defaults.attrs)
	if why := modeProblem(&s, socktype == "stream" && one("wait") == "yes"); why != "" {
		f.problem(b.from, why)
	}
	f.add(s)
}

// xinetdPath is the PATH a service gets: env's, else xinetd's own
// (systemd's default, xinetd being a systemd service) unless a passenv
// list leaves it out.
func xinetdPath(attrs, defaults map[string][]string) string {
	path, set := systemdPath, false
	for _, kv := range attrs["env"] {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path, set = v, true
		}
	}
	if set {
		return path
	}
	passenv, ok := attrs["passenv"]
	if d, dok := defaults["passenv"]; dok {
		passenv, ok = append(slices.Clone(d), passenv...), true
	}
	if ok && !slices.Contains(passenv, "PATH") {
		return ""
	}
	return path
}

func first(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}
