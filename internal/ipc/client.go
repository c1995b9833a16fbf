package ipc

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Why a call found no usable daemon, or the daemon did not answer a
// resolve from its copy. virtuald reads the file on any of them and logs
// which; the daemon's own are worded to follow "daemon=" in that line.
var (
	ErrAbsent    = errors.New("daemon absent")
	ErrUntrusted = errors.New("daemon not trusted")
	ErrSlow      = errors.New("daemon too slow")
	ErrStale     = errors.New("its copy of the conf is stale")
	ErrRacy      = errors.New("the conf changed too recently for its copy to be vouched for")
	ErrUnknown   = errors.New("conf unknown to it")
	// ErrDenied: the socket is there but this process may not connect
	// (EACCES): a daemon may well be running. Only root and the socket's
	// group (ipwatchd -socket-group) may ask.
	ErrDenied = errors.New("permission denied")
)

// Client asks the daemon at Socket, one request per connection, each
// within Timeout. It checks that the peer runs as root or as this
// process's own uid (SO_PEERCRED: a listener anyone else put at the path
// is not believed). It uses raw descriptors so that virtuald does not
// start the runtime's poller.
type Client struct {
	Socket  string
	Timeout time.Duration
}

// Replies larger than these are refused: an answer is a few hundred bytes,
// a count reply a number.
const (
	answerLimit     = 64 << 10
	countReplyLimit = 1024
)

// Resolve asks which entry serves r.Addr; see ParseResolveReply for the
// errors beside the connection's (ErrAbsent, ErrUntrusted, ErrSlow).
func (c Client) Resolve(r ResolveRequest) (*Answer, error) {
	var buf [512]byte // a request with a path of PATH_MAX grows past it
	reply, err := c.Call(r.AppendFrame(buf[:0]), answerLimit)
	if err != nil {
		return nil, err
	}
	return ParseResolveReply(reply)
}

// Count reports connections and returns the daemon's generation of the
// conf file; see ParseCountReply for the errors.
func (c Client) Count(r CountRequest) (generation uint64, err error) {
	frame, err := r.AppendFrame(nil)
	if err != nil {
		return 0, err
	}
	reply, err := c.Call(frame, countReplyLimit)
	if err != nil {
		return 0, err
	}
	return ParseCountReply(reply)
}

// Call sends one request frame and returns the fields of its reply, which
// may be up to replyLimit bytes. The whole exchange must finish within the
// client's Timeout.
func (c Client) Call(frame []byte, replyLimit int) ([][]byte, error) {
	deadline := time.Now().Add(c.Timeout)
	fd, err := request(c.Socket, deadline, frame)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readFrame(fd, deadline, replyLimit)
}

// CallStream sends one request whose reply is streamed (several frames,
// the last ReplyEnd) and hands each frame to onFrame, each within the
// client's Timeout of the one before. An error reply ends the stream with
// a *RefusedError.
func (c Client) CallStream(frame []byte, onFrame func([][]byte) error) error {
	fd, err := request(c.Socket, time.Now().Add(c.Timeout), frame)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		frame, err := readFrameExact(fd, time.Now().Add(c.Timeout), MaxReply)
		if err != nil {
			return err
		}
		status, _, err := SplitReply(frame)
		switch {
		case err != nil:
			return err
		case status == ReplyEnd:
			return nil
		}
		if err := onFrame(frame); err != nil {
			return err
		}
	}
}

// request connects, checks the peer and sends the request frame; the
// caller closes the descriptor.
func request(path string, deadline time.Time, req []byte) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := connect(fd, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	// A fresh socket's buffer takes a request at once: wait only when
	// it does not (every system call counts on virtuald's path).
	for len(req) > 0 {
		n, err := unix.Write(fd, req)
		switch {
		case err == unix.EAGAIN:
			if err := wait(fd, unix.POLLOUT, deadline); err != nil {
				unix.Close(fd)
				return -1, err
			}
		case err == unix.EINTR:
		case err != nil:
			unix.Close(fd)
			return -1, fmt.Errorf("%w: writing: %v", ErrAbsent, err)
		}
		if n > 0 {
			req = req[n:]
		}
	}
	return fd, nil
}

func connect(fd int, path string) error {
	switch err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err {
	case nil:
	case unix.EAGAIN:
		return fmt.Errorf("%w: its backlog at %s is full", ErrSlow, path)
	case unix.ENOENT, unix.ECONNREFUSED:
		return fmt.Errorf("%w: %s: %v", ErrAbsent, path, err)
	case unix.EACCES, unix.EPERM:
		return fmt.Errorf("%w: connecting to %s", ErrDenied, path)
	default:
		return fmt.Errorf("%w: connecting to %s: %v", ErrAbsent, path, err)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("%w: SO_PEERCRED: %v", ErrUntrusted, err)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: the listener at %s runs as uid %d (pid %d), not root", ErrUntrusted, path, cred.Uid, cred.Pid)
	}
	return nil
}

// readFrameExact reads one frame of a stream, and not a byte of the next.
func readFrameExact(fd int, deadline time.Time, limit int) ([][]byte, error) {
	var prefix [4]byte
	if err := readFull(fd, prefix[:], deadline); err != nil {
		return nil, err
	}
	n, err := FrameLen(prefix, limit)
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	if err := readFull(fd, body, deadline); err != nil {
		return nil, err
	}
	return Decode(body)
}

// readFrame reads the one frame of a reply: usually in one read, the
// length prefix and an answer's body together. Anything after the frame
// breaks the protocol (a reply is one frame).
func readFrame(fd int, deadline time.Time, limit int) ([][]byte, error) {
	buf := make([]byte, 4+answerSize)
	got, err := readSome(fd, buf, 4, deadline)
	if err != nil {
		return nil, err
	}
	n, err := FrameLen([4]byte(buf[:4]), limit)
	if err != nil {
		return nil, err
	}
	if got > 4+n {
		return nil, fmt.Errorf("%w: %d bytes after the frame", ErrFrame, got-4-n)
	}
	if 4+n > len(buf) {
		buf = append(buf[:got], make([]byte, 4+n-got)...)
	}
	if err := readFull(fd, buf[got:4+n], deadline); err != nil {
		return nil, err
	}
	return Decode(buf[4 : 4+n])
}

// answerSize is what one read takes at first: an answer fits (a status
// needs more reads).
const answerSize = 4096

// readSome reads into b until it holds at least min bytes, and returns
// how many it holds; it waits for the descriptor only when a read would
// block.
func readSome(fd int, b []byte, min int, deadline time.Time) (int, error) {
	got := 0
	for got < min {
		n, err := unix.Read(fd, b[got:])
		switch {
		case err == unix.EAGAIN:
			if err := wait(fd, unix.POLLIN, deadline); err != nil {
				return got, err
			}
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return got, fmt.Errorf("%w: reading: %v", ErrAbsent, err)
		case n == 0:
			return got, fmt.Errorf("%w: it closed the connection", ErrAbsent)
		}
		got += n
	}
	return got, nil
}

func readFull(fd int, b []byte, deadline time.Time) error {
	_, err := readSome(fd, b, len(b), deadline)
	return err
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
