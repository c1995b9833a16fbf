// Package ipwatchdtest runs ipwatchd inside a test process. It is apart
// from testbed because the daemon imports packages whose own tests use
// testbed.
package ipwatchdtest

import (
	"context"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/daemon"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// StartDaemon runs ipwatchd in this process on socket, serving confs, and
// returns once it answers (every file loaded). It stops at cleanup. Tests
// that need it in a network namespace of their own run the binary instead.
func StartDaemon(t testbed.T, socket string, confs ...string) *daemon.Daemon {
	t.Helper()
	return StartDaemonWith(t, daemon.Config{Socket: socket, Confs: confs})
}

// StartDaemonWith is StartDaemon with more of the daemon's configuration
// (Socket and Confs in it; its log is discarded).
func StartDaemonWith(t testbed.T, cfg daemon.Config) *daemon.Daemon {
	t.Helper()
	Settle(t, cfg.Confs...)
	socket := cfg.Socket
	cfg.Log, cfg.Version = zap.NewNop(), "test"
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatalf("ipwatchd: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("ipwatchd stopped with %v", err)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := (admin.Client{Socket: socket}).Status(admin.StatusQuery{}); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipwatchd did not answer on %s within 10s", socket)
		}
	}
}

// Settle waits until every file's timestamps are older than their
// granularity (conf.Racy), so that the daemon's first read of them is one
// it vouches for at once: a test that writes a conf file and asks about it
// at once would otherwise (rightly) be sent to the file.
func Settle(t testbed.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue // a missing file is the test's point
		}
		time.Sleep(time.Until(conf.RacyUntil(&st)))
	}
}
