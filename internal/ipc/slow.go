package ipc

import (
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SlowHold is how long the daemon is left alone once it was found too
// slow. A wedged daemon (stopped, swapping, in a debugger) would otherwise
// cost every connection the whole wait for an answer; a dead one costs
// nothing, since connecting fails at once. One connection at a time asks
// again after SlowHold, so a daemon that recovers is used again within
// SlowHold and one wait.
const SlowHold = 500 * time.Millisecond

// ProbeTimeout bounds the question that asks again after a hold. A daemon
// that runs answers in well under a millisecond; one that cannot answer in
// this long is still slow, and the connection that asked should not pay
// the whole wait of a normal question for learning so.
const ProbeTimeout = 25 * time.Millisecond

// Health decides whether to ask the daemon now.
type Health interface {
	Begin() Attempt
}

// Attempt is what Health.Begin decided. When Ask is false the daemon is
// held to be slow and Why says so; otherwise the caller asks (with
// ProbeTimeout when Probe is set) and then calls Done with whether the
// daemon was slow.
type Attempt struct {
	Ask, Probe bool
	Why        string
	done       func(slow bool)
}

// Done reports how the question went.
func (a Attempt) Done(slow bool) {
	if a.done != nil {
		a.done(slow)
	}
}

func held(why string) Attempt { return Attempt{Why: why} }

// SlowMark is Health shared by every virtuald started per connection: a
// file beside the socket whose mtime says "slow until then". Its mtime is
// set in one system call, so a reader never sees half a mark, and it is
// read with one stat, so the common case (no mark) costs one ENOENT. It is
// believed only when it is a regular file owned by root and not writable by
// others: nobody else can make a daemon look slow (a virtuald that does not
// run as root cannot write beside root's socket, and simply waits). An expired mark is probed by
// the one connection that holds its flock; the others keep to the file.
type SlowMark struct{ path string }

// MarkFor returns the mark that goes with the daemon's socket.
func MarkFor(socket string) SlowMark { return SlowMark{path: socket + ".slow"} }

// Path is where the mark lives, so the daemon can remove it when it starts.
func (m SlowMark) Path() string { return m.path }

func trustedMark(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Uid == 0 && st.Mode&0o022 == 0
}

// Begin implements Health.
func (m SlowMark) Begin() Attempt {
	first := Attempt{Ask: true, done: m.afterFirstAsk}
	var st unix.Stat_t
	if err := unix.Lstat(m.path, &st); err != nil || !trustedMark(&st) {
		return first
	}
	now := time.Now()
	if until := time.Unix(st.Mtim.Unix()); until.After(now) {
		return held(heldWhy(until))
	}
	fd, err := unix.Open(m.path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return first
	}
	if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
		unix.Close(fd)
		return held(probingWhy)
	}
	if unix.Fstat(fd, &st) != nil || !trustedMark(&st) {
		unix.Close(fd)
		return first
	}
	if until := time.Unix(st.Mtim.Unix()); until.After(now) {
		unix.Close(fd) // renewed by the prober before us
		return held(heldWhy(until))
	}
	return Attempt{Ask: true, Probe: true, done: func(slow bool) {
		if slow {
			setMark(fd, time.Now().Add(SlowHold))
		} else {
			unix.Unlink(m.path)
		}
		unix.Close(fd)
	}}
}

const probingWhy = "slow (another connection is asking whether it recovered)"

// afterFirstAsk puts the mark when a daemon nobody held slow was slow.
func (m SlowMark) afterFirstAsk(slow bool) {
	if !slow {
		return
	}
	fd, err := unix.Open(m.path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err == unix.EEXIST {
		fd, err = unix.Open(m.path, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return // not ours to write (not root): each connection waits
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && trustedMark(&st) {
		setMark(fd, time.Now().Add(SlowHold))
	}
	unix.Close(fd)
}

// setMark sets the mark's mtime: futimens(3), utimensat with a NULL path.
func setMark(fd int, until time.Time) {
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(until.UnixNano())}
	unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
}

func heldWhy(until time.Time) string {
	return "slow (it did not answer in time; asked again after " + until.UTC().Format("15:04:05.000") + ")"
}

// SlowMemo is Health kept in memory, for the resident accept mode: the
// same rule as SlowMark without a file.
type SlowMemo struct {
	mu      sync.Mutex
	until   time.Time
	probing bool
}

// Begin implements Health.
func (m *SlowMemo) Begin() Attempt {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.until.IsZero():
		return Attempt{Ask: true, done: m.done}
	case time.Now().Before(m.until):
		return held(heldWhy(m.until))
	case m.probing:
		return held(probingWhy)
	}
	m.probing = true
	return Attempt{Ask: true, Probe: true, done: m.done}
}

func (m *SlowMemo) done(slow bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.probing = false
	if slow {
		m.until = time.Now().Add(SlowHold)
	} else {
		m.until = time.Time{}
	}
}
