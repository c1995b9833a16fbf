package superserver

import (
	"strconv"
	"strings"
)

// ports maps "name/proto" (aliases too) to a port, from services(5).
type ports map[string]uint16

// readServices reads the services file; without it only numeric ports
// are known, which is a problem only when the file exists.
func (f *finder) readServices(path string) ports {
	data, _ := f.readFile(path)
	p := ports{}
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		num, proto, ok := strings.Cut(fields[1], "/")
		n, err := strconv.ParseUint(num, 10, 16)
		if !ok || err != nil {
			continue
		}
		for _, name := range append(fields[:1], fields[2:]...) {
			if _, dup := p[name+"/"+proto]; !dup { // the first line wins, as getservbyname
				p[name+"/"+proto] = uint16(n)
			}
		}
	}
	return p
}

// port is the port of service (a number or a name) for transport, 0 if
// unknown.
func (p ports) port(service, transport string) uint16 {
	if n, err := strconv.ParseUint(service, 10, 16); err == nil {
		return uint16(n)
	}
	return p[service+"/"+transport]
}
