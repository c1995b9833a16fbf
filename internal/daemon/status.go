package daemon

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/internal/addrs"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"go.uber.org/zap"
)

// freshLimit is the size up to which a status checks every root of a file
// again when it is asked for (a root fixed or broken since the load shows
// as such at once): a few milliseconds' work. Past it, a status lists
// what the validator's last pass found for the entries it does not check
// now, and says when that was (ConfStatus.CheckedAt): a million roots take
// seconds to check, and a status is what an operator types first.
const freshLimit = 10_000

// Status builds the status report that q asks for from the current
// snapshots and addresses, with every listed entry (q.All is ignored: see
// StreamStatus).
func (d *Daemon) Status(q admin.StatusQuery) admin.Status {
	v := d.newView()
	st := v.header(d)
	for _, c := range d.confs.all() {
		cs, list := v.conf(c, q)
		if list != nil {
			limit := q.Limit
			if limit <= 0 {
				limit = admin.DefaultStatusLimit
			}
			list(func(e admin.EntryStatus) bool {
				if len(cs.Entries) >= limit {
					cs.More++
					return true
				}
				cs.Entries = append(cs.Entries, e)
				return true
			})
		}
		st.Confs = append(st.Confs, cs)
	}
	return st
}

// StreamStatus writes the status of every entry q matches with send: the
// header (the status without entries), then the entries of each file in
// batches (one at least per file, in order), then the end. The daemon
// holds one batch at a time, however many entries the files have.
func (d *Daemon) StreamStatus(q admin.StatusQuery, send func([][]byte) error) error {
	const batch = 1000
	v := d.newView()
	st := v.header(d)
	type pending struct {
		cs   admin.ConfStatus
		list func(func(admin.EntryStatus) bool)
	}
	var files []pending
	for _, c := range d.confs.all() {
		cs, list := v.conf(c, q)
		st.Confs = append(st.Confs, cs)
		files = append(files, pending{cs, list})
	}
	if err := send(admin.StatusReply(&st)); err != nil {
		return err
	}
	// Every file gets one batch at least, empty if need be, so that the
	// client meets the files in order.
	for _, f := range files {
		buf := []admin.EntryStatus{}
		sent := false
		var sendErr error
		flush := func() bool {
			if len(buf) == 0 && sent {
				return true
			}
			sent = true
			frame, err := admin.EntriesFrame(f.cs.Path, buf)
			if err == nil {
				err = send(frame)
			}
			buf, sendErr = buf[:0], err
			return err == nil
		}
		if f.list != nil {
			f.list(func(e admin.EntryStatus) bool {
				buf = append(buf, e)
				return len(buf) < batch || flush()
			})
		}
		if flush(); sendErr != nil {
			return sendErr
		}
	}
	return send(admin.EndFrame())
}

// view is what one status needs of the host: its addresses, the kernel's
// counts, and which addresses any file maps.
type view struct {
	addrs []addrs.Address
	conns map[netip.Addr]uint64
}

func (d *Daemon) newView() *view {
	return &view{addrs: d.addresses(), conns: d.connectionsByAddress()}
}

func (v *view) header(d *Daemon) admin.Status {
	st := admin.Status{
		Version:        d.cfg.Version,
		UptimeSeconds:  time.Since(d.start).Seconds(),
		BPF:            d.bpfState,
		NetlinkResyncs: d.tracker.Resyncs(),
		Queries: admin.QueryCounts{
			OK: d.queries.ok.Load(), Stale: d.queries.stale.Load(), Racy: d.queries.racy.Load(),
			Unknown: d.queries.unknown.Load(), Error: d.queries.errors.Load(),
		},
		Confs:    []admin.ConfStatus{},
		Unmapped: []admin.Unmapped{},
	}
	for _, a := range v.addrs {
		if !d.mapped(a.Addr) {
			st.Unmapped = append(st.Unmapped, admin.Unmapped{Address: a.Addr.String(), Interface: a.Interface, Connections: v.conns[a.Addr]})
		}
	}
	return st
}

