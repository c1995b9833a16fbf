package daemon

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/superserver"
	"go.uber.org/zap"
)

// Kernel shedding (issue 23, item 3). Per connection (inetd nowait,
// xinetd, systemd Accept=yes), the super-server accepts every connection
// and starts a virtuald for it, so a limit virtuald applied would come
// after the cost, and after the super-server's own rate counter (one
// flooded address can make inetd stop a service for every address). So
// the daemon gives the kernel each per-connection service's rate= limits
// (bpf.Shedder): past an entry's rate, a new connection to one of its
// addresses is refused before the super-server sees it. Accept mode
// applies its limits itself, after accept, and is left alone: a second
// bucket in front of its own would take its refusals from its counts.

// shedBucket names one kernel bucket: an entry of a conf file, on the
// port of one per-connection TCP service that uses the file. Its
// addresses share it, as they share accept mode's bucket of the entry
// on that service. Named by the entry's key, not its line, so that an
// edit elsewhere in the file keeps its state and counts.
type shedBucket struct {
	Conf string
	Key  string // the entry's key
	Port uint16
}

// shedSource is one conf file as the shedding plan reads it: its parsed
// content, its exact entries with rate= (limitedExact), and the services
// that use it.
type shedSource struct {
	path     string
	file     *conf.File
	exact    []netip.Addr
	services []superserver.Service
}

// limitedExact lists the addresses of f's valid exact entries that have
// rate=: a pass over the whole file, made once per snapshot.
func limitedExact(f *conf.File) []netip.Addr {
	var out []netip.Addr
	for _, e := range f.All() {
		if e.Kind == conf.KeyAddr && e.Err == nil && e.Rate.N > 0 {
			out = append(out, e.Prefix.Addr())
		}
	}
	return out
}

// shedPlan is what the kernel should hold: each limited address and port
// to its bucket, each bucket's rule, and what could not be given to the
// kernel, in words for the log and status.
type shedPlan struct {
	keys  map[bpf.Key]shedBucket
	rules map[shedBucket]bpf.ShedRule
	notes []string
}

// planShedding computes the plan from the conf files and the addresses on
// the interfaces now. An entry's addresses are the ones it serves: its own
// address for an exact entry, the live addresses a prefix or default
// serves (no other entry takes them); invalid entries are refused by
// virtuald anyway and get nothing. A file's per-connection TCP services
// give the ports; a service whose port is not known gets no limit (the
// kernel key needs it), and says so. Two files on one address and port
// (a bound and a wildcard line for one port): the first path wins.
func planShedding(sources []shedSource, live []netip.Addr) shedPlan {
	p := shedPlan{keys: map[bpf.Key]shedBucket{}, rules: map[shedBucket]bpf.ShedRule{}}
	sources = slices.SortedFunc(slices.Values(sources), func(a, b shedSource) int { return cmp.Compare(a.path, b.path) })
	for _, src := range sources {
		if src.file == nil {
			continue
		}
		// Where the file's per-connection TCP services listen: a port,
		// on every address or (a bound line) on one.
		type listener struct {
			port uint16
			addr netip.Addr // zero for every address
		}
		var ls []listener
		for _, sv := range src.services {
			if sv.Accept || sv.Transport != "tcp" {
				continue
			}
			if sv.Port == 0 || sv.Host != "" {
				p.notes = append(p.notes, fmt.Sprintf("%s: service %s (%s) listens where ipwatchd does not know: its rate= limits are not given to the kernel", src.path, sv.Name, sv.From))
				continue
			}
			l := listener{port: sv.Port, addr: sv.Address.Unmap()}
			if !slices.Contains(ls, l) {
				ls = append(ls, l)
			}
		}
		if len(ls) == 0 {
			continue
		}
		// The candidate addresses: every live one, and every exact key.
		cands := append(slices.Clone(live), src.exact...)
		slices.SortFunc(cands, netip.Addr.Compare)
		cands = slices.Compact(cands)
		for _, a := range cands {
			e := src.file.Lookup(a).Entry
			if e == nil || e.Err != nil || e.Rate.N == 0 {
				continue
			}
			rule := shedRule(e.Rate)
			for _, l := range ls {
				if l.addr.IsValid() && !l.addr.IsUnspecified() && l.addr != a {
					continue
				}
				k := bpf.Key{Addr: a, Port: l.port}
				b := shedBucket{Conf: src.path, Key: e.Key, Port: l.port}
				if had, ok := p.keys[k]; ok {
					if had != b {
						p.notes = append(p.notes, fmt.Sprintf("%s: %v is limited by %s (entry %s) already: entry %s's rate= is not given to the kernel for it", src.path, k, had.Conf, had.Key, e.Key))
					}
					continue
				}
				p.keys[k] = b
				p.rules[b] = rule
			}
		}
	}
	return p
}

