// Package server serves the ipc protocol on a Unix socket for ipwatchd:
// bounded frames, a deadline on every request, the peer's credentials
// handed to the handler, and no client able to delay another.
//
// virtuald asks one question per connection, on every connection a host
// serves, so the common path is an event loop of raw system calls (epoll,
// accept4, read, write, close), the shape a C server would have: it reads
// requests without ever waiting on one client, answers the quick ones
// (Inline) itself, and hands the rest (status, reload, streams) to
// goroutines. Going through the Go net package instead cost each question
// two wake-ups of its poller.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"golang.org/x/sys/unix"
)

// Handler answers one request. req[0] is the version (already checked),
// req[1] the operation. It returns the reply's fields.
type Handler func(peer unix.Ucred, req [][]byte) [][]byte

// Streamer answers a request whose reply is several frames (a status of
// every entry): it returns nil for any other request, or a function that
// writes the frames with send, each within the server's Timeout, so that a
// client that stops reading is dropped and the daemon holds one frame of
// it at a time.
type Streamer func(peer unix.Ucred, req [][]byte) func(send func(fields [][]byte) error) error

// Server is a listening socket and its handler.
type Server struct {
	Handler Handler
	Stream  Streamer // may be nil
	// Inline reports whether the event loop may answer a request itself:
	// a question the handler answers in microseconds, without blocking
	// (may be nil: every request goes to a goroutine).
	Inline func(req [][]byte) bool
	// Timeout bounds the wait for each request and the write of its reply.
	Timeout time.Duration
	// MaxConns bounds the connections served at once; past it new ones
	// are closed at once, and their clients fall back to the file.
	MaxConns int
	// MaxPerUID bounds the connections one uid other than root may hold
	// waiting for their request at once: a member of the socket's group
	// holding idle connections cannot take root's virtualds' share.
	MaxPerUID int
	// OnError is told about connection-level failures (may be nil).
	OnError func(error)

	lfd    int // the listening socket, non-blocking
	path   string
	wg     sync.WaitGroup
	active atomic.Int64 // connections handed to goroutines
}

// Listen creates the socket at path, in a directory that must be owned by
// root and not writable by others (it is made, mode 0755, if missing). A
// socket that a server answers on is never taken over: Listen refuses to
// start, naming the process there. Only a stale socket, one nobody
// listens on (an earlier run killed before it could remove it), is
// replaced; any other file is not. The socket gets mode 0660.
func Listen(path string) (*Server, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("%s must be a directory owned by uid %d and not writable by group or others", dir, os.Geteuid())
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// The socket is made with mode 0660 from the start (umask), not
	// chmodded after: there is no moment when it is open to everyone.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	old := unix.Umask(0o117)
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: path})
	unix.Umask(old)
	if err == nil {
		err = unix.Listen(fd, 4096)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return &Server{lfd: fd, path: path, Timeout: 2 * time.Second, MaxConns: 16384, MaxPerUID: 1024}, nil
}

// SetGroup gives the socket to group gid (mode 0660 stays), so that its
// members may ask status, resolve and lookups without root (ipwatchd
// -socket-group); what changes the daemon's state checks the peer's uid
// itself. The socket's directory is the daemon's own (Listen checked it),
// so the path names the socket Listen bound.
func (s *Server) SetGroup(gid int) error {
	if err := unix.Fchownat(unix.AT_FDCWD, s.path, -1, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("giving %s to group %d: %w", s.path, gid, err)
	}
	return nil
}

// lockDir makes Listen's probe, removal and bind one step across
// processes, with flock on the socket's directory: two daemons starting at
// once would otherwise both find a socket stale, and the second would
// remove the one the first had just bound.
func lockDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return func() { unix.Close(fd) }, nil
}

// removeStale removes the socket at path if it is stale: a connection to
// it is refused. Whatever else it finds (a server that answers, one too
// busy to, a file that is not a socket, an error) it refuses, since
// removing a live daemon's socket would leave its clients to the new one
// and the old one answering nobody.
func removeStale(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	peer, err := probe(path)
	switch {
	case err == nil:
		return fmt.Errorf("another ipwatchd answers at %s (pid %d, uid %d): stop it first", path, peer.Pid, peer.Uid)
	case errors.Is(err, unix.ENOENT):
		return nil // removed meanwhile, by its server closing
	case errors.Is(err, unix.EAGAIN):
		return fmt.Errorf("another ipwatchd listens at %s, its queue full: stop it first", path)
	case !errors.Is(err, unix.ECONNREFUSED):
		return fmt.Errorf("%s: cannot tell whether the socket there is stale: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing the stale socket: %w", err)
	}
	return nil
}

