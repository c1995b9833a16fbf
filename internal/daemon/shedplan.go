package daemon

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/superserver"
)

// What the kernel sheds (see shed.go), computed from the conf files, the
// services and the addresses: pure, so that it is tested without a
// kernel (shedplan_test.go).

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
