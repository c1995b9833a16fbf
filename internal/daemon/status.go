package daemon

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/internal/addrs"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"go.uber.org/zap"
)

// Status builds the status report from the current snapshots and
// addresses. Roots are checked again now (a root fixed or broken since the
// load shows as such), with the same code virtuald uses.
func (d *Daemon) Status() ipc.Status {
	st := ipc.Status{
		Version:        d.cfg.Version,
		UptimeSeconds:  time.Since(d.start).Seconds(),
		BPF:            d.bpfState,
		NetlinkResyncs: d.tracker.Resyncs(),
		Queries: ipc.QueryCounts{
			OK: d.queries.ok.Load(), Stale: d.queries.stale.Load(), Racy: d.queries.racy.Load(),
			Unknown: d.queries.unknown.Load(), Error: d.queries.errors.Load(),
		},
		Unmapped: []ipc.Unmapped{},
	}
	conns := d.connectionsByAddress()
	st.Confs = d.confStatuses(true, conns)
	for _, a := range d.addresses() {
		if d.mapped(a.Addr) {
			continue
		}
		st.Unmapped = append(st.Unmapped, ipc.Unmapped{Address: a.Addr.String(), Interface: a.Interface, Connections: conns[a.Addr]})
	}
	return st
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

// confStatuses reports every file; with entries, each entry's state and
// the kernel's connections to each address it serves (conns).
func (d *Daemon) confStatuses(withEntries bool, conns map[netip.Addr]uint64) []ipc.ConfStatus {
	var all []addrs.Address
	if withEntries {
		all = d.addresses()
	}
	var out []ipc.ConfStatus
	for _, c := range d.confs.all() {
		cs := ipc.ConfStatus{Path: c.path, Error: c.lastError(), Problems: []string{}, Entries: []ipc.EntryStatus{}}
		s := c.cur.Load()
		if s == nil {
			out = append(out, cs)
			continue
		}
		cs.Generation, cs.LoadedAt = s.generation, s.loadedAt
		for _, e := range s.file.Errors {
			cs.Problems = append(cs.Problems, e.Error())
		}
		if !withEntries {
			out = append(out, cs)
			continue
		}
		index := make(map[string]int, len(s.file.Entries))
		for _, e := range s.file.Entries {
			es := ipc.EntryStatus{Key: e.Key, Line: e.Line, Root: e.Root, User: e.User, Group: e.Group,
				State: ipc.StateAbsent, Addresses: []ipc.AddressStatus{}}
			if err := s.file.Refusal(e); err != nil {
				es.State, es.Reason = ipc.StateInvalid, err.Error()
			} else if err := e.Validate(); err != nil {
				es.State, es.Reason = ipc.StateInvalid, err.Error()
			} else {
				es.Warning = conf.RootWarning(e)
			}
			if v, ok := c.resolved.Load(e.Key); ok {
				es.Resolved = v.(*atomic.Uint64).Load()
			}
			index[e.Key] = len(cs.Entries)
			cs.Entries = append(cs.Entries, es)
		}
		for _, a := range all {
			m := s.file.Lookup(a.Addr)
			if m.Entry == nil {
				continue
			}
			es := &cs.Entries[index[m.Entry.Key]]
			if !slices.ContainsFunc(es.Addresses, func(x ipc.AddressStatus) bool { return x.Address == a.Addr.String() }) {
				es.Connections += conns[a.Addr] // once per address, however many links hold it
			}
			es.Addresses = append(es.Addresses, ipc.AddressStatus{
				Address: a.Addr.String(), Interface: a.Interface, Label: a.Label, Live: a.Live(),
			})
			if es.State == ipc.StateAbsent && a.Live() {
				es.State = ipc.StateLive
			}
		}
		out = append(out, cs)
	}
	return out
}