// shedRule is the kernel's form of rate=: a connection every 1/rate, a
// burst of a second's worth (at least 1), as accept mode's bucket.
func shedRule(r conf.Rate) bpf.ShedRule {
	return bpf.ShedRule{Interval: r.Per / time.Duration(r.N), Burst: uint32(r.Burst())}
}

// shedIndex gives buckets the kernel's array indices, stably: a bucket
// keeps its index (and so its state and counts) while it is in the plan,
// and an index freed is reused.
type shedIndex struct {
	of   map[shedBucket]uint32
	free []uint32 // freed indices, reused first
	next uint32   // the lowest never used
	max  uint32   // bpf.ShedBuckets
}

func newShedIndex(max uint32) *shedIndex {
	return &shedIndex{of: map[shedBucket]uint32{}, max: max}
}

// assign returns the plan in kernel form: keys to indices and indices to
// rules. Buckets past the array's size get none, and a note.
func (x *shedIndex) assign(p shedPlan) (map[bpf.Key]uint32, map[uint32]bpf.ShedRule, []string) {
	for b, i := range x.of {
		if _, ok := p.rules[b]; !ok {
			delete(x.of, b)
			x.free = append(x.free, i)
		}
	}
	slices.Sort(x.free)
	buckets := slices.SortedFunc(func(yield func(shedBucket) bool) {
		for b := range p.rules {
			if !yield(b) {
				return
			}
		}
	}, func(a, b shedBucket) int {
		return cmp.Or(cmp.Compare(a.Conf, b.Conf), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Port, b.Port))
	})
	var notes []string
	rules := map[uint32]bpf.ShedRule{}
	for _, b := range buckets {
		i, ok := x.of[b]
		switch {
		case ok:
		case len(x.free) > 0:
			i, x.free = x.free[0], x.free[1:]
		case x.next < x.max:
			i = x.next
			x.next++
		default:
			notes = append(notes, fmt.Sprintf("%s: entry %s on port %d: the kernel holds %d limited entries and ports at most: its rate= is not given to the kernel", b.Conf, b.Key, b.Port, x.max))
			continue
		}
		x.of[b] = i
		rules[i] = p.rules[b]
	}
	keys := map[bpf.Key]uint32{}
	for k, b := range p.keys {
		if i, ok := x.of[b]; ok {
			keys[k] = i
		}
	}
	return keys, rules, notes
}

// shedding is the daemon's side of kernel shedding: the attached program,
// its indices, and the counts read back.
type shedding struct {
	shedder *bpf.Shedder // nil when off
	state   string       // "on", or "off: why"
	kick    chan struct{}

	mu     sync.Mutex
	index  *shedIndex
	exact  map[*conf.File][]netip.Addr // limitedExact of the files loaded now
	notes  []string                    // the last plan's, logged when they change
	active int                         // keys in the kernel
}

