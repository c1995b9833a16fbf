package ipc

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Why a call found no usable daemon. virtuald falls back to the file on
// any of them and logs which.
var (
	ErrAbsent    = errors.New("daemon absent")
	ErrUntrusted = errors.New("daemon not trusted")
	ErrSlow      = errors.New("daemon too slow")
)

// Call connects to the daemon at path, checks that the peer runs as root or
// as this process's own uid (SO_PEERCRED: a listener anyone else put at
// the path is not believed), sends one request and returns the reply's
// fields. The whole exchange must finish within timeout. It uses raw
// descriptors so that virtuald does not start the runtime's poller.
func Call(path string, timeout time.Duration, replyLimit int, fields ...string) ([][]byte, error) {
	deadline := time.Now().Add(timeout)
	req, err := EncodeStrings(fields...)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err {
	case nil:
	case unix.EAGAIN:
		return nil, fmt.Errorf("%w: its backlog at %s is full", ErrSlow, path)
	case unix.ENOENT, unix.ECONNREFUSED:
		return nil, fmt.Errorf("%w: %s: %v", ErrAbsent, path, err)
	default:
		return nil, fmt.Errorf("%w: connecting to %s: %v", ErrAbsent, path, err)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("%w: SO_PEERCRED: %v", ErrUntrusted, err)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("%w: the listener at %s runs as uid %d (pid %d), not root", ErrUntrusted, path, cred.Uid, cred.Pid)
	}
	for len(req) > 0 {
		if err := wait(fd, unix.POLLOUT, deadline); err != nil {
			return nil, err
		}
		n, err := unix.Write(fd, req)
		if err != nil && err != unix.EAGAIN && err != unix.EINTR {
			return nil, fmt.Errorf("%w: writing: %v", ErrAbsent, err)
		}
		if n > 0 {
			req = req[n:]
		}
	}
	var prefix [4]byte
	if err := readFull(fd, prefix[:], deadline); err != nil {
		return nil, err
	}
	n, err := FrameLen(prefix, replyLimit)
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	if err := readFull(fd, body, deadline); err != nil {
		return nil, err
	}
	return Decode(body)
}

func readFull(fd int, b []byte, deadline time.Time) error {
	for len(b) > 0 {
		if err := wait(fd, unix.POLLIN, deadline); err != nil {
			return err
		}
		n, err := unix.Read(fd, b)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("%w: reading: %v", ErrAbsent, err)
		case n == 0:
			return fmt.Errorf("%w: it closed the connection", ErrAbsent)
		}
		b = b[n:]
	}
	return nil
}

func wait(fd int, events int16, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%w: no answer within the time limit", ErrSlow)
		}
		ms := int(left.Milliseconds())
		if ms == 0 {
			ms = 1
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(p, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}
