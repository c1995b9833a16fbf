// Package socket finds out what a super-server handed virtuald on a
// descriptor: whether it is an IP socket at all, stream or datagram, and
// its local and remote addresses.
//
// A stream socket from inetd's nowait, systemd's Accept=yes or tcpserver is
// connected, so getsockname gives the address the client connected to even
// when the listener was bound to a wildcard. A datagram socket of a
// "dgram udp wait" service is the listener itself, usually bound to a
// wildcard; the destination of the first queued datagram, read with
// MSG_PEEK and IP_PKTINFO or IPV6_RECVPKTINFO, is the address the client
// used. The kernel fills the pktinfo address from the packet's header at
// receive-message time, so it is right even when the option is set after the
// datagram was queued (its ifindex and spec_dst are not, and are not used).
package socket

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Conn describes the socket on a descriptor.
type Conn struct {
	Stream bool
	Local  netip.AddrPort
	Remote netip.AddrPort // zero if unknown
	// Wildcard is set for a datagram socket bound to a wildcard address:
	// Local is then the first datagram's destination, and the socket
	// carries every address's datagrams.
	Wildcard bool
}

// Inspect examines fd. For a datagram socket bound to a wildcard it waits
// at most peekTimeout for a datagram to learn the destination from.
func Inspect(fd int, peekTimeout time.Duration) (Conn, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Conn{}, fmt.Errorf("fd %d is not open", fd)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return Conn{}, fmt.Errorf("fd %d is %s, not a socket: virtuald is meant to be started by inetd, systemd or tcpserver with the connection on fd 0", fd, describe(st.Mode))
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return Conn{}, fmt.Errorf("fd %d: SO_DOMAIN: %w", fd, err)
	}
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		name := fmt.Sprintf("family %d", domain)
		if domain == unix.AF_UNIX {
			name = "Unix"
		}
		return Conn{}, fmt.Errorf("fd %d is a %s socket, not an IP socket", fd, name)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return Conn{}, fmt.Errorf("fd %d: SO_TYPE: %w", fd, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return Conn{}, fmt.Errorf("fd %d: getsockname: %w", fd, err)
	}
	local := addrPort(sa)
	switch typ {
	case unix.SOCK_STREAM:
		if acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc != 0 {
			return Conn{}, fmt.Errorf("fd %d is a listening socket: the inetd line must say nowait", fd)
		}
		c := Conn{Stream: true, Local: local}
		if peer, err := unix.Getpeername(fd); err == nil {
			c.Remote = addrPort(peer)
		}
		return c, nil
	case unix.SOCK_DGRAM:
		c := Conn{Local: local}
		if local.Addr().IsUnspecified() {
			dst, src, err := peekDestination(fd, domain, peekTimeout)
			if err != nil {
				return Conn{}, err
			}
			c.Local = netip.AddrPortFrom(dst, local.Port())
			c.Remote = src
			c.Wildcard = true
		} else {
			// Bound to one address, the destination is known; the
			// source, for the log, is the queued datagram's (inetd
			// starts virtuald for one), peeked without waiting.
			var b [1]byte
			if _, _, _, from, err := unix.Recvmsg(fd, b[:], nil, unix.MSG_PEEK|unix.MSG_DONTWAIT); err == nil {
				c.Remote = addrPort(from)
			}
		}
		return c, nil
	}
	return Conn{}, fmt.Errorf("fd %d: socket type %d is neither stream nor datagram", fd, typ)
}

func describe(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a pipe"
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFCHR:
		return "a character device (a terminal, if run by hand)"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFBLK:
		return "a block device"
	}
	return "not a socket"
}

// AddrPort is the address and port of an IP socket address (an
// IPv4-mapped IPv6 address unmapped), zero for any other.
func AddrPort(sa unix.Sockaddr) netip.AddrPort { return addrPort(sa) }

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// peekDestination reads the destination and source of the first queued
// datagram without consuming it, so the service still receives it. The
// socket belongs to the super-server and outlives this process, so the
// pktinfo option is put back as it was.
func peekDestination(fd, domain int, timeout time.Duration) (dst netip.Addr, src netip.AddrPort, err error) {
	level, opt := unix.IPPROTO_IP, unix.IP_PKTINFO
	if domain == unix.AF_INET6 {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO
	}
	old, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		return dst, src, fmt.Errorf("fd %d: reading pktinfo option: %w", fd, err)
	}
	if old == 0 {
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			return dst, src, fmt.Errorf("fd %d: setting pktinfo option: %w", fd, err)
		}
		defer unix.SetsockoptInt(fd, level, opt, 0)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dst, src, fmt.Errorf("fd %d: poll: %w", fd, err)
		}
		if n == 0 {
			return dst, src, fmt.Errorf("fd %d: no datagram arrived within %v", fd, timeout)
		}
		break
	}
	var buf [1]byte
	var oob [128]byte
	_, oobn, _, from, err := unix.Recvmsg(fd, buf[:], oob[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return dst, src, fmt.Errorf("fd %d: peeking at the datagram: %w", fd, err)
	}
	src = addrPort(from)
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return dst, src, fmt.Errorf("fd %d: control message: %w", fd, err)
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			var a [4]byte
			copy(a[:], m.Data[8:12]) // struct in_pktinfo: ifindex, spec_dst, addr
			return netip.AddrFrom4(a).Unmap(), src, nil
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			var a [16]byte
			copy(a[:], m.Data[:16]) // struct in6_pktinfo: addr, ifindex
			return netip.AddrFrom16(a).Unmap(), src, nil
		}
	}
	return dst, src, errors.New("the datagram came without a destination address (no pktinfo)")
}
