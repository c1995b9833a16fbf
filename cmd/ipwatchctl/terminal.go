package main

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A program exec starts inside a root is the tenant's code: it never gets
// a descriptor of the operator's. It gets a terminal of its own (a new
// pseudo-terminal, in a new session) when the operator has one, pipes
// otherwise, and exec relays between them and the operator's descriptors
// until the program ends. Then the program's process group is killed and
// the relay is cut: whatever of the tenant's is left can no longer read
// what the operator types, push input into the operator's terminal
// (TIOCSTI on a terminal that is its own reaches only itself) or write to
// it.

// drainTime bounds how long, after the program ended, exec still copies
// output that a process left behind keeps writing.
const drainTime = 200 * time.Millisecond

// session is the relay between the operator's descriptors and the
// program's.
type session struct {
	child      []int      // the program's descriptors 0, 1, 2
	childFiles []*os.File // exec's copies of them, closed once the program has them
	inputs     []*os.File // what exec writes the operator's input to
	outputs    []*os.File // what exec copies to the operator's stdout and stderr
	tty        *os.File   // the pty's master, nil with pipes
	restore    func()     // gives the operator's terminal its mode back
	copying    sync.WaitGroup
	operator   [3]*os.File
}

// newSession makes the program's descriptors: a pseudo-terminal when fd 0
// is a terminal, pipes otherwise.
func newSession(operator [3]*os.File) (*session, error) {
	if operator[0] == nil {
		return nil, errors.New("exec has no descriptors 0-2")
	}
	s := &session{operator: operator, restore: func() {}}
	if mode, err := unix.IoctlGetTermios(int(operator[0].Fd()), unix.TCGETS); err == nil {
		return s, s.openTerminal(mode)
	}
	return s, s.openPipes()
}

func (s *session) openTerminal(mode *unix.Termios) error {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	m := os.NewFile(uintptr(master), "pty")
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return err
	}
	// The peer is opened through the master, never by a /dev/pts path.
	peer, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		m.Close()
		return errno
	}
	// The program's terminal starts as the operator's is (erase, line
	// discipline, size); then the operator's goes raw, so that every key,
	// ^C included, reaches the program's terminal as a byte.
	unix.IoctlSetTermios(int(peer), unix.TCSETS, mode)
	s.tty = m
	s.resize()
	s.child = []int{int(peer), int(peer), int(peer)}
	s.childFiles = []*os.File{os.NewFile(peer, "pty peer")}
	s.inputs, s.outputs = []*os.File{m}, []*os.File{m}
	raw := *mode
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	in := int(s.operator[0].Fd())
	if err := unix.IoctlSetTermios(in, unix.TCSETS, &raw); err != nil {
		s.closeChild()
		m.Close()
		return err
	}
	s.restore = func() { unix.IoctlSetTermios(in, unix.TCSETS, mode) }
	return nil
}

func (s *session) openPipes() error {
	var ends [3][2]*os.File
	for i := range ends {
		r, w, err := os.Pipe()
		if err != nil {
			for _, e := range ends[:i] {
				e[0].Close()
				e[1].Close()
			}
			return err
		}
		ends[i] = [2]*os.File{r, w}
	}
	s.child = []int{int(ends[0][0].Fd()), int(ends[1][1].Fd()), int(ends[2][1].Fd())}
	s.inputs = []*os.File{ends[0][1]}
	s.outputs = []*os.File{ends[1][0], ends[2][0]}
	s.childFiles = []*os.File{ends[0][0], ends[1][1], ends[2][1]}
	return nil
}

// closeChild closes exec's copies of the program's descriptors, once the
// program has them.
func (s *session) closeChild() {
	for _, f := range s.childFiles {
		f.Close()
	}
}

// resize gives the program's terminal the operator's size.
func (s *session) resize() {
	if ws, err := unix.IoctlGetWinsize(int(s.operator[0].Fd()), unix.TIOCGWINSZ); err == nil {
		unix.IoctlSetWinsize(int(s.tty.Fd()), unix.TIOCSWINSZ, ws)
	}
}

// relay copies the operator's input to the program and its output to the
// operator. The input copy is never waited for: it may be blocked reading
// the operator's terminal, and ends with exec.
func (s *session) relay() {
	go func() {
		io.Copy(s.inputs[0], s.operator[0])
		if s.tty == nil {
			s.inputs[0].Close() // the program sees the end of its input
		}
	}()
	for i, out := range s.outputs {
		s.copying.Add(1)
		go func() {
			defer s.copying.Done()
			io.Copy(s.operator[1+i], out)
		}()
	}
}

// finish cuts the relay once the program has ended: output still queued
// is copied for at most drainTime, then every descriptor exec holds to the
// program's side is closed and the operator's terminal is restored.
func (s *session) finish() {
	deadline := time.Now().Add(drainTime)
	for _, out := range s.outputs {
		out.SetReadDeadline(deadline)
	}
	s.copying.Wait()
	for _, f := range s.inputs {
		f.Close()
	}
	for _, f := range s.outputs {
		f.Close()
	}
	s.restore()
}

// forward passes the signals an operator's tools send exec to the
// program's process group, and the operator's window size to its terminal.
func (s *session) forward(pid int) (stop func()) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGHUP, unix.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig == unix.SIGWINCH {
					if s.tty != nil {
						s.resize()
					}
					continue
				}
				unix.Kill(-pid, sig.(unix.Signal))
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}
