package main

import (
	"fmt"
	"strings"

	"github.com/virtuald/virtuald/internal/install"
	"golang.org/x/sys/unix"
)

// What check says about a root's dev/ beyond its existence: the two
// things a chroot usually gets wrong there, found without trusting
// anything a tenant put in it.

// devNullProblem says what is wrong with dev/null inside the root whose
// checked descriptor is rootFd ("" when it is the character device 1:3).
// A service that runs as root and writes to a missing dev/null creates a
// regular file there, and every later write fills it.
func devNullProblem(rootFd int, root string) string {
	show := strings.TrimSuffix(root, "/") + "/dev/null"
	// As the service will see it: links resolved, but never out of the
	// root; O_PATH opens nothing, so a FIFO or device is not touched.
	fd, err := unix.Openat2(rootFd, "dev/null", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err == unix.ENOENT {
		return show + " is missing: services that open it fail, or (as root) create it as a regular file (ipwatchctl install -dev ROOT makes it)"
	}
	if err != nil {
		return fmt.Sprintf("%s: %v", show, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Sprintf("%s: %v", show, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == unix.Mkdev(1, 3) {
		return ""
	}
	what := install.Kind(st.Mode)
	if st.Mode&unix.S_IFMT == unix.S_IFCHR {
		what = fmt.Sprintf("the character device %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return show + " is " + what + ", not the character device 1:3: what services write there is kept, or goes elsewhere (remove it, then ipwatchctl install -dev ROOT)"
}

// devLogDead says whether dev/log inside the root is a socket nobody
// listens on (a root copied with cp -a carries its host's socket, dead
// there): the service's log messages are then lost without a word. It
// is opened with O_PATH, refusing any symbolic link (its own name too), and
// reached for connect(2) through that descriptor (/proc/self/fd/N), so
// the socket asked is the one checked, never a path a tenant swaps in.
// It returns "" when something listens, or when dev/log is absent (said
// elsewhere).
func devLogDead(rootFd int, root string) string {
	show := strings.TrimSuffix(root, "/") + "/dev/log"
	fd, err := unix.Openat2(rootFd, "dev/log", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case err == unix.ENOENT:
		return ""
	case err == unix.ELOOP:
		return show + " is, or is reached through, a symbolic link: check does not follow it, so cannot tell whether anything listens there"
	case err != nil:
		return fmt.Sprintf("%s: %v", show, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Sprintf("%s: %v", show, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return show + " is " + install.Kind(st.Mode) + ", not a socket: the service's log messages are lost"
	}
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Sprintf("%s: %v", show, err)
	}
	defer unix.Close(probe)
	switch err := unix.Connect(probe, &unix.SockaddrUnix{Name: fmt.Sprintf("/proc/self/fd/%d", fd)}); err {
	case nil, unix.EPROTOTYPE: // a datagram or a stream listener: alive
		return ""
	case unix.ECONNREFUSED:
		return show + " is a socket nobody listens on (copied from elsewhere, or left by a syslog that stopped): the service's log messages are lost"
	default:
		return fmt.Sprintf("%s: cannot tell whether anything listens there: %v", show, err)
	}
}
