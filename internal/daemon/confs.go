package daemon

import (
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
)

// snapshot is one loaded copy of a conf file. It is never modified after
// it is published: readers load the current pointer and use it without
// locks while a reload builds the next one.
type snapshot struct {
	file       *conf.File
	id         ipc.FileID
	sum        [sha256.Size]byte // of the content: a reload that reads the same keeps the generation
	generation uint64
	loadedAt   time.Time
	// invalid counts the entries refused by the text alone: a bad line,
	// or a catch-all suspended by a line that may join two.
	invalid int
	// racyUntil is set when the read began within a timestamp
	// granularity of the file's last change (conf.Racy): a later write
	// may have left id unchanged, so the daemon does not answer for this
	// snapshot by identity, and reads the file again after this time.
	racyUntil time.Time
}

// racy reports whether the daemon must not vouch for s by identity.
func (s *snapshot) racy() bool { return !s.racyUntil.IsZero() }

// confFile is one conf file the daemon serves: its current snapshot, why
// the last load failed (the snapshot is then the last good one), and the
// questions answered and the connections accept mode refused for the
// entry's limits, per entry key (kept across reloads).
type confFile struct {
	path    string
	cur     atomic.Pointer[snapshot]
	loadErr atomic.Pointer[string]

	resolved sync.Map // entry key -> *atomic.Uint64
	refused  sync.Map // entry key -> *atomic.Uint64: virtuald -accept's refusals for the entry's limits

	loads, loadErrors atomic.Uint64 // new snapshots published, loads failed

	recheck *time.Timer // the read again of a racy snapshot; under the daemon's loadMu

	checked atomic.Pointer[rootCheck] // the validator's last pass over the roots

	mu sync.Mutex
	by []string // why it is served, each reason once (see Daemon.adopt)
}

// adopt records one more reason to serve the file.
func (c *confFile) adopt(by string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.by, by) && len(c.by) < 4 {
		c.by = append(c.by, by)
	}
}

// adoptedBy says why the file is served, for status and the log.
func (c *confFile) adoptedBy() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.by, "; ")
}

// onlyAsked reports whether only virtuald's questions made it served.
func (c *confFile) onlyAsked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !slices.Contains(c.by, adoptedConfigured) && !slices.Contains(c.by, adoptedService)
}

func (c *confFile) counter(key string) *atomic.Uint64 { return counterIn(&c.resolved, key) }

func (c *confFile) refusals(key string) *atomic.Uint64 { return counterIn(&c.refused, key) }

// counterIn is key's counter in m, made on first use.
func counterIn(m *sync.Map, key string) *atomic.Uint64 {
	if v, ok := m.Load(key); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := m.LoadOrStore(key, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

// load is key's count in m, 0 if it has none.
func load(m *sync.Map, key string) uint64 {
	if v, ok := m.Load(key); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

func (c *confFile) lastError() string {
	if p := c.loadErr.Load(); p != nil {
		return *p
	}
	return ""
}

// confSet holds every conf file. Lookups read an immutable map through an
// atomic pointer; adding a file copies the map under a mutex.
type confSet struct {
	mu    sync.Mutex
	files atomic.Pointer[map[string]*confFile]
	gen   atomic.Uint64 // generations are unique across files
}

func newConfSet() *confSet {
	s := &confSet{}
	s.files.Store(&map[string]*confFile{})
	return s
}

func (s *confSet) get(path string) *confFile { return (*s.files.Load())[path] }

// add returns the file for path, creating it (unloaded) if it is new.
func (s *confSet) add(path string) (c *confFile, created bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.files.Load()
	if c := old[path]; c != nil {
		return c, false
	}
	c = &confFile{path: path}
	m := make(map[string]*confFile, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[path] = c
	s.files.Store(&m)
	return c, true
}

// remove stops serving the file at path.
func (s *confSet) remove(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.files.Load()
	m := make(map[string]*confFile, len(old))
	for k, v := range old {
		if k != path {
			m[k] = v
		}
	}
	s.files.Store(&m)
}

// all returns the files sorted by path.
func (s *confSet) all() []*confFile {
	m := *s.files.Load()
	out := make([]*confFile, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *confFile) int { return strings.Compare(a.path, b.path) })
	return out
}

func (s *confSet) len() int { return len(*s.files.Load()) }

// load reads c's file and publishes a new snapshot when its content
// changed (a new generation) or only its status did (same generation).
// Every load reads the content: the status alone cannot tell two writes
// apart within one timestamp granularity. On failure the last good
// snapshot stays and the error is kept for status. It reports whether a
// new generation was published.
func (s *confSet) load(c *confFile) (bool, error) {
	start := time.Now()
	data, st, err := conf.ReadStat(c.path)
	if err != nil {
		msg := err.Error()
		c.loadErr.Store(&msg)
		c.loadErrors.Add(1)
		return false, err
	}
	next := snapshot{id: ipc.FileIDOf(&st), sum: sha256.Sum256(data), loadedAt: start}
	if conf.Racy(&st, start) {
		next.racyUntil = conf.RacyUntil(&st)
	}
	if cur := c.cur.Load(); cur != nil && cur.sum == next.sum {
		if cur.id != next.id || cur.racyUntil != next.racyUntil {
			next.file, next.generation, next.loadedAt, next.invalid = cur.file, cur.generation, cur.loadedAt, cur.invalid
			c.cur.Store(&next)
		}
		c.loadErr.Store(nil)
		return false, nil
	}
	f, err := conf.Parse(c.path, data)
	if err != nil {
		msg := err.Error()
		c.loadErr.Store(&msg)
		c.loadErrors.Add(1)
		return false, err
	}
	next.file, next.generation, next.invalid = f, s.gen.Add(1), f.Refused()
	c.cur.Store(&next)
	c.loadErr.Store(nil)
	c.loads.Add(1)
	return true, nil
}
