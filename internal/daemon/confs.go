package daemon

import (
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
	generation uint64
	loadedAt   time.Time
}

// confFile is one conf file the daemon serves: its current snapshot, why
// the last load failed (the snapshot is then the last good one), and the
// questions answered per entry key (kept across reloads).
type confFile struct {
	path    string
	cur     atomic.Pointer[snapshot]
	loadErr atomic.Pointer[string]

	resolved sync.Map // entry key -> *atomic.Uint64

	loads, loadErrors atomic.Uint64 // new snapshots published, loads failed
}

func (c *confFile) counter(key string) *atomic.Uint64 {
	if v, ok := c.resolved.Load(key); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := c.resolved.LoadOrStore(key, new(atomic.Uint64))
	return v.(*atomic.Uint64)
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

// load reads and parses c's file and publishes a new snapshot. On failure
// the last good snapshot stays and the error is kept for status. It
// reports whether a new snapshot was published.
func (s *confSet) load(c *confFile) (bool, error) {
	data, st, err := conf.ReadStat(c.path)
	if err != nil {
		msg := err.Error()
		c.loadErr.Store(&msg)
		c.loadErrors.Add(1)
		return false, err
	}
	id := ipc.FileIDOf(&st)
	if cur := c.cur.Load(); cur != nil && cur.id == id {
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
	c.cur.Store(&snapshot{file: f, id: id, generation: s.gen.Add(1), loadedAt: time.Now()})
	c.loadErr.Store(nil)
	c.loads.Add(1)
	return true, nil
}
