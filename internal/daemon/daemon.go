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
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/addrs"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/ipc/server"
	"github.com/virtuald/virtuald/internal/sdnotify"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// maxAdopted bounds the conf files loaded because a virtuald asked about
// them (beyond those given with -conf).
const maxAdopted = 1024

// Config is what ipwatchd is started with.
type Config struct {
	Socket  string
	Confs   []string
	Log     *zap.Logger
	Version string
	Metrics string // address to serve Prometheus metrics on; "" for none
	// MetricsMaxEntries bounds the entries, and the unmapped addresses,
	// with series of their own (0: DefaultMetricsMaxEntries).
	MetricsMaxEntries int
	// BPF is "auto" (count connections in the kernel when possible),
	// "on" (fail to start without it) or "off" (and remove its pins);
	// "" is off without touching pins (for tests).
	BPF       string
	BPFPinDir string // "" for bpf.DefaultPinDir: one per network namespace
}

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

	loadMu  sync.Mutex // one load at a time
	pending struct {
		sync.Mutex
		paths map[string]bool
	}
	kick     chan struct{}
	validate chan struct{} // a new snapshot wants its roots checked

	queries struct{ ok, stale, racy, unknown, errors atomic.Uint64 }
	reloads atomic.Uint64
}

// New prepares a daemon: it opens the socket, so that a second daemon or a
// bad path fails at once, before anything else starts.
func New(cfg Config) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: cfg.Log, start: time.Now(), confs: newConfSet(), kick: make(chan struct{}, 1), validate: make(chan struct{}, 1)}
	d.pending.paths = make(map[string]bool)
	var err error
	d.tracker, err = addrs.New(addrs.Options{OnError: func(err error) {
		d.log.Warn("netlink", zap.Error(err))
	}})
	if err != nil {
		return nil, err
	}
	if d.watch, err = newWatcher(d.queue); err != nil {
		return nil, err
	}
	// The counter is attached before the socket appears: a client that
	// waits for the socket finds every later connection counted.
	if err := d.openBPF(); err != nil {
		d.watch.close()
		return nil, err
	}
	d.srv, err = server.Listen(cfg.Socket)
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
	d.srv.Handler = d.handle
	d.srv.Stream = d.stream
	d.srv.Inline = inline
	d.srv.OnError = func(err error) { d.log.Debug("client", zap.Error(err)) }
	for _, p := range cfg.Confs {
		d.adopt(p)
	}
	return d, nil
}

// closeBPF lets go of the counter; its pins stay and the kernel goes on
// counting while no daemon runs.
func (d *Daemon) closeBPF() {
	if d.counter != nil {
		d.counter.Close()
	}
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

// Run serves until ctx ends: the address tracker, the loader, the file
// watcher and the socket, each a task; READY=1 goes to systemd once the
// first address dump and the first load of every file are done.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var failed struct {
		once sync.Once
		err  error
	}
	task := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				failed.once.Do(func() { failed.err = fmt.Errorf("%s: %w", name, err) })
				cancel()
			}
		}()
	}
	task("addresses", d.tracker.Run)
	task("watcher", d.watch.run)
	d.loadAll()
	task("loader", d.loader)
	task("validator", d.validator)
	select {
	case <-d.tracker.Ready():
	case <-ctx.Done():
	}
	if ctx.Err() == nil {
		d.log.Info("ready", zap.String("socket", d.cfg.Socket), zap.Int("confs", d.confs.len()),
			zap.Int("addresses", len(d.tracker.Snapshot().All())))
		sdnotify.Notify("READY=1")
	}
	task("socket", d.srv.Serve)
	if d.metrics != nil {
		task("metrics", func(ctx context.Context) error { return d.serveMetrics(ctx, d.metrics) })
	}
	<-ctx.Done()
	sdnotify.Notify("STOPPING=1")
	d.watch.close()
	wg.Wait()
	d.closeBPF()
	return failed.err
}

// adopt adds path to the files served and queues its first load.
func (d *Daemon) adopt(path string) {
	if _, created := d.confs.add(path); created {
		d.watch.add(path)
		d.queue(path)
	}
}

// queue asks the loader to (re)load path soon.
func (d *Daemon) queue(path string) {
	d.pending.Lock()
	d.pending.paths[path] = true
	d.pending.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *Daemon) loader(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.kick:
		}
		d.pending.Lock()
		paths := d.pending.paths
		d.pending.paths = make(map[string]bool)
		d.pending.Unlock()
		for p := range paths {
			if c := d.confs.get(p); c != nil {
				d.loadOne(c)
			}
		}
	}
}

func (d *Daemon) loadOne(c *confFile) {
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	start := time.Now()
	changed, err := d.confs.load(c)
	d.recheckRacy(c)
	switch {
	case err != nil:
		fields := []zap.Field{zap.String("conf", c.path), zap.Error(err)}
		if s := c.cur.Load(); s != nil {
			fields = append(fields, zap.Uint64("kept_generation", s.generation))
		}
		d.log.Error("load failed; the last good copy stays", fields...)
	case changed:
		s := c.cur.Load()
		d.reloads.Add(1)
		d.kickValidator()
		d.log.Info("loaded", zap.String("conf", c.path), zap.Uint64("generation", s.generation),
			zap.Int("entries", len(s.file.Entries)), zap.Int("problems", len(s.file.Errors)),
			zap.Duration("took", time.Since(start)))
		for _, e := range s.file.Errors {
			d.log.Warn("conf problem", zap.String("conf", c.path), zap.String("problem", e.Error()))
		}
	}
}

