package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/virtuald/virtuald/internal/sdnotify"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Run serves until ctx ends or a stop signal (SIGTERM or SIGINT) arrives
// on signals; SIGHUP reloads every conf file. The daemon is a set of
// tasks, each named in the error it fails with, and the first to fail
// stops the others: the address tracker, the file watcher, the loader,
// the periodic read of every file, the syslog relay, the validator, the super-servers' services, the kernel's shedding, then the
// socket and the metrics. READY=1 goes to systemd
// once the first address dump and the first load of every file are done,
// STOPPING=1 as soon as the tasks are told to stop. A second stop signal
// while they stop makes Run return at once, with ErrStopForced.
func (d *Daemon) Run(ctx context.Context, signals <-chan os.Signal) error {
	t := startTasks(ctx, d.log)
	// STOPPING=1 goes out as soon as the tasks are told to stop, and
	// before Run returns: a process that exits right after would
	// otherwise end before the notice's goroutine ran.
	stopping := make(chan struct{})
	context.AfterFunc(t.ctx, func() { sdnotify.Notify("STOPPING=1"); close(stopping) })
	t.run("addresses", d.tracker.Run)
	t.run("watcher", d.watch.run)
	d.loadAll()
	t.run("loader", d.loader)
	t.run("rereader", d.rereader)
	if d.relay != nil {
		t.run("relay", d.relay.Run)
	}
	t.run("validator", d.validator)
	t.run("services", d.servicesTask)
	t.run("shedding", d.shedTask)
	// Clients that connect before the daemon is ready wait in the
	// socket's backlog; the socket is served even when the daemon stops
	// first, since serving ends by removing it.
	t.run("readiness", func(ctx context.Context) error {
		select {
		case <-d.tracker.Ready():
			d.log.Info("ready", zap.String("socket", d.cfg.Socket), zap.Int("confs", d.confs.len()),
				zap.Int("addresses", len(d.tracker.Snapshot().All())))
			sdnotify.Notify("READY=1")
		case <-ctx.Done():
		}
		t.run("socket", d.srv.Serve)
		if d.metrics != nil {
			t.run("metrics", func(ctx context.Context) error { return d.serveMetrics(ctx, d.metrics) })
		}
		return nil
	})
	err := t.wait(signals, d.reloadSoon) // its tasks' context is done when it returns
	<-stopping
	if !errors.Is(err, ErrStopForced) {
		d.closeBPF() // a task still running may be using it
	}
	return err
}

// ErrStopForced is Run's error when a second stop signal ended it before
// its tasks had stopped.
var ErrStopForced = errors.New("stopped without waiting for every task")

// tasks runs the daemon's tasks in an errgroup.
type tasks struct {
	g    *errgroup.Group
	ctx  context.Context // the tasks': done when one fails or stop is called
	stop context.CancelFunc
	log  *zap.Logger

	mu      sync.Mutex
	running map[string]bool
}

func startTasks(parent context.Context, log *zap.Logger) *tasks {
	ctx, stop := context.WithCancel(parent)
	g, ctx := errgroup.WithContext(ctx)
	return &tasks{g: g, ctx: ctx, stop: stop, log: log, running: map[string]bool{}}
}

// run starts task under name, which its error and a forced stop name.
func (t *tasks) run(name string, task func(context.Context) error) {
	t.mu.Lock()
	t.running[name] = true
	t.mu.Unlock()
	t.g.Go(func() error {
		defer func() {
			t.mu.Lock()
			delete(t.running, name)
			t.mu.Unlock()
		}()
		if err := task(t.ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// wait returns the first task's error once every task has returned.
// Meanwhile SIGHUP calls reload, the first SIGTERM or SIGINT stops the
// tasks, and another one while they stop makes wait return at once,
// naming the tasks still running: an operator can always end a stuck
// stop.
func (t *tasks) wait(signals <-chan os.Signal, reload func()) error {
	defer t.stop()
	done := make(chan error, 1)
	go func() { done <- t.g.Wait() }()
	for {
		select {
		case err := <-done:
			return err
		case s := <-signals:
			switch {
			case s == unix.SIGHUP && t.ctx.Err() == nil:
				t.log.Info("SIGHUP: reloading")
				reload()
			case s == unix.SIGHUP:
			case t.ctx.Err() == nil:
				t.log.Info("stopping", zap.Stringer("signal", s))
				t.stop()
			default:
				return fmt.Errorf("%w: a second %v while %s had not stopped", ErrStopForced, s, strings.Join(t.stillRunning(), ", "))
			}
		}
	}
}

// stillRunning names the tasks that have not returned, in order.
func (t *tasks) stillRunning() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.running))
	for name := range t.running {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
