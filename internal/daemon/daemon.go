// Package daemon is ipwatchd: it keeps every conf file it serves parsed in
// memory as an immutable snapshot, reloads a file when it changes on disk,
// on SIGHUP or on request, follows the host's addresses through netlink,
// and answers virtuald's and ipwatchctl's questions on a Unix socket.
//
// It answers a resolve only from a snapshot read from the very file
// virtuald sees (same device, inode, size, mtime and ctime), and read late
// enough that this identity names its content (conf.Racy: two same-size
// writes within one timestamp granularity leave it unchanged); otherwise
// it says "stale" or "racy" and virtuald reads the file itself. So the
// daemon and the file never disagree, and the daemon only saves virtuald
// the parse: the root is still checked and entered by virtuald on every
// connection.
package daemon

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/addrs"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/server"
	"github.com/virtuald/virtuald/internal/relay"
	"github.com/virtuald/virtuald/internal/superserver"
	"go.uber.org/zap"
)

// maxAdopted bounds the conf files loaded because a virtuald asked about
// them (beyond those given with -conf).
const maxAdopted = 1024

// Config is what ipwatchd is started with.
type Config struct {
	Socket string
	// SocketGroup is the group the socket is given (its members may read
	// status, resolve and lookups); 0 keeps the one it is made with.
	SocketGroup int
	Confs       []string
	Log         *zap.Logger
	Version     string
	Metrics     string // address to serve Prometheus metrics on; "" for none
	// MetricsMaxEntries bounds the entries, and the unmapped addresses,
	// with series of their own (0: DefaultMetricsMaxEntries).
	MetricsMaxEntries int
	// BPF is "auto" (count connections in the kernel when possible),
	// "on" (fail to start without it) or "off" (and remove its pins);
	// "" is off without touching pins (for tests).
	BPF       string
	BPFPinDir string // "" for bpf.DefaultPinDir: one per network namespace
	// Relay is the syslog relay into every valid root (-relay-syslog),
	// nil for none.
	Relay *relay.Config
	// Services says where the super-servers' configuration is, to find
	// the services that start virtuald (nil: not looked for).
	Services *superserver.Sources
	// Recheck is how often every conf file's content is read again
	// whatever its status says (0: DefaultRecheck).
	Recheck time.Duration
}

// DefaultRecheck bounds how long the daemon may answer from content a
// conf file no longer holds when nothing it can see changed: a write
// through a shared mapping (mmap) leaves the file's identity, size and
// times as they were, and makes no inotify event. Reading a file of
// 1,000,000 entries and hashing it takes 62-76 ms here (BenchmarkReread1M):
// every 10 s, under 1% of a core at that size, nothing at usual sizes.
const DefaultRecheck = 10 * time.Second

// Daemon is one running ipwatchd.
type Daemon struct {
	cfg      Config
	log      *zap.Logger
	start    time.Time
	confs    *confSet
	tracker  *addrs.Tracker
	srv      *server.Server
	watch    *watcher
	metrics  net.Listener // nil without -metrics
	counter  *bpf.Counter // nil when the kernel does not count
	bpfState string       // "on", or "off: why"
	shed     shedding     // the kernel's rate= limits for per-connection services
	relay    *relay.Relay // nil without -relay-syslog
	services atomic.Pointer[serviceSet]

	loadMu  sync.Mutex // one load at a time
	pending struct {
		sync.Mutex
		paths map[string]bool
	}
	kick      chan struct{} // a file is queued for the loader
	reloadAll chan struct{} // SIGHUP: the loader reloads every file
	validate  chan struct{} // a new snapshot wants its roots checked
	refind    chan struct{} // a super-server's file changed
	recheck   atomic.Bool   // the validator checks every root again, however recent its passes

	queries struct{ ok, stale, racy, unknown, errors atomic.Uint64 }
	reloads atomic.Uint64
}