// probe connects to the socket at path and returns the credentials of the
// process that listens on it (as of its listen). The connection is
// non-blocking, so a server whose queue is full fails it (EAGAIN) instead
// of stalling Listen.
func probe(path string) (*unix.Ucred, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, err
	}
	return unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
}

// Close closes and removes the socket of a server that will not Serve.
func (s *Server) Close() error {
	os.Remove(s.path)
	return unix.Close(s.lfd)
}

// pending is a connection whose request has not all arrived.
type pending struct {
	peer  unix.Ucred
	since time.Time
	buf   []byte
}

// Serve answers connections until ctx ends, then closes the socket,
// removes it, and waits for the connections handed to goroutines.
func (s *Server) Serve(ctx context.Context) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	defer unix.Close(ep)
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	defer unix.Close(wake)
	for _, fd := range []int{s.lfd, wake} {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return os.NewSyscallError("epoll_ctl", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { unix.Write(wake, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })
	defer stop()
	err = s.loop(ctx, ep, wake)
	s.Close()
	s.wg.Wait()
	return err
}

// loop is the event loop: it accepts, reads requests as they arrive, and
// answers or hands them on, until wake is written to.
func (s *Server) loop(ctx context.Context, ep, wake int) error {
	conns := waiting{fds: map[int]*pending{}, perUID: map[uint32]int{}}
	defer func() {
		for fd := range conns.fds {
			unix.Close(fd)
		}
	}()
	events := make([]unix.EpollEvent, 256)
	lastScan := time.Now()
	for {
		n, err := unix.EpollWait(ep, events, 100)
		if err != nil && err != unix.EINTR {
			return os.NewSyscallError("epoll_wait", err)
		}
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			switch {
			case fd == wake:
				return nil
			case fd == s.lfd:
				s.acceptAll(ctx, ep, conns)
			default:
				if p := conns.fds[fd]; p != nil && s.readRequest(ctx, fd, p) {
					unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil)
					conns.remove(fd)
				}
			}
		}
		if now := time.Now(); now.Sub(lastScan) >= 100*time.Millisecond {
			lastScan = now
			for fd, p := range conns.fds {
				if now.Sub(p.since) > s.Timeout {
					s.report(fmt.Errorf("pid %d uid %d: no whole request within %v", p.peer.Pid, p.peer.Uid, s.Timeout))
					unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil)
					unix.Close(fd)
					conns.remove(fd)
				}
			}
		}
	}
}

// waiting are the connections whose request is not all there yet, and
// how many of them each uid holds.
type waiting struct {
	fds    map[int]*pending
	perUID map[uint32]int
}

func (w *waiting) add(fd int, p *pending) {
	w.fds[fd] = p
	w.perUID[p.peer.Uid]++
}

func (w *waiting) remove(fd int) {
	p := w.fds[fd]
	delete(w.fds, fd)
	if w.perUID[p.peer.Uid]--; w.perUID[p.peer.Uid] <= 0 {
		delete(w.perUID, p.peer.Uid)
	}
}

// acceptAll accepts every connection waiting, reads what each has sent,
// and watches those whose request is not all there.
func (s *Server) acceptAll(ctx context.Context, ep int, conns waiting) {
	for {
		fd, _, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if err != unix.EAGAIN && err != unix.EINTR && err != unix.ECONNABORTED {
				s.report(os.NewSyscallError("accept4", err))
				if err == unix.EMFILE || err == unix.ENFILE {
					time.Sleep(10 * time.Millisecond) // do not spin on a full table
				}
			}
			return
		}
		if len(conns.fds)+int(s.active.Load()) >= s.MaxConns {
			unix.Close(fd)
			s.report(errors.New("too many connections: one closed at once"))
			continue
		}
		cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			unix.Close(fd)
			s.report(os.NewSyscallError("SO_PEERCRED", err))
			continue
		}
		if cred.Uid != 0 && s.MaxPerUID > 0 && conns.perUID[cred.Uid] >= s.MaxPerUID {
			unix.Close(fd)
			s.report(fmt.Errorf("pid %d uid %d: more than %d connections of one uid waiting: one closed at once", cred.Pid, cred.Uid, s.MaxPerUID))
			continue
		}
		p := &pending{peer: *cred, since: time.Now()}
		if s.readRequest(ctx, fd, p) {
			continue
		}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
			unix.Close(fd)
			continue
		}
		conns.add(fd, p)
	}
}

