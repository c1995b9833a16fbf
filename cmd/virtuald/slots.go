package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/slots"
)

// takeSlots takes, per connection, the connection's places under its
// entry's max=, per-source= and rate= (package slots): the returned file
// holds them for as long as a descriptor of it is open, which the exec
// passes on to whoever stays for the service. refusal says why the
// connection is past a limit (the file is then kept to count it:
// limitRefused). No limit, no file.
func takeSlots(dir, confPath string, e *conf.Entry, src netip.Addr) (f *slots.File, refusal string, err error) {
	l := e.Limits
	if !l.Set() {
		return nil, "", nil
	}
	if f, err = slots.Open(dir, confPath+"\x00"+e.Key); err != nil {
		return nil, "", err
	}
	src = src.Unmap()
	switch past, err := f.Take(l, src, time.Now()); {
	case err != nil:
		f.Close()
		return nil, "", fmt.Errorf("the limits of %s: %w", e.Key, err)
	case past == slots.Max:
		return f, maxRefusal(l.Max), nil
	case past == slots.PerSource:
		return f, perSourceRefusal(src, l.PerSource), nil
	case past == slots.Rate:
		return f, rateRefusal(l.Rate), nil
	}
	return f, "", nil
}

// limitRefused counts a refusal for a limit in the entry's file and says
// how to log it: the first in a second, with how many were not logged
// since and the entry's count of refusals (refused=), as accept mode
// does; false for the others, which are closed without a line. A daemon
// that just answered is told, for status and the metrics.
func limitRefused(f *slots.File, d *decision, socketPath, confPath, reason string) (string, bool) {
	notLogged, total, log := f.Refused(time.Now())
	if d.via == "daemon" {
		daemon := ipc.Client{Socket: socketPath, Timeout: ipc.ProbeTimeout}
		daemon.Count(ipc.CountRequest{Conf: confPath, Counts: []ipc.EntryCount{{Key: d.entry.Key, Connections: 1}}, Refused: true})
	}
	if !log {
		return "", false
	}
	if notLogged > 0 {
		reason += "; " + strconv.FormatUint(notLogged, 10) + " more refused in the last second, not logged"
	}
	if total > 0 {
		d.line.add("refused", strconv.FormatUint(total, 10))
	}
	return reason, true
}
