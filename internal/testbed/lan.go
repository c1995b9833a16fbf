package testbed

import "strconv"

// LAN is an Ethernet segment between network namespaces: a bridge in a
// namespace of its own, with one veth pair per host plugged into it. The
// hosts see an eth0 and each other, and nothing beyond.
type LAN struct {
	*NetNS // holds the bridge, br0
	ports  int
}

// NewLAN makes the bridge's namespace, removed at cleanup with every veth
// pair plugged into it.
func NewLAN(t T) *LAN {
	t.Helper()
	l := &LAN{NetNS: NewNetNS(t)}
	l.IP("link", "add", "br0", "type", "bridge")
	l.IP("link", "set", "br0", "up")
	return l
}

// Plug gives host an eth0 on the segment with the addresses given (with
// their prefix length, "192.0.2.11/24"), and brings it up.
func (l *LAN) Plug(host *NetNS, addrs ...string) {
	l.t.Helper()
	l.ports++
	port := "port" + strconv.Itoa(l.ports)
	l.IP("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.Path)
	l.IP("link", "set", port, "master", "br0", "up")
	for _, a := range addrs {
		host.IP("addr", "add", a, "dev", "eth0")
	}
	host.IP("link", "set", "eth0", "up")
}
