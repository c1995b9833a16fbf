package daemon

import (
	"path/filepath"
	"strconv"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// handle answers the requests the socket's event loop (inline) or its
// goroutines hand it.
func (d *Daemon) handle(peer unix.Ucred, req [][]byte) [][]byte {
	switch string(req[1]) {
	case ipc.OpResolve, ipc.OpLookup:
		r, err := ipc.ParseResolveRequest(req)
		if err != nil {
			d.queries.errors.Add(1)
			return ipc.ErrorReply(err.Error())
		}
		return ipc.ResolveReply(d.resolve(peer, r))
	case ipc.OpCount, ipc.OpRefused:
		if peer.Uid != 0 {
			return ipc.ErrorReply(string(req[1]) + " is for root only")
		}
		r, err := ipc.ParseCountRequest(req)
		if err != nil {
			return ipc.ErrorReply(err.Error())
		}
		return ipc.CountReply(d.count(r))
	case ipc.OpStatus:
		q, err := admin.ParseStatusQuery(req)
		if err != nil {
			return ipc.ErrorReply(err.Error())
		}
		st := d.Status(q)
		return admin.StatusReply(&st)
	case ipc.OpConfs:
		return admin.ConfsReply(&admin.ConfList{Confs: d.confList(), RelaySyslog: d.relay != nil})
	case ipc.OpReload:
		if peer.Uid != 0 {
			return ipc.ErrorReply("reload is for root only")
		}
		d.log.Info("reload requested", zap.Int32("pid", peer.Pid))
		d.ReloadAll()
		return admin.ConfsReply(&admin.ConfList{Confs: d.confList()})
	}
	return ipc.ErrorReply("unknown operation " + string(req[1]))
}

// inline reports the requests the socket's event loop answers itself:
// virtuald's questions, a map lookup each; status and reload take longer
// and go to goroutines.
func inline(req [][]byte) bool {
	switch string(req[1]) {
	case ipc.OpResolve, ipc.OpLookup, ipc.OpCount, ipc.OpRefused:
		return true
	}
	return false
}

// stream answers the requests whose replies are streamed: a status of
// every entry.
func (d *Daemon) stream(peer unix.Ucred, req [][]byte) func(send func([][]byte) error) error {
	if string(req[1]) != ipc.OpStatus {
		return nil
	}
	q, err := admin.ParseStatusQuery(req)
	if err != nil || !q.All {
		return nil
	}
	return func(send func([][]byte) error) error { return d.StreamStatus(q, send) }
}

// resolve answers r from the daemon's copy of the conf file, when that
// copy is the file virtuald sees; a resolve (not a lookup) counts as one
// of virtuald's.
func (d *Daemon) resolve(peer unix.Ucred, r ipc.ResolveRequest) (*ipc.Answer, error) {
	c := d.confs.get(r.Conf)
	if c == nil {
		// Only virtuald's questions as root make the daemon read a new
		// file (it holds what it reads for good); ipwatchctl's lookups
		// change nothing.
		if !r.Lookup && peer.Uid == 0 && filepath.IsAbs(r.Conf) && filepath.Clean(r.Conf) == r.Conf && d.confs.len() < len(d.cfg.Confs)+maxAdopted {
			d.log.Info("adopting conf file", zap.String("conf", r.Conf), zap.Int32("pid", peer.Pid))
			d.adopt(r.Conf, "asked about by virtuald (pid "+strconv.Itoa(int(peer.Pid))+")")
		}
		d.queries.unknown.Add(1)
		return nil, ipc.ErrUnknown
	}
	s := c.cur.Load()
	if s == nil {
		d.queries.unknown.Add(1)
		return nil, ipc.ErrUnknown
	}
	if s.id != r.ID {
		// Only root's questions may make the daemon read the file again:
		// a member of the socket's group asking with a made-up identity
		// must not make it work.
		if peer.Uid == 0 {
			d.queue(r.Conf)
		}
		d.queries.stale.Add(1)
		return nil, ipc.ErrStale
	}
	if c.lastError() != "" {
		// The file can no longer be used as it is now (its directory
		// became unsafe, say) though its identity is the same: the copy
		// kept for status is not an answer. virtuald reads the file and
		// refuses, as status says.
		d.queries.stale.Add(1)
		return nil, ipc.ErrStale
	}
	if s.racy() {
		// The read again is scheduled; until it is done, the file
		// itself is the only safe answer.
		d.queries.racy.Add(1)
		return nil, ipc.ErrRacy
	}
	m := s.file.Lookup(r.Addr)
	a := &ipc.Answer{Generation: s.generation, Rule: m.Rule.String()}
	if m.Entry != nil {
		a.Line, a.Key, a.Root, a.Options = m.Entry.Line, m.Entry.Key, m.Entry.Root, m.Entry.Options.String()
		// Only root's questions are virtuald's: a member of the socket's
		// group cannot make an entry's count grow.
		if !r.Lookup && peer.Uid == 0 {
			c.counter(m.Entry.Key).Add(1)
		}
	}
	if m.Err != nil {
		a.Refusal = m.Err.Error()
	} else if m.Entry != nil && r.Program != "" {
		a.Program = c.checkFor(s).programIn(m.Entry.Line, r.Program, r.Path)
	}
	d.queries.ok.Add(1)
	return a, nil
}

// count adds connections that virtuald in accept mode answered from the
// answers it keeps to the entries' resolved counts (or, for r.Refused, the
// connections it refused for their limits to their refused counts), and
// returns the generation of the file, which lets accept mode drop the
// answers it keeps when the file changed.
func (d *Daemon) count(r ipc.CountRequest) (generation uint64, err error) {
	c := d.confs.get(r.Conf)
	if c == nil {
		return 0, ipc.ErrUnknown
	}
	for _, n := range r.Counts {
		if r.Refused {
			c.refusals(n.Key).Add(n.Connections)
		} else {
			c.counter(n.Key).Add(n.Connections)
		}
	}
	if s := c.cur.Load(); s != nil {
		return s.generation, nil
	}
	return 0, nil
}
