package addrs

import (
	"encoding/binary"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// update is one rtnetlink message: a link (ifindex, link) or an address
// (key, addr) that now exists as given, or is gone (del).
type update struct {
	del     bool
	isLink  bool
	ifindex int
	link    link
	key     addrKey
	addr    Address
}

// parse reads the body of a link or address message; ok is false for
// anything else.
func parse(typ uint16, b []byte) (u update, ok bool) {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		u, ok = parseLink(b)
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		u, ok = parseAddr(b)
	}
	u.del = typ == unix.RTM_DELLINK || typ == unix.RTM_DELADDR
	return u, ok
}

func parseLink(b []byte) (update, bool) {
	if len(b) < unix.SizeofIfInfomsg {
		return update{}, false
	}
	m := nl.DeserializeIfInfomsg(b)
	// AF_BRIDGE messages on this group describe bridge ports: a port
	// leaving its bridge sends an RTM_DELLINK while the link lives on.
	if m.Family != unix.AF_UNSPEC {
		return update{}, false
	}
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return update{}, false
	}
	u := update{isLink: true, ifindex: int(m.Index)}
	// IFF_RUNNING is the kernel's "operationally up" (carrier, RFC 2863).
	u.link.up = m.Flags&unix.IFF_UP != 0 && m.Flags&unix.IFF_RUNNING != 0
	for _, a := range attrs {
		if a.Attr.Type == unix.IFLA_IFNAME {
			u.link.name = unix.ByteSliceToString(a.Value)
		}
	}
	return u, true
}

func parseAddr(b []byte) (update, bool) {
	if len(b) < unix.SizeofIfAddrmsg {
		return update{}, false
	}
	m := nl.DeserializeIfAddrmsg(b)
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return update{}, false
	}
	a := Address{PrefixLen: int(m.Prefixlen), Ifindex: int(m.Index), Flags: uint32(m.Flags)}
	var local, address netip.Addr
	for _, at := range attrs {
		switch at.Attr.Type {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(at.Value)
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(at.Value)
		case unix.IFA_LABEL:
			a.Label = unix.ByteSliceToString(at.Value)
		case unix.IFA_FLAGS: // all the flags; ifa_flags has room for the low 8 only
			if len(at.Value) >= 4 {
				a.Flags = binary.NativeEndian.Uint32(at.Value)
			}
		}
	}
	// IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on a
	// point-to-point link and otherwise the address again (IPv6 sends
	// only IFA_ADDRESS when there is no peer).
	a.Addr = local
	if !a.Addr.IsValid() {
		a.Addr = address
	}
	if !a.Addr.IsValid() {
		return update{}, false
	}
	if a.Addr.Is4In6() {
		a.Addr, a.PrefixLen = a.Addr.Unmap(), max(a.PrefixLen-96, 0)
	}
	u := update{key: addrKey{ifindex: a.Ifindex, addr: a.Addr}, addr: a}
	if m.Family == unix.AF_INET {
		u.key.plen, u.key.peer = a.PrefixLen, address
	}
	return u, true
}
