// Package relay is ipwatchd's syslog relay (-relay-syslog): it serves a
// dev/log datagram socket inside the root of every valid conf entry and
// passes what arrives there on to the host's syslog, so that classic
// services log from inside their roots as they do outside (the Virtual
// Services HOWTO ran one `syslogd -a ROOT/dev/log` per root for this;
// jailkit's jk_socketd is the same idea with rate limits).
//
// Roots belong to tenants, so:
//   - The socket is made through descriptors, never a path walk: the root
//     is opened with virtuald's checks (chroot.Open), its dev/ with
//     openat2(RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH) and checked with fstat
//     to be root's and not writable by group or others (so nobody else
//     can put, replace or move anything in it), and the socket is bound
//     at /proc/self/fd/N/log through that descriptor. A dev/ that fails,
//     and anything already at dev/log (a link, a file, a socket another
//     process serves), is refused with a reason and left as it is. Only a
//     dead socket (one nobody listens on: a relay that was killed) is
//     replaced. The socket is removed, by the inode it was made with, when
//     its entry goes away and when the relay stops.
//   - Nothing a tenant sends is taken as a header: every relayed message
//     is the relay's own "<PRI>virtuald[KEY]: " (KEY: the conf keys that
//     map the root) followed by the tenant's text, its control characters
//     escaped and its length bounded. Only the severity and facility are
//     kept from the tenant's own header, within what a tenant may claim
//     (no kernel, authentication or log facility, nothing above err).
//   - Each root has its own reader goroutine and its own token bucket
//     (-relay-burst, -relay-rate), and may hold at most a burst of
//     messages in the one bounded queue toward the host's syslog: a
//     tenant that floods loses its own messages (counted as dropped), not
//     another's, and nothing a tenant does reaches the daemon's socket.
package relay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/internal/chroot"
	"golang.org/x/sys/unix"
)

// Config is how the relay is run.
type Config struct {
	Burst    int     // messages a root may send at once (and hold in the queue)
	Rate     float64 // messages a second a root may send after its burst
	MaxRoots int     // roots served at most; the others are refused, saying so
	HostLog  string  // the host's syslog socket ("" for /dev/log)
	// OnChange is told when a root's relay starts, stops or is refused
	// (reason), for the daemon's log; it may be nil.
	OnChange func(root, state, reason string)
}

// Defaults for ipwatchd's flags.
const (
	DefaultBurst    = 20
	DefaultRate     = 5
	DefaultMaxRoots = 4096
)

const (
	queueLen  = 4096 // messages toward the host's syslog, from every root
	readLen   = 8192 // a datagram read at most; the kernel cuts longer ones
	maxBody   = 2048 // bytes of a tenant's text relayed, after escaping
	maxLabel  = 200  // bytes of the keys in the header
	rcvBuffer = 64 << 10
)

// UnitRootsDir is where the shipped unit (dist/ipwatchd.service) lets the
// relay write under ProtectSystem=strict: the Virtual Services HOWTO's
// place for roots. Roots elsewhere need a drop-in.
const UnitRootsDir = "/virtual"

// Entry is a valid conf entry: its key, and the root it maps.
type Entry struct{ Key, Root string }

// Status is the relay of one root.
type Status struct {
	On      bool
	Reason  string // why it is off
	Relayed uint64
	Dropped uint64 // over the rate, or the queue full
}

// Relay serves the dev/log sockets of the roots it is given.
type Relay struct {
	cfg   Config
	queue chan message

	mu      sync.Mutex
	roots   map[string]*root  // served, by root path
	refused map[string]string // root path -> why not
	full    bool              // the last Sync had more roots than MaxRoots
	stopped bool

	relayed, dropped atomic.Uint64 // every root's, for the metrics
}

type message struct {
	r *root
	b []byte
}

// New makes a relay that serves nothing until Sync. Run must be running
// for messages to leave.
func New(cfg Config) *Relay {
	if cfg.HostLog == "" {
		cfg.HostLog = "/dev/log"
	}
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	if cfg.MaxRoots < 1 {
		cfg.MaxRoots = DefaultMaxRoots
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(string, string, string) {}
	}
	return &Relay{cfg: cfg, queue: make(chan message, queueLen), roots: map[string]*root{}, refused: map[string]string{}}
}