// recheckRacy schedules the read again that ends a racy snapshot, once
// its timestamps' granularity has passed; d.loadMu is held.
func (d *Daemon) recheckRacy(c *confFile) {
	s := c.cur.Load()
	if s == nil || !s.racy() {
		return
	}
	wait := time.Until(s.racyUntil) + time.Millisecond
	if c.recheck == nil {
		c.recheck = time.AfterFunc(wait, func() { d.queue(c.path) })
		return
	}
	c.recheck.Reset(wait)
}

// MetricsAddr is where the metrics are served, or nil.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metrics == nil {
		return nil
	}
	return d.metrics.Addr()
}

// ReloadAll reloads every file now, for SIGHUP and the reload operation,
// telling systemd around it.
func (d *Daemon) ReloadAll() {
	sdnotify.Notify(sdnotify.Reloading())
	d.loadAll()
	sdnotify.Notify("READY=1")
}

func (d *Daemon) loadAll() {
	for _, c := range d.confs.all() {
		d.loadOne(c)
	}
}

// handle answers the requests the socket's event loop (inline) or its
// goroutines hand it.
func (d *Daemon) handle(peer unix.Ucred, req [][]byte) [][]byte {
	switch string(req[1]) {
	case ipc.OpResolve, ipc.OpLookup:
		r, err := ipc.ParseResolveRequest(req)
		if err != nil {
			d.queries.errors.Add(1)
			return ipc.ErrorReply(err.Error())
		}
		return ipc.ResolveReply(d.resolve(peer, r))
	case ipc.OpCount:
		if peer.Uid != 0 {
			return ipc.ErrorReply("count is for root only")
		}
		r, err := ipc.ParseCountRequest(req)
		if err != nil {
			return ipc.ErrorReply(err.Error())
		}
		return ipc.CountReply(d.count(r))
	case ipc.OpStatus:
		q, err := admin.ParseStatusQuery(req)
		if err != nil {
			return ipc.ErrorReply(err.Error())
		}
		st := d.Status(q)
		return admin.StatusReply(&st)
	case ipc.OpConfs:
		return admin.ConfsReply(d.confList())
	case ipc.OpReload:
		if peer.Uid != 0 {
			return ipc.ErrorReply("reload is for root only")
		}
		d.log.Info("reload requested", zap.Int32("pid", peer.Pid))
		d.ReloadAll()
		return admin.ConfsReply(d.confList())
	}
	return ipc.ErrorReply("unknown operation " + string(req[1]))
}

// inline reports the requests the socket's event loop answers itself:
// virtuald's questions, a map lookup each; status and reload take longer
// and go to goroutines.
func inline(req [][]byte) bool {
	switch string(req[1]) {
	case ipc.OpResolve, ipc.OpLookup, ipc.OpCount:
		return true
	}
	return false
}

// stream answers the requests whose replies are streamed: a status of
// every entry.
func (d *Daemon) stream(peer unix.Ucred, req [][]byte) func(send func([][]byte) error) error {
	if string(req[1]) != ipc.OpStatus {
		return nil
	}
	q, err := admin.ParseStatusQuery(req)
	if err != nil || !q.All {
		return nil
	}
	return func(send func([][]byte) error) error { return d.StreamStatus(q, send) }
}

// resolve answers r from the daemon's copy of the conf file, when that
// copy is the file virtuald sees; a resolve (not a lookup) counts as one
// of virtuald's.
func (d *Daemon) resolve(peer unix.Ucred, r ipc.ResolveRequest) (*ipc.Answer, error) {
	c := d.confs.get(r.Conf)
	if c == nil {
		// Only virtuald's questions as root make the daemon read a new
		// file (it holds what it reads for good); ipwatchctl's lookups
		// change nothing.
		if !r.Lookup && peer.Uid == 0 && filepath.IsAbs(r.Conf) && filepath.Clean(r.Conf) == r.Conf && d.confs.len() < len(d.cfg.Confs)+maxAdopted {
			d.log.Info("adopting conf file", zap.String("conf", r.Conf), zap.Int32("pid", peer.Pid))
			d.adopt(r.Conf)
		}
		d.queries.unknown.Add(1)
		return nil, ipc.ErrUnknown
	}
	s := c.cur.Load()
	if s == nil {
		d.queries.unknown.Add(1)
		return nil, ipc.ErrUnknown
	}
	if s.id != r.ID {
		d.queue(r.Conf)
		d.queries.stale.Add(1)
		return nil, ipc.ErrStale
	}
	if s.racy() {
		// The read again is scheduled; until it is done, the file
		// itself is the only safe answer.
		d.queries.racy.Add(1)
		return nil, ipc.ErrRacy
	}
	m := s.file.Lookup(r.Addr)
	a := &ipc.Answer{Generation: s.generation, Rule: m.Rule.String()}
	if m.Entry != nil {
		a.Line, a.Key, a.Root, a.User, a.Group = m.Entry.Line, m.Entry.Key, m.Entry.Root, m.Entry.User, m.Entry.Group
		if !r.Lookup {
			c.counter(m.Entry.Key).Add(1)
		}
	}
	if m.Err != nil {
		a.Refusal = m.Err.Error()
	}
	d.queries.ok.Add(1)
	return a, nil
}

// count adds connections that virtuald in accept mode answered from the
// answers it keeps to the entries' resolved counts, and returns the
// generation of the file, which lets accept mode drop the answers it keeps
// when the file changed.
func (d *Daemon) count(r ipc.CountRequest) (generation uint64, err error) {
	c := d.confs.get(r.Conf)
	if c == nil {
		return 0, ipc.ErrUnknown
	}
	for _, n := range r.Counts {
		c.counter(n.Key).Add(n.Connections)
	}
	if s := c.cur.Load(); s != nil {
		return s.generation, nil
	}
	return 0, nil
}
