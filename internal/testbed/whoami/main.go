// Command whoami is the service the end-to-end tests and the demo put in
// every root: it tells the client which root it runs in (the contents of
// /ROOT-NAME), as which uid, gid and supplementary groups, whether
// no_new_privs is set, how many LISTEN_* variables it was given, and which
// descriptors it inherited. It is built
// static so that it runs in a root that holds nothing else.
//
// On a stream socket (or anything else) it writes one line and exits, or, in a root holding
// /HOLD, waits for the client to close first (to keep a connection busy in
// the tests of concurrency limits); in a root holding /LINGER it first
// starts a copy of itself that stays, with no descriptor, in its session
// after it ends (as a service's forgotten child would), and adds
// "linger=PID" to its line. On a datagram socket
// (inetd "dgram udp wait") it receives one datagram and answers it from the
// address it was sent to.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// inherited is computed first, before this program opens anything itself.
var inherited = openFDs()

func openFDs() string {
	var fds []string
	for fd := 0; fd < 1024; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			fds = append(fds, fmt.Sprint(fd))
		}
	}
	return strings.Join(fds, ",")
}

func main() {
	// fd 0 is a socket under a super-server, a pipe or a terminal under
	// ipwatchctl exec.
	typ, _ := unix.GetsockoptInt(0, unix.SOL_SOCKET, unix.SO_TYPE)
	if typ == unix.SOCK_DGRAM {
		os.Exit(answerDatagram())
	}
	if os.Getenv("WHOAMI_LINGER") != "" {
		unix.Pause()
		return
	}
	line := report()
	if _, err := os.Stat("/LINGER"); err == nil {
		pid, err := syscall.ForkExec(os.Args[0], os.Args[:1], &syscall.ProcAttr{Env: []string{"WHOAMI_LINGER=1"}})
		if err != nil {
			pid = -1
		}
		line = strings.TrimSuffix(line, "\n") + " linger=" + strconv.Itoa(pid) + "\n"
	}
	unix.Write(1, []byte(line))
	if _, err := os.Stat("/HOLD"); err == nil {
		b := make([]byte, 512)
		for {
			if n, err := unix.Read(0, b); n <= 0 || err != nil {
				return
			}
		}
	}
}

func report() string {
	name, err := os.ReadFile("/ROOT-NAME")
	root := strings.TrimSpace(string(name))
	if err != nil {
		root = "?"
	}
	groups, _ := unix.Getgroups()
	nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	listen := 0 // systemd's socket-passing variables, which must not reach a service
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") {
			listen++
		}
	}
	return fmt.Sprintf("root=%s uid=%d gid=%d groups=%v nnp=%d listen=%d fds=%s\n",
		root, unix.Getuid(), unix.Getgid(), groups, nnp, listen, inherited)
}

// answerDatagram reads the queued datagram with its destination address and
// replies from that address, as a UDP service on a multi-address host must.
func answerDatagram() int {
	domain, _ := unix.GetsockoptInt(0, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if domain == unix.AF_INET6 {
		unix.SetsockoptInt(0, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	} else {
		unix.SetsockoptInt(0, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	_, oobn, _, from, err := unix.Recvmsg(0, buf, oob, 0)
	if err != nil {
		return 1
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	var reply []byte
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO:
			var pi unix.Inet4Pktinfo
			copy(pi.Spec_dst[:], m.Data[8:12])
			reply = unix.PktInfo4(&pi)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO:
			var pi unix.Inet6Pktinfo
			copy(pi.Addr[:], m.Data[:16])
			reply = unix.PktInfo6(&pi)
		}
	}
	if err := unix.Sendmsg(0, []byte(report()), reply, from, 0); err != nil {
		return 1
	}
	return 0
}