// conf reports one file: its counts by state, and a function that lists
// the entries q matches, in file order (nil when the file has no
// snapshot). The listing calls yield with each entry until it returns
// false.
func (v *view) conf(c *confFile, q admin.StatusQuery) (admin.ConfStatus, func(yield func(admin.EntryStatus) bool)) {
	cs := admin.ConfStatus{Path: c.path, Error: c.lastError(), Problems: []string{}, Entries: []admin.EntryStatus{}}
	s := c.cur.Load()
	if s == nil {
		return cs, nil
	}
	cs.Generation, cs.LoadedAt = s.generation, s.loadedAt
	for i, e := range s.file.Errors {
		if i == admin.DefaultStatusLimit {
			cs.ProblemsMore = len(s.file.Errors) - i // ipwatchctl check lists them all
			break
		}
		cs.Problems = append(cs.Problems, e.Error())
	}
	// The addresses each entry serves, from the host's addresses: a
	// handful, whatever the size of the file.
	served := map[*conf.Entry][]admin.AddressStatus{}
	conns := map[*conf.Entry]uint64{}
	live := map[*conf.Entry]bool{}
	for _, a := range v.addrs {
		m := s.file.Lookup(a.Addr)
		if m.Entry == nil {
			continue
		}
		if !containsAddr(served[m.Entry], a.Addr) {
			conns[m.Entry] += v.conns[a.Addr] // once per address, however many links hold it
		}
		served[m.Entry] = append(served[m.Entry], admin.AddressStatus{Address: a.Addr.String(), Interface: a.Interface, Label: a.Label, Live: a.Live()})
		if a.Live() {
			live[m.Entry] = true
		}
	}
	fresh := len(s.file.Entries) <= freshLimit || q.All
	checked := c.checkFor(s)
	var checker conf.Checker
	memo := map[*conf.Entry][2]string{} // a small file's entries, checked once for counts and listing
	// state tells an entry's state and why it is invalid: the text's
	// refusal, else its root, user and group checked now when the file is
	// small, the entry live, the validator's pass found it failing, or the
	// listing checks every root; else the validator's pass.
	state := func(e *conf.Entry, now bool) (string, string) {
		if r, ok := memo[e]; ok {
			return r[0], r[1]
		}
		st, why := entryState(s, e, now || fresh || live[e] || checked.failedLine(e.Line), live[e], &checker)
		if fresh {
			memo[e] = [2]string{st, why}
		}
		return st, why
	}
	if fresh {
		for _, e := range s.file.Entries {
			switch st, _ := state(e, false); st {
			case admin.StateLive:
				cs.Counts.Live++
			case admin.StateAbsent:
				cs.Counts.Absent++
			default:
				cs.Counts.Invalid++
			}
		}
	} else {
		cs.Counts = stateCounts(s, checked, live, &checker)
		if checked != nil {
			cs.CheckedAt = checked.at
		} else {
			cs.Checking = true
		}
	}
	// The summary of a large file (no filter) lists its live entries,
	// then its invalid ones; anything else lists every entry that
	// matches, in file order.
	summary := q.State == "" && !q.All && !q.Match.IsValid() && !fresh
	list := func(yield func(admin.EntryStatus) bool) {
		matching := entriesMatching(s.file, q.Match)
		if summary {
			var first []*conf.Entry
			for _, e := range matching {
				if live[e] {
					first = append(first, e)
				}
			}
			for _, e := range matching {
				if !live[e] && (s.file.Refusal(e) != nil || checked.failedLine(e.Line)) {
					first = append(first, e)
				}
			}
			matching = first
		}
		for _, e := range matching {
			st, reason := state(e, q.All)
			if q.State != "" && st != q.State {
				continue
			}
			es := admin.EntryStatus{Key: e.Key, Line: e.Line, Root: e.Root, User: e.User, Group: e.Group,
				State: st, Reason: reason, Addresses: served[e], Connections: conns[e]}
			if es.Addresses == nil {
				es.Addresses = []admin.AddressStatus{}
			}
			if st != admin.StateInvalid {
				es.Warning = conf.RootWarning(e)
			}
			if n, ok := c.resolved.Load(e.Key); ok {
				es.Resolved = n.(*atomic.Uint64).Load()
			}
			if !yield(es) {
				return
			}
		}
	}
	return cs, list
}