// readRequest reads what fd has of its request without waiting. It
// reports whether the connection is done with here: answered, handed on,
// or closed.
func (s *Server) readRequest(ctx context.Context, fd int, p *pending) bool {
	if p.buf == nil {
		p.buf = make([]byte, 0, 1024)
	}
	for {
		if len(p.buf) == cap(p.buf) {
			p.buf = append(p.buf, 0)[:len(p.buf)]
		}
		n, err := unix.Read(fd, p.buf[len(p.buf):cap(p.buf)])
		switch {
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
			continue
		case err != nil || n == 0:
			if len(p.buf) > 0 {
				s.report(fmt.Errorf("pid %d uid %d: the connection ended inside a request", p.peer.Pid, p.peer.Uid))
			}
			unix.Close(fd)
			return true
		}
		p.buf = p.buf[:len(p.buf)+n]
		if len(p.buf) < 4 {
			continue
		}
		size, err := ipc.FrameLen([4]byte(p.buf[:4]), ipc.MaxRequest)
		if err != nil {
			s.report(fmt.Errorf("pid %d uid %d: %w", p.peer.Pid, p.peer.Uid, err))
			unix.Close(fd)
			return true
		}
		switch {
		case len(p.buf) > 4+size:
			s.report(fmt.Errorf("pid %d uid %d: %w: bytes after the request", p.peer.Pid, p.peer.Uid, ipc.ErrFrame))
			unix.Close(fd)
			return true
		case len(p.buf) == 4+size:
			s.dispatch(ctx, fd, p.peer, p.buf[4:])
			return true
		}
		if cap(p.buf) < 4+size {
			p.buf = append(make([]byte, 0, 4+size), p.buf...)
		}
	}
}

// dispatch answers a whole request: itself when it is quick, else on a
// goroutine. fd is the connection's from here on.
func (s *Server) dispatch(ctx context.Context, fd int, peer unix.Ucred, body []byte) {
	req, err := ipc.Decode(body)
	switch {
	case err != nil:
		s.answer(ctx, fd, ipc.ErrorReply(err.Error()))
		return
	case len(req) < 2:
		s.answer(ctx, fd, ipc.ErrorReply("a request needs a version and an operation"))
		return
	case string(req[0]) != ipc.Version:
		s.answer(ctx, fd, ipc.ErrorReply("unsupported protocol version "+string(req[0])+"; this daemon speaks "+ipc.Version))
		return
	}
	if s.Stream != nil {
		if stream := s.Stream(peer, req); stream != nil {
			s.handOff(ctx, fd, func(c *net.UnixConn) {
				if err := stream(func(fields [][]byte) error { return s.write(c, fields) }); err != nil {
					s.report(fmt.Errorf("pid %d uid %d: %w", peer.Pid, peer.Uid, err))
				}
			})
			return
		}
	}
	if s.Inline != nil && s.Inline(req) {
		s.answer(ctx, fd, s.Handler(peer, req))
		return
	}
	req = cloneFields(req) // body is the loop's buffer
	s.handOff(ctx, fd, func(c *net.UnixConn) {
		if err := s.write(c, s.Handler(peer, req)); err != nil {
			s.report(err)
		}
	})
}

// answer writes a reply on the loop when the socket takes it whole at
// once, as a fresh one does; what it does not take goes on a goroutine.
func (s *Server) answer(ctx context.Context, fd int, reply [][]byte) {
	frame, err := ipc.Encode(reply...)
	if err != nil {
		frame, _ = ipc.Encode(ipc.ErrorReply(err.Error())...)
	}
	n, err := unix.Write(fd, frame)
	if err == nil && n == len(frame) {
		unix.Close(fd)
		return
	}
	rest := frame[max(n, 0):]
	s.handOff(ctx, fd, func(c *net.UnixConn) {
		c.SetWriteDeadline(time.Now().Add(s.Timeout))
		if _, err := c.Write(rest); err != nil {
			s.report(err)
		}
	})
}

// handOff runs serve on a goroutine with fd as a net.UnixConn (the Go
// poller waits for it, not a thread), and closes it after.
func (s *Server) handOff(ctx context.Context, fd int, serve func(c *net.UnixConn)) {
	f := os.NewFile(uintptr(fd), "ipc")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.report(err)
		return
	}
	c := fc.(*net.UnixConn)
	s.wg.Add(1)
	s.active.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.active.Add(-1)
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
		defer stop()
		serve(c)
	}()
}

func cloneFields(req [][]byte) [][]byte {
	out := make([][]byte, len(req))
	for i, f := range req {
		out[i] = append([]byte(nil), f...)
	}
	return out
}

func (s *Server) report(err error) {
	if s.OnError != nil {
		s.OnError(err)
	}
}

// write sends one frame within the server's Timeout.
func (s *Server) write(c *net.UnixConn, fields [][]byte) error {
	frame, err := ipc.Encode(fields...)
	if err != nil {
		frame, _ = ipc.Encode(ipc.ErrorReply(err.Error())...)
	}
	c.SetWriteDeadline(time.Now().Add(s.Timeout))
	_, err = c.Write(frame)
	return err
}
