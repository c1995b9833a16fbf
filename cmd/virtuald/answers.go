package main

import (
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"golang.org/x/sys/unix"
)

// answerTTL bounds how long a kept answer of the daemon is used: a safety
// net under the rule that the daemon answers for a file identity only
// when the identity names the content.
const answerTTL = time.Second

// answerCache keeps the daemon's answers by conf file identity and
// address. The daemon answers for an identity only when it names the
// file's content (it refuses while the file's timestamps are too fresh to
// tell same-size writes apart), so a kept answer is the answer the daemon
// would give again: accept mode asks once per address and file version
// instead of once per connection. As a safety net, an answer is kept at
// most answerTTL, and every kept answer is dropped when the daemon's
// generation for the file changes (seen in any answer or count reply).
// The connections answered from it are counted here and reported to the
// daemon in batches, so that its per-entry counts stay whole.
type answerCache struct {
	mu         sync.Mutex
	m          map[answerKey]keptAnswer
	generation uint64            // the daemon's generation of the file the kept answers came from
	pending    map[string]uint64 // entry key -> connections not yet reported
}

type answerKey struct {
	id   ipc.FileID
	addr netip.Addr
}

type keptAnswer struct {
	match conf.Match
	at    time.Time
}

// maxAnswers bounds the cache: past it, it starts again empty.
const maxAnswers = 1 << 16

func (c *answerCache) init() {
	c.m = map[answerKey]keptAnswer{}
	c.pending = map[string]uint64{}
}

// sawGeneration drops every kept answer when the daemon's generation of
// the file is not the one they came from; c.mu is held.
func (c *answerCache) sawGeneration(gen uint64) {
	if gen != c.generation {
		c.m = map[answerKey]keptAnswer{}
		c.generation = gen
	}
}

// resolve is accept mode's resolver: the kept answers, then the daemon,
// then the file, with the same rules and code as the per-connection mode.
func (a *acceptor) resolve(addr netip.Addr) (conf.Match, string, string, error) {
	var st unix.Stat_t
	if err := unix.Stat(a.confPath, &st); err != nil {
		return fromFile(a.confPath, addr, "conf not found")
	}
	k := answerKey{ipc.FileIDOf(&st), addr.Unmap()}
	c := &a.answers
	c.mu.Lock()
	kept, ok := c.m[k]
	if ok && time.Since(kept.at) > answerTTL {
		delete(c.m, k)
		ok = false
	}
	if ok && kept.match.Entry != nil {
		c.pending[kept.match.Entry.Key]++
	}
	c.mu.Unlock()
	if ok {
		return kept.match, "daemon-cache", "", nil
	}
	d := askDaemon(&a.health, a.socketPath, a.confPath, k.id, addr, nil)
	if d.match == nil {
		return fromFile(a.confPath, addr, d.reason)
	}
	c.mu.Lock()
	c.sawGeneration(d.generation)
	if len(c.m) >= maxAnswers {
		c.m = map[answerKey]keptAnswer{}
	}
	c.m[k] = keptAnswer{match: *d.match, at: time.Now()}
	c.mu.Unlock()
	return *d.match, "daemon", "", nil
}

// reportCounts sends the connections answered from the cache to the
// daemon every second, and once more when stop closes. Counts the daemon
// could not take are kept for the next try.
func (a *acceptor) reportCounts(stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-stop:
			a.flushCounts()
			return
		}
		a.flushCounts()
	}
}

// countTimeout bounds a report of counts. No connection waits for it,
// and a report given up on is sent again with the next one, so one the
// daemon took too late to say so is counted twice: it waits as long as
// the reports' period.
const countTimeout = time.Second

// flushCounts reports the connections answered from the cache since the
// last report, and the ones refused for the entries' limits, in batches
// of ipc.MaxCounts entries; a batch the daemon did not take is kept for
// the next report.
func (a *acceptor) flushCounts() {
	c := &a.answers
	c.mu.Lock()
	pending := c.pending
	c.pending = map[string]uint64{}
	c.mu.Unlock()
	daemon := ipc.Client{Socket: a.socketPath, Timeout: countTimeout}
	for _, batch := range countBatches(pending) {
		gen, err := daemon.Count(ipc.CountRequest{Conf: a.confPath, Counts: batch})
		c.mu.Lock()
		if err != nil {
			for _, n := range batch {
				c.pending[n.Key] += n.Connections
			}
		} else if gen != 0 {
			c.sawGeneration(gen)
		}
		c.mu.Unlock()
	}
	// The refusals for the entries' limits, which only accept mode
	// knows: the daemon shows them per entry in status and the metrics.
	refused := map[string]uint64{}
	for entry, n := range a.admit.takePending() {
		_, key, _ := strings.Cut(entry, "\x00")
		refused[key] += n
	}
	for _, batch := range countBatches(refused) {
		if _, err := daemon.Count(ipc.CountRequest{Conf: a.confPath, Counts: batch, Refused: true}); err != nil {
			for _, n := range batch {
				a.admit.putBack(a.confPath+"\x00"+n.Key, n.Connections)
			}
		}
	}
}

// countBatches splits the pending counts into the requests that carry them.
func countBatches(pending map[string]uint64) [][]ipc.EntryCount {
	var batches [][]ipc.EntryCount
	var batch []ipc.EntryCount
	for key, n := range pending {
		if len(batch) == ipc.MaxCounts {
			batches, batch = append(batches, batch), nil
		}
		batch = append(batch, ipc.EntryCount{Key: key, Connections: n})
	}
	if len(batch) > 0 {
		batches = append(batches, batch)
	}
	return batches
}