// New prepares a daemon: it opens the socket, so that a second daemon or a
// bad path fails at once, before anything else starts.
func New(cfg Config) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: cfg.Log, start: time.Now(), confs: newConfSet(), kick: make(chan struct{}, 1), reloadAll: make(chan struct{}, 1), validate: make(chan struct{}, 1), refind: make(chan struct{}, 1)}
	d.services.Store(&serviceSet{})
	d.pending.paths = make(map[string]bool)
	var err error
	d.tracker, err = addrs.New(addrs.Options{OnError: func(err error) {
		d.log.Warn("netlink", zap.Error(err))
	}})
	if err != nil {
		return nil, err
	}
	if d.watch, err = newWatcher(); err != nil {
		return nil, err
	}
	// The counter is attached before the socket appears: a client that
	// waits for the socket finds every later connection counted.
	if err := d.openBPF(); err != nil {
		d.watch.close()
		return nil, err
	}
	if err := d.openShedding(); err != nil {
		d.closeBPF()
		d.watch.close()
		return nil, err
	}
	d.srv, err = server.Listen(cfg.Socket)
	if err == nil && cfg.SocketGroup != 0 {
		if err = d.srv.SetGroup(cfg.SocketGroup); err != nil {
			d.srv.Close()
		}
	}
	if err != nil {
		d.closeBPF()
		d.watch.close()
		return nil, err
	}
	if cfg.Metrics != "" {
		if d.metrics, err = net.Listen("tcp", cfg.Metrics); err != nil {
			d.srv.Close()
			d.closeBPF()
			d.watch.close()
			return nil, err
		}
	}
	// A fresh daemon is not slow: clear what virtualds marked of the
	// one before.
	os.Remove(ipc.MarkFor(cfg.Socket).Path())
	d.relay = d.newRelay()
	d.srv.Handler = d.handle
	d.srv.Stream = d.stream
	d.srv.Inline = inline
	d.srv.OnError = func(err error) { d.log.Debug("client", zap.Error(err)) }
	for _, p := range cfg.Confs {
		d.adopt(p, adoptedConfigured)
	}
	d.watchServices()
	d.findServices()
	return d, nil
}

// closeBPF lets go of the counter; its pins stay and the kernel goes on
// counting while no daemon runs.
func (d *Daemon) closeBPF() {
	if d.counter != nil {
		d.counter.Close()
	}
	d.closeShedding()
}

// openBPF starts the kernel's connection counting as Config.BPF says.
func (d *Daemon) openBPF() error {
	pinDir := d.cfg.BPFPinDir
	if pinDir == "" {
		pinDir = bpf.DefaultPinDir
	}
	switch d.cfg.BPF {
	case "", "off":
		d.bpfState = "off: disabled with -bpf off"
		if d.cfg.BPF == "off" {
			if err := bpf.Remove(pinDir); err != nil {
				d.log.Warn("bpf: removing the pins", zap.String("pin_dir", pinDir), zap.Error(err))
			}
		}
		return nil
	case "auto", "on":
	default:
		return fmt.Errorf("-bpf must be auto, on or off, not %q", d.cfg.BPF)
	}
	why := bpf.Unavailable()
	if why == "" {
		c, err := bpf.Open(bpf.Options{PinDir: pinDir})
		if err == nil {
			d.counter, d.bpfState = c, "on"
			d.log.Info("bpf: counting connections in the kernel", zap.String("pin_dir", pinDir), zap.Bool("resumed", c.Resumed()))
			return nil
		}
		why = err.Error()
	}
	if d.cfg.BPF == "on" {
		return fmt.Errorf("-bpf on: %s", why)
	}
	d.bpfState = "off: " + why
	d.log.Warn("bpf: connections are not counted", zap.String("reason", why))
	return nil
}

// MetricsAddr is where the metrics are served, or nil.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metrics == nil {
		return nil
	}
	return d.metrics.Addr()
}