// entryState is an entry's state and, when invalid, why: the text's
// refusal, else (when check) its root, user and group checked now, else
// live or absent.
func entryState(s *snapshot, e *conf.Entry, check, live bool, checker *conf.Checker) (string, string) {
	if err := s.file.Refusal(e); err != nil {
		return admin.StateInvalid, err.Error()
	}
	if check {
		if err := checker.Validate(e); err != nil {
			return admin.StateInvalid, err.Error()
		}
	}
	if live {
		return admin.StateLive, ""
	}
	return admin.StateAbsent, ""
}

// stateCounts counts the entries of a large file by state without
// checking every root: the text's refusals were counted at load, failed
// roots come from the validator's pass, and the live entries are checked
// now.
func stateCounts(s *snapshot, checked *rootCheck, live map[*conf.Entry]bool, checker *conf.Checker) admin.StateCounts {
	invalid := s.invalid
	if checked != nil {
		invalid += checked.invalid
	}
	n := 0
	for e := range live {
		if s.file.Refusal(e) != nil {
			continue
		}
		failedThen := checked.failedLine(e.Line)
		switch ok := checker.Validate(e) == nil; {
		case ok && failedThen:
			invalid-- // fixed since the pass
			n++
		case ok:
			n++
		case !failedThen:
			invalid++ // broken since the pass
		}
	}
	return admin.StateCounts{Live: n, Invalid: invalid, Absent: len(s.file.Entries) - invalid - n}
}

// entriesMatching returns the entries of f that match m: all of them for
// a zero m, the one serving it for an address, the ones whose keys lie
// within it for a prefix.
func entriesMatching(f *conf.File, m netip.Prefix) []*conf.Entry {
	if !m.IsValid() {
		return f.Entries
	}
	if m.IsSingleIP() {
		if e := f.Lookup(m.Addr()).Entry; e != nil {
			return []*conf.Entry{e}
		}
		return nil
	}
	var out []*conf.Entry
	for _, e := range f.Entries {
		if e.Kind != conf.KeyDefault && e.Prefix.Bits() >= m.Bits() && m.Contains(e.Prefix.Addr()) {
			out = append(out, e)
		}
	}
	return out
}

func containsAddr(as []admin.AddressStatus, a netip.Addr) bool {
	for _, x := range as {
		if x.Address == a.String() {
			return true
		}
	}
	return false
}

// connectionsByAddress sums the kernel's counts over ports: an entry's
// connections are those to its addresses, whatever the service.
func (d *Daemon) connectionsByAddress() map[netip.Addr]uint64 {
	out := map[netip.Addr]uint64{}
	if d.counter == nil {
		return out
	}
	counts, err := d.counter.Counts()
	if err != nil {
		d.log.Warn("bpf: reading the counts", zap.Error(err))
		return out
	}
	for k, n := range counts {
		out[k.Addr] += n
	}
	return out
}

func (d *Daemon) addresses() []addrs.Address {
	if s := d.tracker.Snapshot(); s != nil {
		return s.All()
	}
	return nil
}

// mapped reports whether any conf file has an entry for a.
func (d *Daemon) mapped(a netip.Addr) bool {
	for _, c := range d.confs.all() {
		if s := c.cur.Load(); s != nil && s.file.Lookup(a).Entry != nil {
			return true
		}
	}
	return false
}

// confList reports every file without its entries, for reload and OpConfs.
func (d *Daemon) confList() []admin.ConfStatus {
	var out []admin.ConfStatus
	for _, c := range d.confs.all() {
		cs := admin.ConfStatus{Path: c.path, Error: c.lastError(), Problems: []string{}, Entries: []admin.EntryStatus{}}
		if s := c.cur.Load(); s != nil {
			cs.Generation, cs.LoadedAt = s.generation, s.loadedAt
			for _, e := range s.file.Errors {
				cs.Problems = append(cs.Problems, e.Error())
			}
		}
		out = append(out, cs)
	}
	return out
}
