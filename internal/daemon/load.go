package daemon

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/virtuald/virtuald/internal/sdnotify"
	"go.uber.org/zap"
)

// adopt adds path to the files served and queues its first load.
// by says why it is served: adoptedConfigured (-conf), adoptedService
// (a super-server's service names it) or "asked about by virtuald (pid
// N)"; a file only a virtuald asked about is forgotten when it is gone.
func (d *Daemon) adopt(path, by string) {
	c, created := d.confs.add(path)
	if created {
		d.watch.addFile(path, func() { d.queue(path) })
		d.queue(path)
	}
	c.adopt(by)
}

// Why a conf file is served (confFile.adoptedBy).
const (
	adoptedConfigured = "given with -conf"
	adoptedService    = "named by a service that starts virtuald"
)

// forgetGone drops c when only a virtuald's question made the daemon
// serve it and the file is gone: its refusals would otherwise say
// forever that every connection is refused, and reload would fail.
func (d *Daemon) forgetGone(c *confFile) bool {
	if !c.onlyAsked() {
		return false
	}
	if _, err := os.Lstat(c.path); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	d.confs.remove(c.path)
	d.log.Info("forgot a conf file a virtuald asked about: it is gone", zap.String("conf", c.path), zap.String("adopted", c.adoptedBy()))
	return true
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

// rereader queues every conf file for a load each Recheck: the load reads
// the content and publishes a new generation only when it changed, so
// content written where the file's status cannot show it (a shared
// mapping) is answered for at most that long.
func (d *Daemon) rereader(ctx context.Context) error {
	every := d.cfg.Recheck
	if every <= 0 {
		every = DefaultRecheck
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			for _, c := range d.confs.all() {
				d.queue(c.path)
			}
		}
	}
}

// loader loads the files queued, and every file when reloadSoon asks.
func (d *Daemon) loader(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.reloadAll:
			d.ReloadAll()
			continue
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
	before := c.lastError()
	changed, err := d.confs.load(c)
	d.recheckRacy(c)
	switch {
	case err != nil && d.forgetGone(c):
		d.reshedSoon()
	case err != nil && err.Error() == before:
		// Said already: the periodic read must not repeat it.
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
		d.reshedSoon()
		d.log.Info("loaded", zap.String("conf", c.path), zap.Uint64("generation", s.generation),
			zap.Int("entries", s.file.Len()), zap.Int("problems", len(s.file.Errors)),
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

// ReloadAll reads the super-servers' services and reloads every file now,
// for SIGHUP and the reload operation, telling systemd around it, and has
// every root checked again: an operator who fixed a root reloads to see
// it.
func (d *Daemon) ReloadAll() {
	sdnotify.Notify(sdnotify.Reloading())
	d.findServices()
	d.loadAll()
	d.recheck.Store(true)
	d.kickValidator()
	sdnotify.Notify("READY=1")
}

// reloadSoon asks the loader for ReloadAll, for SIGHUP: the signal is
// seen at once, and a stop signal during a long reload is not held up.
func (d *Daemon) reloadSoon() {
	select {
	case d.reloadAll <- struct{}{}:
	default:
	}
}

func (d *Daemon) loadAll() {
	for _, c := range d.confs.all() {
		d.loadOne(c)
	}
}