// Sync makes the relay serve exactly the roots of entries: it starts
// those it does not serve yet (trying the refused ones again), stops
// those no entry maps any more, and makes again a socket that someone
// removed. Entries past MaxRoots distinct roots are not served.
func (r *Relay) Sync(entries []Entry) {
	keys := map[string][]string{}
	full := false
	for _, e := range entries {
		if _, ok := keys[e.Root]; !ok && len(keys) == r.cfg.MaxRoots {
			full = true
			continue
		}
		keys[e.Root] = AddKey(keys[e.Root], e.Key)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.full = full
	for p, rt := range r.roots {
		if _, ok := keys[p]; !ok || !rt.intact() || !rt.atPath() {
			rt.close()
			delete(r.roots, p)
			r.cfg.OnChange(p, "off", "")
		}
	}
	for p := range r.refused {
		if _, ok := keys[p]; !ok {
			delete(r.refused, p)
		}
	}
	for p, ks := range keys {
		label := labelOf(ks)
		if rt := r.roots[p]; rt != nil {
			rt.label.Store(&label)
			continue
		}
		rt, err := r.open(p, label)
		if err != nil {
			if r.refused[p] != err.Error() {
				r.cfg.OnChange(p, "refused", err.Error())
			}
			r.refused[p] = err.Error()
			continue
		}
		delete(r.refused, p)
		r.roots[p] = rt
		r.cfg.OnChange(p, "on", "")
		go rt.read(r)
	}
}

// labelKeys is how many keys a label can show at most: each takes a
// byte and a comma at least.
const labelKeys = maxLabel/2 + 1

// smallest keeps the labelKeys smallest of keys, sorted, without
// duplicates: all that labelOf can show of them, so that a root mapped by
// a million lines costs a label of its first keys, not a sort of them all.
func smallest(keys []string) []string {
	slices.Sort(keys)
	keys = slices.Compact(keys)
	return keys[:min(len(keys), labelKeys)]
}

// AddKey adds key to a root's keys, keeping only what its label can show
// once they are many: a caller gathering the entries of a million lines
// keeps them to that too.
func AddKey(keys []string, key string) []string {
	keys = append(keys, key)
	if len(keys) == 2*labelKeys {
		keys = smallest(keys)
	}
	return keys
}

// labelOf is the header's KEY: the keys that map the root, sorted, bounded.
func labelOf(keys []string) string {
	s := strings.Join(smallest(keys), ",")
	if len(s) > maxLabel {
		s = s[:maxLabel] + "..."
	}
	return s
}

// Status reports the relay of the root at path.
func (r *Relay) Status(path string) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rt := r.roots[path]; rt != nil {
		if !rt.current() {
			return Status{Reason: "dev/log is no longer the relay's socket at this path (the root was renamed or replaced, or dev/log removed): the relay makes it again at the validator's next pass (ipwatchctl reload: now)"}
		}
		return Status{On: true, Relayed: rt.relayed.Load(), Dropped: rt.dropped.Load()}
	}
	if why, ok := r.refused[path]; ok {
		return Status{Reason: why}
	}
	if r.full {
		return Status{Reason: fmt.Sprintf("more roots than -relay-max-roots (%d)", r.cfg.MaxRoots)}
	}
	return Status{Reason: "not checked yet"}
}

// Counts reports every root's messages and how many roots are served or
// refused, for the metrics.
func (r *Relay) Counts() (relayed, dropped uint64, on, off int) {
	r.mu.Lock()
	on, off = len(r.roots), len(r.refused)
	r.mu.Unlock()
	return r.relayed.Load(), r.dropped.Load(), on, off
}

// Run passes the queued messages to the host's syslog until ctx ends,
// then removes every socket the relay made.
func (r *Relay) Run(ctx context.Context) error {
	host := &hostLog{path: r.cfg.HostLog, fd: -1}
	defer host.close()
	defer r.stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-r.queue:
			m.r.queued.Add(-1)
			if host.send(m.b) {
				m.r.relayed.Add(1)
				r.relayed.Add(1)
			} else {
				m.r.dropped.Add(1)
				r.dropped.Add(1)
			}
		}
	}
}

func (r *Relay) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	for p, rt := range r.roots {
		rt.close()
		delete(r.roots, p)
	}
}

// root is one served dev/log.
type root struct {
	path    string
	label   atomic.Pointer[string]
	dev     int      // dev/, O_PATH: the socket is made and removed through it
	sock    *os.File // the socket, in the runtime's poller
	sockDev uint64   // the socket's device and inode: only this one is ever removed
	sockIno uint64
	burst   float64
	rate    float64

	tokens float64 // the reader's own
	last   time.Time

	queued           atomic.Int64 // messages of this root in the queue
	relayed, dropped atomic.Uint64

	checkedAt atomic.Int64 // when Status last checked the path (unix ns)
	ok        atomic.Bool  // what it found
}