// openShedding attaches the program unless bpf is off or it cannot run;
// with -bpf on, that it cannot is an error, as for the counting.
func (d *Daemon) openShedding() error {
	d.shed.kick = make(chan struct{}, 1)
	d.shed.index = newShedIndex(bpf.ShedBuckets)
	switch d.cfg.BPF {
	case "", "off":
		d.shed.state = "off: disabled with -bpf off"
		return nil
	}
	why := bpf.ShedUnavailable()
	if why == "" {
		s, err := bpf.OpenShedder()
		if err == nil {
			d.shed.shedder, d.shed.state = s, "on"
			d.log.Info("bpf: shedding per-connection services' connections past rate= in the kernel")
			return nil
		}
		why = err.Error()
	}
	if d.cfg.BPF == "on" {
		return fmt.Errorf("-bpf on: %s", why)
	}
	d.shed.state = "off: " + why
	d.log.Warn("bpf: per-connection services' rate= is not enforced in the kernel", zap.String("reason", why))
	return nil
}

// closeShedding detaches the program.
func (d *Daemon) closeShedding() {
	if d.shed.shedder != nil {
		d.shed.shedder.Close()
	}
}

// reshedSoon asks the shedding task to compute the plan again.
func (d *Daemon) reshedSoon() {
	if d.shed.kick == nil {
		return
	}
	select {
	case d.shed.kick <- struct{}{}:
	default:
	}
}

// shedTask keeps the kernel's limits those of the loaded conf files, the
// services that use them and the addresses on the interfaces: it applies
// the plan again when a file is loaded, the services are read again or
// an address comes or goes.
func (d *Daemon) shedTask(ctx context.Context) error {
	if d.shed.shedder == nil {
		return nil
	}
	select {
	case <-d.tracker.Ready():
	case <-ctx.Done():
		return nil
	}
	for {
		changed := d.tracker.Changed()
		d.applyShedding()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-d.shed.kick:
		}
	}
}

// applyShedding computes the plan from what the daemon holds now and
// gives it to the kernel.
func (d *Daemon) applyShedding() {
	var live []netip.Addr
	if snap := d.tracker.Snapshot(); snap != nil {
		for _, a := range snap.All() {
			live = append(live, a.Addr)
		}
	}
	services := d.services.Load()
	d.shed.mu.Lock()
	defer d.shed.mu.Unlock()
	exact := map[*conf.File][]netip.Addr{}
	var sources []shedSource
	for _, c := range d.confs.all() {
		s := c.cur.Load()
		if s == nil {
			continue
		}
		src := shedSource{path: c.path, file: s.file, services: services.of(c.path)}
		if len(src.services) == 0 {
			continue
		}
		ex, ok := d.shed.exact[s.file]
		if !ok {
			ex = limitedExact(s.file)
		}
		exact[s.file], src.exact = ex, ex
		sources = append(sources, src)
	}
	d.shed.exact = exact
	plan := planShedding(sources, live)
	keys, rules, notes := d.shed.index.assign(plan)
	notes = append(plan.notes, notes...)
	if !slices.Equal(notes, d.shed.notes) {
		for _, n := range notes {
			d.log.Warn("bpf: shedding", zap.String("problem", n))
		}
		d.shed.notes = notes
	}
	if err := d.shed.shedder.Apply(keys, rules); err != nil {
		d.log.Warn("bpf: shedding", zap.Error(err))
	}
	d.shed.active = len(d.shed.shedder.Keys())
}

// shedEntry names an entry of a conf file, for the counts of its
// buckets summed over ports.
type shedEntry struct{ Conf, Key string }

// shedCounts returns the connections the kernel shed per entry (over the
// ports of its file's services), for status and the metrics; nil when
// shedding is off.
func (d *Daemon) shedCounts() map[shedEntry]uint64 {
	if d.shed.shedder == nil {
		return nil
	}
	d.shed.mu.Lock()
	defer d.shed.mu.Unlock()
	st, err := d.shed.shedder.Stats()
	if err != nil {
		d.log.Warn("bpf: reading the shedding counts", zap.Error(err))
		return nil
	}
	out := map[shedEntry]uint64{}
	for b, i := range d.shed.index.of {
		out[shedEntry{b.Conf, b.Key}] += st[i].Dropped
	}
	return out
}

// shedLimited is how many addresses and ports the kernel limits now.
func (d *Daemon) shedLimited() int {
	d.shed.mu.Lock()
	defer d.shed.mu.Unlock()
	return d.shed.active
}
