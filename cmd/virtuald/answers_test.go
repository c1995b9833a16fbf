package main

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/server"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
	"golang.org/x/sys/unix"
)

// pendingCounts makes n entries' counts: entry i served i+1 connections.
func pendingCounts(n int) map[string]uint64 {
	m := map[string]uint64{}
	for i := 0; i < n; i++ {
		m[fmt.Sprintf("10.0.%d.%d", i/256, i%256)] = uint64(i + 1)
	}
	return m
}

// Counts go to the daemon in requests of at most ipc.MaxCounts entries,
// each entry in one of them with its count.
func TestCountBatches(t *testing.T) {
	for _, n := range []int{0, 1, ipc.MaxCounts, ipc.MaxCounts + 1, 3*ipc.MaxCounts + 2} {
		pending := pendingCounts(n)
		batches := countBatches(pending)
		if want := (n + ipc.MaxCounts - 1) / ipc.MaxCounts; len(batches) != want {
			t.Errorf("%d entries: %d requests, want %d", n, len(batches), want)
		}
		got := map[string]uint64{}
		for _, b := range batches {
			if len(b) == 0 || len(b) > ipc.MaxCounts {
				t.Errorf("%d entries: a request of %d", n, len(b))
			}
			for _, c := range b {
				got[c.Key] += c.Connections
			}
		}
		if !maps.Equal(got, pending) {
			t.Errorf("%d entries: sent %v, want %v", n, got, pending)
		}
	}
}

// countTaker stands for the daemon's side of count reports: the real
// socket server and codec, with a handler that answers as told.
type countTaker struct {
	mu      sync.Mutex
	got     map[string]uint64
	refused map[string]uint64 // refusals for the entries' limits (OpRefused)
	refuse  bool
	gen     uint64
	request int
}

