package daemon

import (
	"context"
	"iter"
	"math/bits"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/relay"
)

// recheckEvery is how often the validator checks every root again: roots
// change under the daemon (a chmod, a mount), and the metrics report the
// entries that turned invalid from its last pass.
const recheckEvery = 5 * time.Minute

// rootCheck is one pass of the validator over a snapshot: which entries,
// valid by their text, failed the system half of validation (root, user,
// group), as a bit set by line number. Status checks every root again when
// asked; the metrics, scraped every few seconds, cannot afford to at a
// million entries, and read this instead.
type rootCheck struct {
	generation uint64 // of the snapshot checked
	services   uint64 // of the services whose programs were checked
	at         time.Time
	invalid    int      // entries that failed
	failed     []uint64 // bit per line number
	// programs: each program the file's services start, checked inside
	// the root of every valid entry.
	programs []*programCheck
	// relay: the valid entries as the relay takes them (with relayKeys),
	// gathered in the same pass: as many as roots, give or take.
	relay []relay.Entry
}

func (r *rootCheck) failedLine(line int) bool {
	i := line / 64
	return r != nil && i < len(r.failed) && r.failed[i]&(1<<(line%64)) != 0
}

// lines yields the lines that failed, in order; none for a nil r.
func (r *rootCheck) lines() iter.Seq[int] {
	return func(yield func(int) bool) {
		if r == nil {
			return
		}
		for i, word := range r.failed {
			for ; word != 0; word &= word - 1 {
				if !yield(i*64 + bits.TrailingZeros64(word)) {
					return
				}
			}
		}
	}
}

// checkFor returns the validator's last pass if it was over s, else nil:
// a pass over an older snapshot says nothing of this one.
func (c *confFile) checkFor(s *snapshot) *rootCheck {
	if r := c.checked.Load(); r != nil && r.generation == s.generation {
		return r
	}
	return nil
}

// kickValidator asks for a pass over the snapshots soon.
func (d *Daemon) kickValidator() {
	select {
	case d.validate <- struct{}{}:
	default:
	}
}

// validator checks the roots of every snapshot that has no pass of its
// own, or one older than recheckEvery or than the services found, one
// entry at a time, and publishes each pass when it is complete. A pass
// also checks, inside each valid entry's root, every program that the
// services using the file start: once per change of the file or of the
// services, and again with the roots.
func (d *Daemon) validator(ctx context.Context) error {
	tick := time.NewTicker(recheckEvery / 4)
	defer tick.Stop()
	for {
		services := d.services.Load()
		again := d.recheck.Swap(false)
		for _, c := range d.confs.all() {
			s := c.cur.Load()
			if s == nil {
				continue
			}
			if r := c.checked.Load(); r != nil && r.generation == s.generation && r.services == services.generation && time.Since(r.at) < recheckEvery && !again {
				continue
			}
			r, ok := check(ctx, s, services.generation, programsOf(services.of(c.path)), d.relay != nil)
			if !ok {
				return nil
			}
			c.checked.Store(r)
		}
		d.syncRelay()
		select {
		case <-ctx.Done():
			return nil
		case <-d.validate:
		case <-tick.C:
		}
	}
}

// check runs the system half of validation on every entry of s that its
// text did not already make invalid, checks programs inside the root of
// every entry that passes, and with relayKeys gathers the relay's
// entries (relayRoots); ok is false when ctx ended first.
func check(ctx context.Context, s *snapshot, services uint64, programs []program, relayKeys bool) (r *rootCheck, ok bool) {
	r = &rootCheck{generation: s.generation, services: services, at: time.Now()}
	for _, p := range programs {
		r.programs = append(r.programs, &programCheck{program: p})
	}
	var checker conf.Checker
	defer checker.Close()
	inRoots := rootPrograms{}
	keys := map[string][]string{} // the relay's, by root
	for i, e := range s.file.All() {
		if i%1024 == 0 && ctx.Err() != nil {
			return nil, false
		}
		if s.file.Refusal(e) != nil {
			continue
		}
		if checker.Validate(e) == nil {
			if relayKeys {
				keys[e.Root] = relay.AddKey(keys[e.Root], e.Key)
			}
			if len(r.programs) == 0 {
				continue
			}
			if results := inRoots.check(e.Root, r.programs); results != nil {
				for j, p := range r.programs {
					p.record(e.Line, results[j])
				}
			}
			continue
		}
		r.invalid++
		for len(r.failed) <= e.Line/64 {
			r.failed = append(r.failed, 0)
		}
		r.failed[e.Line/64] |= 1 << (e.Line % 64)
	}
	r.relay = relayRoots(keys)
	return r, true
}
