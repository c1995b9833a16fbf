package main

import (
	"os"

	"golang.org/x/sys/unix"
)

func unixSocketPair() (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.Close(fds[1])
	return os.NewFile(uintptr(fds[0]), "unix"), nil
}