func serveCounts(t *testing.T, sock string, c *countTaker) {
	srv, err := server.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv.Handler = func(_ unix.Ucred, req [][]byte) [][]byte {
		r, err := ipc.ParseCountRequest(req)
		if err != nil {
			t.Errorf("a request accept mode sent: %v", err)
			return ipc.ErrorReply(err.Error())
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.request++
		if c.refuse {
			return ipc.CountReply(0, fmt.Errorf("count is for root only"))
		}
		for _, n := range r.Counts {
			if r.Refused {
				c.refused[n.Key] += n.Connections
			} else {
				c.got[n.Key] += n.Connections
			}
		}
		return ipc.CountReply(c.gen, nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// flushCounts reports every count once when the daemon takes them (and
// learns the file's generation from the reply), and keeps them for the
// next report when the daemon refuses them or is not there.
func TestFlushCounts(t *testing.T) {
	for _, c := range []struct {
		name     string
		daemon   *countTaker // nil: no daemon
		entries  int
		requests int
		kept     bool // the counts are still pending after the report
		gen      uint64
	}{
		{name: "taken", daemon: &countTaker{gen: 7}, entries: 3, requests: 1, gen: 7},
		{name: "taken in batches", daemon: &countTaker{gen: 7}, entries: 2*ipc.MaxCounts + 1, requests: 3, gen: 7},
		{name: "taken, file not loaded", daemon: &countTaker{}, entries: 1, requests: 1},
		{name: "refused", daemon: &countTaker{refuse: true, gen: 7}, entries: 2*ipc.MaxCounts + 1, requests: 3, kept: true},
		{name: "no daemon", entries: 2, kept: true},
		{name: "nothing to report", daemon: &countTaker{}, entries: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
			if c.daemon != nil {
				c.daemon.got = map[string]uint64{}
				serveCounts(t, sock, c.daemon)
			}
			a := &acceptor{socketPath: sock, confPath: "/etc/virtuald/conf.ftp", admit: newAdmission(64)}
			a.answers.init()
			pending := pendingCounts(c.entries)
			maps.Copy(a.answers.pending, pending)
			a.flushCounts()
			left := a.answers.pending
			if c.kept && !maps.Equal(left, pending) || !c.kept && len(left) > 0 {
				t.Errorf("pending after the report: %v", left)
			}
			if a.answers.generation != c.gen {
				t.Errorf("generation %d, want %d", a.answers.generation, c.gen)
			}
			if c.daemon == nil {
				return
			}
			c.daemon.mu.Lock()
			defer c.daemon.mu.Unlock()
			if c.daemon.request != c.requests {
				t.Errorf("%d requests, want %d", c.daemon.request, c.requests)
			}
			if !c.kept && !maps.Equal(c.daemon.got, pending) {
				t.Errorf("the daemon got %v, want %v", c.daemon.got, pending)
			}
		})
	}
}

// Accept mode asks the daemon once per address and version of the conf
// file, answers the connections after it from the answer it keeps (and
// counts them for the daemon), and never from an answer for another
// version of the file, one older than answerTTL, or one of an earlier
// generation of the daemon's.
func TestAnswerCache(t *testing.T) {
	path, sock := inProcessDaemon(t, "10.0.0.1 /a\n")
	a := &acceptor{socketPath: sock, confPath: path}
	a.answers.init()
	addr := netip.MustParseAddr("10.0.0.1")
	resolve := func(wantVia, wantRoot string) {
		t.Helper()
		m, via, why, err := a.resolve(addr)
		if err != nil || via != wantVia || m.Entry == nil || m.Entry.Root != wantRoot {
			t.Fatalf("answered via %s (%s) with %+v, %v; want via %s, root %s", via, why, m.Entry, err, wantVia, wantRoot)
		}
	}
	resolve("daemon", "/a")
	resolve("daemon-cache", "/a")
	resolve("daemon-cache", "/a")
	if got := a.answers.pending; !maps.Equal(got, map[string]uint64{"10.0.0.1": 2}) {
		t.Errorf("pending counts %v, want the two connections answered from the cache", got)
	}

	// Too old.
	for k, kept := range a.answers.m {
		kept.at = kept.at.Add(-2 * answerTTL)
		a.answers.m[k] = kept
	}
	resolve("daemon", "/a")

	// Another generation of the daemon's.
	a.answers.mu.Lock()
	a.answers.sawGeneration(a.answers.generation + 1)
	a.answers.mu.Unlock()
	resolve("daemon", "/a")

	// Another version of the file: whatever answers (the daemon once it
	// vouches for its new copy, the file until then), not the cache.
	if err := os.WriteFile(path, []byte("10.0.0.1 /b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, via, _, err := a.resolve(addr)
	if err != nil || via == "daemon-cache" || m.Entry == nil || m.Entry.Root != "/b" {
		t.Errorf("after the file changed: via %s, %+v, %v", via, m.Entry, err)
	}
}

// inProcessDaemon writes a conf file of text and runs ipwatchd on it in
// this process (no root needed); it returns the file and the socket.
func inProcessDaemon(t *testing.T, text string) (path, sock string) {
	dir := t.TempDir()
	path = filepath.Join(dir, "conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(dir, "run", "ipwatchd.sock")
	ipwatchdtest.StartDaemon(t, sock, path)
	return path, sock
}

// The refusals for the entries' limits go to the daemon as such
// (OpRefused), by entry key, once; they are kept for the next report when
// the daemon refuses them or is not there.
func TestFlushRefusals(t *testing.T) {
	for _, c := range []struct {
		name   string
		daemon *countTaker
		kept   bool
	}{
		{"taken", &countTaker{}, false},
		{"refused", &countTaker{refuse: true}, true},
		{"no daemon", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
			if c.daemon != nil {
				c.daemon.got, c.daemon.refused = map[string]uint64{}, map[string]uint64{}
				serveCounts(t, sock, c.daemon)
			}
			const confPath = "/etc/virtuald/conf.ftp"
			a := &acceptor{socketPath: sock, confPath: confPath, admit: newAdmission(0)}
			a.answers.init()
			for range 3 {
				a.admit.take(confPath+"\x00192.0.2.10", netip.Addr{}, conf.Limits{}, time.Unix(0, 0))
			}
			a.flushCounts()
			left := a.admit.takePending()
			want := map[string]uint64{"192.0.2.10": 3}
			switch {
			case c.kept && !maps.Equal(left, map[string]uint64{confPath + "\x00192.0.2.10": 3}):
				t.Errorf("pending after a failed report: %v", left)
			case !c.kept && len(left) > 0:
				t.Errorf("pending after the report: %v", left)
			case c.daemon != nil && !c.daemon.refuse && (!maps.Equal(c.daemon.refused, want) || len(c.daemon.got) > 0):
				t.Errorf("the daemon got refusals %v and counts %v, want %v and none", c.daemon.refused, c.daemon.got, want)
			}
		})
	}
}
