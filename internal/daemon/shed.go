package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/conf"
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