// read relays the root's datagrams until its socket is closed.
func (rt *root) read(r *Relay) {
	buf := make([]byte, readLen)
	for {
		n, err := rt.sock.Read(buf)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil || n == 0 {
			continue
		}
		if !rt.take(time.Now()) || rt.queued.Load() >= int64(rt.burst) {
			rt.dropped.Add(1)
			r.dropped.Add(1)
			continue
		}
		msg := Format(*rt.label.Load(), buf[:n])
		rt.queued.Add(1)
		select {
		case r.queue <- message{rt, msg}:
		default:
			rt.queued.Add(-1)
			rt.dropped.Add(1)
			r.dropped.Add(1)
		}
	}
}

// take spends a token of the root's bucket, if it has one.
func (rt *root) take(now time.Time) bool {
	if !rt.last.IsZero() {
		rt.tokens = min(rt.burst, rt.tokens+now.Sub(rt.last).Seconds()*rt.rate)
	}
	rt.last = now
	if rt.tokens < 1 {
		return false
	}
	rt.tokens--
	return true
}

// intact reports whether dev/log is still the socket the relay made.
func (rt *root) intact() bool {
	var st unix.Stat_t
	err := unix.Fstatat(rt.dev, "log", &st, unix.AT_SYMLINK_NOFOLLOW)
	return err == nil && st.Dev == rt.sockDev && st.Ino == rt.sockIno
}

// statusCheck bounds how often Status checks a root's path again: status
// may list every entry, many of one root.
const statusCheck = time.Second

// current reports, at most statusCheck old, whether the socket is intact
// and still at the root's path.
func (rt *root) current() bool {
	now := time.Now().UnixNano()
	if now-rt.checkedAt.Load() > int64(statusCheck) {
		rt.ok.Store(rt.intact() && rt.atPath())
		rt.checkedAt.Store(now)
	}
	return rt.ok.Load()
}

// atPath reports whether the root's path still leads, under virtuald's
// checks, to the dev/ the relay serves: after a rename (two roots that
// swapped names, a root replaced by a copy) the relay follows the path,
// as the conf's mapping does, not the directory it opened.
func (rt *root) atPath() bool {
	d, err := chroot.Open(rt.path)
	if err != nil {
		return false
	}
	defer d.Close()
	dev, err := unix.Openat2(d.Fd(), "dev", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH,
	})
	if err != nil {
		return false
	}
	defer unix.Close(dev)
	var now, served unix.Stat_t
	return unix.Fstat(dev, &now) == nil && unix.Fstat(rt.dev, &served) == nil && now.Dev == served.Dev && now.Ino == served.Ino
}

// close stops reading and removes the socket, if it is still the one the
// relay made (dev/ is root's, so nobody else can swap it in between).
func (rt *root) close() {
	rt.sock.Close()
	if rt.intact() {
		unix.Unlinkat(rt.dev, "log", 0)
	}
	unix.Close(rt.dev)
}

// open makes the relay's socket at dev/log inside the root at path.
func (r *Relay) open(path, label string) (*root, error) {
	d, err := chroot.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the root fails virtuald's checks: %v", err)
	}
	defer d.Close()
	dev, err := prepare(d.Fd(), path, true)
	if err != nil {
		return nil, err
	}
	rt, err := bindAt(dev, path)
	if err != nil {
		unix.Close(dev)
		return nil, err
	}
	rt.burst, rt.rate, rt.tokens = float64(r.cfg.Burst), r.cfg.Rate, float64(r.cfg.Burst)
	rt.label.Store(&label)
	return rt, nil
}

// Check reports whether the relay can serve dev/log in the root whose
// checked descriptor is rootFd (for `ipwatchctl check`): nil when dev/ is
// in place and dev/log is free or a dead socket.
func Check(rootFd int, path string) error {
	dev, err := prepare(rootFd, path, false)
	if err == nil {
		unix.Close(dev)
	}
	return err
}

