package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/superserver"
	"go.uber.org/zap"
)

// kernelCounts reads the kernel's counts once, for one status or scrape:
// TCP connections accepted, by local address and port. The kernel keeps
// them whether or not an interface holds the address now, so an entry's
// count survives its address going away and coming back.
func (d *Daemon) kernelCounts() map[bpf.Key]uint64 {
	if d.counter == nil {
		return nil
	}
	counts, err := d.counter.Counts()
	if err != nil {
		d.log.Warn("bpf: reading the counts", zap.Error(err))
		return nil
	}
	return counts
}

// byAddress sums counts over ports.
func byAddress(counts map[bpf.Key]uint64) map[netip.Addr]uint64 {
	out := map[netip.Addr]uint64{}
	for k, n := range counts {
		out[k.Addr] += n
	}
	return out
}

// servicePorts is which ports count as a file's connections: the TCP
// ports of the services that use it, each with the services on it. A nil
// servicePorts counts every port: no service was found for the file, or
// one of its TCP services has a port ipwatchd does not know.
type servicePorts map[uint16][]string

// portsOf returns the ports of services, and a sentence for the status
// header saying what an entry's connections count.
func portsOf(services []superserver.Service, bpfOn bool) (servicePorts, string) {
	const kept = ", by the entry that serves the address now, kept while an address is away"
	if !bpfOn {
		return servicePorts{}, "not counted: the kernel does not count connections for ipwatchd (bpf off)"
	}
	ports := servicePorts{}
	for _, sv := range services {
		if sv.Transport != "tcp" {
			continue
		}
		if sv.Port == 0 {
			return nil, "TCP connections the kernel accepted on the entry's addresses, on any port (the port of " + sv.Name + ", " + sv.From + ", is not known)" + kept
		}
		if !slices.Contains(ports[sv.Port], sv.Name) {
			ports[sv.Port] = append(ports[sv.Port], sv.Name)
		}
	}
	switch {
	case len(services) == 0:
		return nil, "TCP connections the kernel accepted on the entry's addresses, on any port (no service found that uses this file)" + kept
	case len(ports) == 0:
		return ports, "not counted: no TCP service uses this file (the kernel counts TCP connections only)"
	}
	list := slices.Sorted(func(yield func(uint16) bool) {
		for p := range ports {
			if !yield(p) {
				return
			}
		}
	})
	var parts []string
	for _, p := range list {
		part := strconv.Itoa(int(p))
		if names := slices.DeleteFunc(slices.Clone(ports[p]), func(n string) bool { return n == part }); len(names) > 0 {
			part += " (" + strings.Join(names, ", ") + ")"
		}
		parts = append(parts, part)
	}
	return ports, fmt.Sprintf("TCP connections the kernel accepted on the entry's addresses on %s %s", plural(len(parts), "port", "ports"), strings.Join(parts, ", ")) + kept
}

// entryConns is one entry's share of the kernel's counts.
type entryConns struct {
	key   string
	total uint64
	ports map[uint16]uint64 // when the file's services give ports
}

// entryConnections gives each entry of f, by line, the connections to the
// addresses it serves now, counted on ports (every port when nil).
func entryConnections(f *conf.File, counts map[bpf.Key]uint64, ports servicePorts) map[int]*entryConns {
	out := map[int]*entryConns{}
	for k, n := range counts {
		if ports != nil && ports[k.Port] == nil {
			continue
		}
		e := f.Lookup(k.Addr).Entry
		if e == nil {
			continue
		}
		ec := out[e.Line]
		if ec == nil {
			ec = &entryConns{key: e.Key}
			out[e.Line] = ec
		}
		ec.total += n
		if ports != nil {
			if ec.ports == nil {
				ec.ports = map[uint16]uint64{}
			}
			ec.ports[k.Port] += n
		}
	}
	return out
}

// portCounts lists an entry's connections by port, every service port
// of its file included (0 where it had none), in port order.
func portCounts(ec *entryConns, ports servicePorts) []admin.PortCount {
	if len(ports) == 0 {
		return nil
	}
	out := make([]admin.PortCount, 0, len(ports))
	for p, names := range ports {
		pc := admin.PortCount{Port: p, Services: names}
		if ec != nil {
			pc.Connections = ec.ports[p]
		}
		out = append(out, pc)
	}
	slices.SortFunc(out, func(a, b admin.PortCount) int { return int(a.Port) - int(b.Port) })
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
