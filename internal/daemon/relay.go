package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/relay"
	"go.uber.org/zap"
)

// The log relay's hook into the daemon (-relay-syslog, see package
// relay): the daemon tells it the valid entries after every pass of the
// validator, runs it as a task, and asks it for status and metrics.

// newRelay makes the relay that Config.Relay asks for, or nil.
func (d *Daemon) newRelay() *relay.Relay {
	if d.cfg.Relay == nil {
		return nil
	}
	cfg := *d.cfg.Relay
	cfg.OnChange = func(root, state, reason string) {
		if reason != "" {
			d.log.Warn("relay: dev/log refused", zap.String("root", root), zap.String("reason", reason))
			return
		}
		d.log.Info("relay: dev/log "+state, zap.String("root", root))
	}
	return relay.New(cfg)
}

// syncRelay gives the relay every entry the text accepts and the
// validator's last pass found valid.
func (d *Daemon) syncRelay() {
	if d.relay == nil {
		return
	}
	var es []relay.Entry
	for _, c := range d.confs.all() {
		s := c.cur.Load()
		if s == nil {
			continue
		}
		if checked := c.checkFor(s); checked != nil {
			es = append(es, checked.relay...)
		}
	}
	d.relay.Sync(es)
}

// relayRoots gives the keys of each root (of the valid entries, each
// root with only the keys its label can show: relay.AddKey) as the relay
// takes them: as many entries as roots, give or take, not as lines.
func relayRoots(keys map[string][]string) []relay.Entry {
	var es []relay.Entry
	for root, ks := range keys {
		for _, k := range ks {
			es = append(es, relay.Entry{Key: k, Root: root})
		}
	}
	return es
}

// relayStatus is the relay of a valid entry's root, for status.
func relayStatus(r *relay.Relay, root string) *admin.RelayStatus {
	if r == nil {
		return nil
	}
	st := r.Status(root)
	out := &admin.RelayStatus{State: "on", Relayed: st.Relayed, Dropped: st.Dropped}
	if !st.On {
		out.State, out.Reason = "off", st.Reason
	}
	return out
}

var (
	descRelayMessages = prometheus.NewDesc("ipwatchd_relay_messages_total", "Messages from inside the roots, relayed to the host's syslog or dropped (over a root's rate, or the queue full).", []string{"result"}, nil)
	descRelayRoots    = prometheus.NewDesc("ipwatchd_relay_roots", "Roots whose dev/log the relay serves (on), or refused (off, see status).", []string{"state"}, nil)
)

// relayCollector is the relay's metrics: four series, whatever the roots.
type relayCollector struct{ r *relay.Relay }

func (c relayCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRelayMessages
	ch <- descRelayRoots
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	relayed, dropped, on, off := c.r.Counts()
	ch <- prometheus.MustNewConstMetric(descRelayMessages, prometheus.CounterValue, float64(relayed), "relayed")
	ch <- prometheus.MustNewConstMetric(descRelayMessages, prometheus.CounterValue, float64(dropped), "dropped")
	ch <- prometheus.MustNewConstMetric(descRelayRoots, prometheus.GaugeValue, float64(on), "on")
	ch <- prometheus.MustNewConstMetric(descRelayRoots, prometheus.GaugeValue, float64(off), "off")
}