// prepare opens and checks dev/ in the root and makes sure dev/log can be
// made: nothing there, or a socket nobody serves (which it removes when
// remove is set). It returns dev/'s descriptor.
func prepare(rootFd int, path string, remove bool) (int, error) {
	// The host's own root: its dev/log is the host's syslog, the one the
	// relay writes to.
	var st, slash unix.Stat_t
	if err := unix.Fstat(rootFd, &st); err != nil {
		return -1, err
	}
	if err := unix.Stat("/", &slash); err != nil || (st.Dev == slash.Dev && st.Ino == slash.Ino) {
		return -1, errors.New("the root is the host's own /: its dev/log is the host's syslog")
	}
	show := strings.TrimSuffix(path, "/") + "/dev"
	dev, err := unix.Openat2(rootFd, "dev", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH,
	})
	if err != nil {
		var lst unix.Stat_t
		switch {
		case err == unix.ENOENT:
			return -1, fmt.Errorf("%s does not exist (ipwatchctl install -dev ROOT makes it)", show)
		case unix.Fstatat(rootFd, "dev", &lst, unix.AT_SYMLINK_NOFOLLOW) == nil && lst.Mode&unix.S_IFMT == unix.S_IFLNK:
			return -1, fmt.Errorf("%s is a symbolic link: not followed", show)
		case err == unix.ENOTDIR:
			return -1, fmt.Errorf("%s is not a directory", show)
		}
		return -1, fmt.Errorf("%s: %v", show, err)
	}
	if err := unix.Fstat(dev, &st); err != nil {
		unix.Close(dev)
		return -1, err
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		unix.Close(dev)
		return -1, fmt.Errorf("%s is owned by uid %d with mode %04o: the relay puts its socket only in a dev/ owned by root and not writable by group or others", show, st.Uid, st.Mode&0o7777)
	}
	if err := free(dev, show+"/log", remove); err != nil {
		unix.Close(dev)
		return -1, err
	}
	return dev, nil
}

// free makes sure dev/log can be bound: nothing there, or a dead socket
// (a relay that was killed left it), which it removes when remove is set.
// A live socket is someone else's syslog (a `syslogd -a`, a bind mount),
// and anything else is not the relay's to replace.
func free(dev int, show string, remove bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(dev, "log", &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		return nil
	case err != nil:
		return fmt.Errorf("%s: %v", show, err)
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("%s is a symbolic link: not followed or replaced", show)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return fmt.Errorf("%s is in the way (not a socket): not replaced", show)
	}
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(probe)
	// dev/ is root's: nobody can swap log for a link between the fstatat
	// and this connect.
	switch err := unix.Connect(probe, &unix.SockaddrUnix{Name: fmt.Sprintf("/proc/self/fd/%d/log", dev)}); err {
	case nil:
		return fmt.Errorf("%s is a socket another process serves: not replaced", show)
	case unix.ECONNREFUSED:
		if !remove {
			return nil
		}
		return unix.Unlinkat(dev, "log", 0)
	default:
		return fmt.Errorf("%s: %v", show, err)
	}
}

// bindAt binds a datagram socket at log in the checked dev/ (descriptor
// dev), writable by every user (the services run as the entries' users).
func bindAt(dev int, path string) (*root, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuffer)
	show := strings.TrimSuffix(path, "/") + "/dev/log"
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: fmt.Sprintf("/proc/self/fd/%d/log", dev)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %v", show, err)
	}
	var st unix.Stat_t
	err = unix.Fstatat(dev, "log", &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		err = unix.Fchmodat(dev, "log", 0o666, 0)
	}
	if err != nil {
		unix.Close(fd)
		unix.Unlinkat(dev, "log", 0)
		return nil, fmt.Errorf("%s: %v", show, err)
	}
	return &root{path: path, dev: dev, sock: os.NewFile(uintptr(fd), show), sockDev: st.Dev, sockIno: st.Ino}, nil
}

// hostLog is the relay's connection to the host's syslog.
type hostLog struct {
	path string
	fd   int
}

// send writes one datagram, connecting again once when the host's syslog
// was restarted. A wedged syslog holds the relay's writer (never a
// reader, nor the daemon) for at most a second a message.
func (h *hostLog) send(b []byte) bool {
	for try := 0; try < 2; try++ {
		if h.fd < 0 {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return false
			}
			tv := unix.Timeval{Sec: 1}
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
			if err := unix.Connect(fd, &unix.SockaddrUnix{Name: h.path}); err != nil {
				unix.Close(fd)
				return false
			}
			h.fd = fd
		}
		for {
			_, err := unix.Write(h.fd, b)
			switch err {
			case nil:
				return true
			case unix.EINTR:
				continue
			case unix.ECONNREFUSED, unix.ENOTCONN:
				h.close()
			}
			break
		}
		if h.fd >= 0 {
			return false
		}
	}
	return false
}

func (h *hostLog) close() {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}
