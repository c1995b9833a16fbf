package daemon

import (
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/addrs"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/relay"
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
// counts, and the services found.
type view struct {
	addrs    []addrs.Address
	kernel   map[bpf.Key]uint64 // by address and port
	conns    map[netip.Addr]uint64
	bpfOn    bool
	shed     map[shedEntry]uint64 // connections shed, per entry; nil when shedding is off
	services *serviceSet
	relay    *relay.Relay // nil without -relay-syslog
}

func (d *Daemon) newView() *view {
	kernel := d.kernelCounts()
	return &view{addrs: d.addresses(), kernel: kernel, conns: byAddress(kernel), bpfOn: d.counter != nil,
		shed: d.shedCounts(), services: d.services.Load(), relay: d.relay}
}

func (v *view) header(d *Daemon) admin.Status {
	st := admin.Status{
		Version:        d.cfg.Version,
		UptimeSeconds:  time.Since(d.start).Seconds(),
		BPF:            d.bpfState,
		Shedding:       d.shed.state,
		ShedLimited:    d.shedLimited(),
		NetlinkResyncs: d.tracker.Resyncs(),
		Queries: admin.QueryCounts{
			OK: d.queries.ok.Load(), Stale: d.queries.stale.Load(), Racy: d.queries.racy.Load(),
			Unknown: d.queries.unknown.Load(), Error: d.queries.errors.Load(),
		},
		Confs:           []admin.ConfStatus{},
		Unmapped:        []admin.Unmapped{},
		ServiceProblems: []admin.ServiceProblem{},
	}
	for _, p := range v.services.problems {
		st.ServiceProblems = append(st.ServiceProblems, admin.ServiceProblem{From: p.From, Reason: p.Reason})
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
	cs := admin.ConfStatus{Path: c.path, Error: c.lastError(), Adopted: c.adoptedBy(), Problems: []string{}, Entries: []admin.EntryStatus{}, Services: []admin.ServiceStatus{}}
	s := c.cur.Load()
	if s == nil {
		return cs, nil
	}
	cs.Generation, cs.LoadedAt = s.generation, s.loadedAt
	services := v.services.of(c.path)
	cs.Services = serviceStatuses(services)
	ports, counted := portsOf(services, v.bpfOn)
	cs.ConnectionsCounted = counted
	conns := entryConnections(s.file, v.kernel, ports)
	for i, e := range s.file.Errors {
		if i == admin.DefaultStatusLimit {
			cs.ProblemsMore = len(s.file.Errors) - i // ipwatchctl check lists them all
			break
		}
		cs.Problems = append(cs.Problems, e.Error())
	}
	// The addresses each entry serves, from the host's addresses: a
	// handful, whatever the size of the file.
	// Entries are told apart by their line: the file builds a new Entry
	// each time one is asked for.
	served := map[int][]admin.AddressStatus{}
	live := map[int]*conf.Entry{}
	for _, a := range v.addrs {
		e := s.file.Lookup(a.Addr).Entry
		if e == nil {
			continue
		}
		served[e.Line] = append(served[e.Line], admin.AddressStatus{Address: a.Addr.String(), Interface: a.Interface, Label: a.Label, Live: a.Live()})
		if a.Live() {
			live[e.Line] = e
		}
	}
	// A large file listed whole (-all) is checked entry by entry as it is
	// listed, but counted from the validator's pass: keeping every
	// entry's state to count them first would hold the whole file twice.
	fresh := s.file.Len() <= freshLimit
	checked := c.checkFor(s)
	// The programs of the services, from the validator's pass over this
	// copy and these services (a pass over other services says nothing).
	programs := checked
	if programs != nil && programs.services != v.services.generation {
		programs = nil
	}
	if len(services) > 0 && programs != nil {
		cs.ProgramsNotReady, cs.ProgramsCheckedAt = programs.notReady(), programs.at
		more := 0
		if len(cs.Problems) < admin.DefaultStatusLimit {
			var list []string
			list, more = programProblems(c.path, s, programs, admin.DefaultStatusLimit-len(cs.Problems))
			cs.Problems = append(cs.Problems, list...)
		} else {
			more = cs.ProgramsNotReady
		}
		cs.ProblemsMore += more
	}
	var checker conf.Checker
	defer checker.Close()
	memo := map[int][2]string{} // a small file's entries by line, checked once for counts and listing
	// While the file as it is now cannot be used, virtuald reads it and
	// refuses every connection: no entry of the last good copy is served.
	var refused string
	if cs.Error != "" {
		refused = fmt.Sprintf("every connection is refused: the conf file cannot be used as it is now (%s); generation %d was the last good copy", cs.Error, s.generation)
	}
	// state tells an entry's state and why it is invalid: the text's
	// refusal, else its root, user and group checked now when the file is
	// small, the entry live, the validator's pass found it failing, or the
	// listing checks every root; else the validator's pass.
	state := func(e *conf.Entry, now bool) (string, string) {
		if refused != "" {
			return admin.StateInvalid, refused
		}
		if r, ok := memo[e.Line]; ok {
			return r[0], r[1]
		}
		isLive := live[e.Line] != nil
		st, why := entryState(s, e, now || fresh || isLive || checked.failedLine(e.Line), isLive, &checker)
		if fresh {
			memo[e.Line] = [2]string{st, why}
		}
		return st, why
	}
	if refused != "" {
		cs.Counts = admin.StateCounts{Invalid: s.file.Len()}
	} else if fresh {
		for _, e := range s.file.All() {
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
			matching = slices.Values(summaryEntries(s, checked, live))
		}
		for e := range matching {
			st, reason := state(e, q.All)
			if q.State != "" && st != q.State {
				continue
			}
			iso := e.Options.Isolation(defaultIsolation(services))
			es := admin.EntryStatus{Key: e.Key, Line: e.Line, Root: e.Root, User: e.User, Group: e.Group,
				Isolate: iso.String(), Hostname: e.Hostname, Limits: e.Limits.String(), Refused: load(&c.refused, e.Key),
				State: st, Reason: reason, Addresses: served[e.Line], Ports: portCounts(conns[e.Line], ports)}
			if ec := conns[e.Line]; ec != nil {
				es.Connections = ec.total
			}
			if len(services) > 0 {
				es.Programs = entryPrograms(programs, services, e.Line, st != admin.StateInvalid)
			}
			if es.Addresses == nil {
				es.Addresses = []admin.AddressStatus{}
			}
			if st != admin.StateInvalid {
				es.Warning = conf.RootWarning(e, iso)
				es.Relay = relayStatus(v.relay, e.Root)
			}
			es.Resolved = load(&c.resolved, e.Key)
			es.Shed = v.shed[shedEntry{c.path, e.Key}]
			if !yield(es) {
				return
			}
		}
	}
	return cs, list
}

// summaryEntries lists what a large file's summary shows: its live
// entries, then the ones refused by the text or failing the validator's
// pass, each in line order, without building the entries in between.
func summaryEntries(s *snapshot, checked *rootCheck, live map[int]*conf.Entry) []*conf.Entry {
	byLine := func(a, b *conf.Entry) int { return a.Line - b.Line }
	first := slices.SortedFunc(maps.Values(live), byLine)
	var refused []*conf.Entry
	for e := range s.file.Refusals() {
		if live[e.Line] == nil {
			refused = append(refused, e)
		}
	}
	for line := range checked.lines() {
		if e := s.file.EntryAt(line); e != nil && live[line] == nil {
			refused = append(refused, e) // the pass skips what the text refuses: no duplicates
		}
	}
	slices.SortFunc(refused, byLine)
	return append(first, refused...)
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
func stateCounts(s *snapshot, checked *rootCheck, live map[int]*conf.Entry, checker *conf.Checker) admin.StateCounts {
	invalid := s.invalid
	if checked != nil {
		invalid += checked.invalid
	}
	n := 0
	for _, e := range live {
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
	return admin.StateCounts{Live: n, Invalid: invalid, Absent: s.file.Len() - invalid - n}
}

// entriesMatching returns the entries of f that match m: all of them for
// a zero m, the one serving it for an address, the ones whose keys lie
// within it for a prefix.
func entriesMatching(f *conf.File, m netip.Prefix) iter.Seq[*conf.Entry] {
	return func(yield func(*conf.Entry) bool) {
		if m.IsSingleIP() {
			if e := f.Lookup(m.Addr()).Entry; e != nil {
				yield(e)
			}
			return
		}
		for _, e := range f.All() {
			if !m.IsValid() || e.Kind != conf.KeyDefault && e.Prefix.Bits() >= m.Bits() && m.Contains(e.Prefix.Addr()) {
				if !yield(e) {
					return
				}
			}
		}
	}
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
		cs := admin.ConfStatus{Path: c.path, Error: c.lastError(), Adopted: c.adoptedBy(), Problems: []string{}, Entries: []admin.EntryStatus{}, Services: []admin.ServiceStatus{}}
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
