// Package server serves the ipc protocol on a Unix socket for ipwatchd:
// bounded frames, a deadline on every request, the peer's credentials
// handed to the handler, and one goroutine per connection so that a slow,
// silent or hostile client delays nobody else.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
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
	// Timeout bounds the wait for each request and the write of its reply.
	Timeout time.Duration
	// MaxConns bounds the connections served at once; past it new ones
	// are closed at once, and their clients fall back to the file.
	MaxConns int
	// OnError is told about connection-level failures (may be nil).
	OnError func(error)

	ln   *net.UnixListener
	path string
	wg   sync.WaitGroup
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
	old := unix.Umask(0o117)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	return &Server{ln: ln, path: path, Timeout: 2 * time.Second, MaxConns: 16384}, nil
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

// Close closes the socket of a server that will not Serve.
func (s *Server) Close() error { return s.ln.Close() }

// Serve accepts connections until ctx ends, then closes the socket (which
// removes it) and waits for the connections in progress.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	slots := make(chan struct{}, s.MaxConns)
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close()
			s.report(errors.New("too many connections: one closed at once"))
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-slots }()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) report(err error) {
	if s.OnError != nil {
		s.OnError(err)
	}
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	peer, err := peerCred(c)
	if err != nil {
		s.report(err)
		return
	}
	// One request per connection, as every client asks: the reply is
	// followed by the close, with no wait for another request (that wait
	// would cost every question a wake-up of its own).
	c.SetDeadline(time.Now().Add(s.Timeout))
	body, err := readRequest(c)
	if err != nil {
		if err != io.EOF {
			s.report(fmt.Errorf("pid %d uid %d: %w", peer.Pid, peer.Uid, err))
		}
		return
	}
	var reply [][]byte
	req, err := ipc.Decode(body)
	switch {
	case err != nil:
		reply = errorReply(err.Error())
	case len(req) < 2:
		reply = errorReply("a request needs a version and an operation")
	case string(req[0]) != ipc.Version:
		reply = errorReply("unsupported protocol version " + string(req[0]) + "; this daemon speaks " + ipc.Version)
	default:
		if s.Stream != nil {
			if stream := s.Stream(*peer, req); stream != nil {
				if err := stream(func(fields [][]byte) error { return s.write(c, fields) }); err != nil {
					s.report(fmt.Errorf("pid %d uid %d: %w", peer.Pid, peer.Uid, err))
				}
				return
			}
		}
		reply = s.Handler(*peer, req)
	}
	if err := s.write(c, reply); err != nil {
		s.report(err)
	}
}

// readRequest reads one request frame and returns its body, usually in
// one read: its length prefix and body arrive together.
func readRequest(c *net.UnixConn) ([]byte, error) {
	buf := make([]byte, 1024)
	got := 0
	for got < 4 {
		n, err := c.Read(buf[got:])
		if err != nil {
			if err == io.EOF && got > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		got += n
	}
	n, err := ipc.FrameLen([4]byte(buf[:4]), ipc.MaxRequest)
	if err != nil {
		return nil, err
	}
	if got > 4+n {
		return nil, fmt.Errorf("%w: %d bytes after the request", ipc.ErrFrame, got-4-n)
	}
	if 4+n > len(buf) {
		buf = append(buf[:got], make([]byte, 4+n-got)...)
	}
	if _, err := io.ReadFull(c, buf[got:4+n]); err != nil {
		return nil, err
	}
	return buf[4 : 4+n], nil
}

// write sends one frame within the server's Timeout.
func (s *Server) write(c *net.UnixConn, fields [][]byte) error {
	frame, err := ipc.Encode(fields...)
	if err != nil {
		frame, _ = ipc.Encode(errorReply(err.Error())...)
	}
	c.SetWriteDeadline(time.Now().Add(s.Timeout))
	_, err = c.Write(frame)
	return err
}

func errorReply(msg string) [][]byte {
	return [][]byte{[]byte(ipc.ReplyError), []byte(msg)}
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
