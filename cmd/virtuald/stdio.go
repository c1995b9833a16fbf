package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// stdio keeps the super-server's fds 1 and 2 apart while virtuald works.
// Under inetd they are the client's socket: with /dev/null in their place
// until the exec, no runtime error, panic, loader or library message can
// ever reach a client, whatever goes wrong. restore puts them back just
// before the exec.
type stdio struct {
	saved [2]int // copies of fds 1 and 2 (close-on-exec), -1 when not shielded
	null  int    // the host's /dev/null (close-on-exec), kept for reshield
}

// shieldStdio points fds 1 and 2 at /dev/null when they are sockets,
// keeping copies. It runs first in main, before anything can fail.
func shieldStdio() (stdio, error) {
	s := stdio{saved: [2]int{-1, -1}, null: -1}
	for i, fd := range []int{1, 2} {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			continue
		}
		if s.null < 0 {
			var err error
			if s.null, err = unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
				return s, fmt.Errorf("cannot open /dev/null to keep fds 1 and 2 away from the client: %w", err)
			}
		}
		saved, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return s, fmt.Errorf("keeping fd %d: %w", fd, err)
		}
		s.saved[i] = saved
		if err := unix.Dup3(s.null, fd, 0); err != nil {
			return s, fmt.Errorf("pointing fd %d at /dev/null: %w", fd, err)
		}
	}
	return s, nil
}

// stderr is the descriptor that was fd 2 when virtuald started.
func (s stdio) stderr() int {
	if s.saved[1] >= 0 {
		return s.saved[1]
	}
	return 2
}

// restore puts fds 1 and 2 back as the super-server gave them, for the
// service: the last step before the exec.
func (s stdio) restore() error {
	for i, fd := range []int{1, 2} {
		if s.saved[i] < 0 {
			continue
		}
		if err := unix.Dup3(s.saved[i], fd, 0); err != nil {
			return fmt.Errorf("restoring fd %d: %w", fd, err)
		}
	}
	return nil
}

// reshield points fds 1 and 2 at /dev/null again after an exec failed,
// the host's one opened before the chroot (the root's could be anything).
func (s stdio) reshield() {
	for i, fd := range []int{1, 2} {
		if s.saved[i] >= 0 {
			unix.Dup3(s.null, fd, 0)
		}
	}
}

// serviceFiles are the descriptors 0-2 a service started as a child gets:
// the super-server's, as restore would put them back.
func (s stdio) serviceFiles() []int {
	files := []int{0, 1, 2}
	for i := range s.saved {
		if s.saved[i] >= 0 {
			files[1+i] = s.saved[i]
		}
	}
	return files
}

// release lets go of the connection once a child serves it, so that it
// ends when the service closes it: fd 0 and the kept copies of 1 and 2
// are closed (0 pointed at /dev/null, which nothing reads).
func (s *stdio) release() {
	if s.null < 0 {
		s.null, _ = unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if s.null >= 0 {
		unix.Dup3(s.null, 0, 0)
	} else {
		unix.Close(0)
	}
	for i := range s.saved {
		if s.saved[i] >= 0 {
			unix.Close(s.saved[i])
			s.saved[i] = -1
		}
	}
}
