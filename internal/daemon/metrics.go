package daemon

import (
	"cmp"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtuald/virtuald/internal/addrs"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc/admin"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// DefaultMetricsMaxEntries is how many entries (across conf files), and
// how many unmapped addresses, get series of their own unless
// Config.MetricsMaxEntries says otherwise.
const DefaultMetricsMaxEntries = 300

// collector turns the daemon's state into Prometheus metrics at scrape
// time, so nothing is kept twice. The number of series is bounded by the
// conf files (a handful per file) and by the cap, never by the number of
// entries: a scrape costs the same at ten entries and at a million.
// Per-entry series go to the entries that saw activity (questions
// answered, or connections the kernel counted) and keep their place once
// given one (see series), so every series only grows.
type collector struct {
	d       *Daemon
	entries *series // "conf\x00key" of the entries with series of their own
	addrs   *series // unmapped addresses with series of their own
}

var (
	descQueries     = prometheus.NewDesc("ipwatchd_queries_total", "virtuald's questions, by answer.", []string{"result"}, nil)
	descResolved    = prometheus.NewDesc("ipwatchd_resolved_total", `virtuald's questions answered with an entry; entries past -metrics-max-entries are summed into key="other".`, []string{"conf", "key"}, nil)
	descRefused     = prometheus.NewDesc("ipwatchd_refused_total", `Connections virtuald refused for an entry's limits (max=, rate=, per-source=, and -max-per-entry in accept mode): accept mode reports them every second, virtuald per connection (inetd nowait) each one when the daemon answered its question; entries past -metrics-max-entries are summed into key="other".`, []string{"conf", "key"}, nil)
	descShed        = prometheus.NewDesc("ipwatchd_shed_total", `Connections to per-connection services (inetd nowait) the kernel refused past an entry's rate= before the super-server saw them (sk_lookup; see ipwatchd_shedding_enabled), on every port of the entry's services, since its limit was set; entries past -metrics-max-entries are summed into key="other".`, []string{"conf", "key"}, nil)
	descShedOn      = prometheus.NewDesc("ipwatchd_shedding_enabled", "1 when the kernel refuses connections past rate= for per-connection services.", nil, nil)
	descConnections = prometheus.NewDesc("ipwatchd_connections_total", `TCP connections the kernel accepted on an entry's addresses (BPF), on the TCP ports of the services found that use the file (every port when none is found), by the conf file as it is now; entries past -metrics-max-entries are summed into key="other".`, []string{"conf", "key"}, nil)
	descKernel      = prometheus.NewDesc("ipwatchd_kernel_connections_total", "TCP connections the kernel accepted on every address (BPF).", nil, nil)
	descUnmapped    = prometheus.NewDesc("ipwatchd_unmapped_connections_total", `TCP connections the kernel accepted on addresses no entry serves (BPF); addresses past -metrics-max-entries are summed into address="other".`, []string{"address"}, nil)
	descEntries     = prometheus.NewDesc("ipwatchd_entries", "Entries of each conf file, by state.", []string{"conf", "state"}, nil)
	descChecked     = prometheus.NewDesc("ipwatchd_entries_checked_timestamp_seconds", "When the validator last finished checking every root of each conf file (the invalid count of ipwatchd_entries is as of then, and now for live entries).", []string{"conf"}, nil)
	descGeneration  = prometheus.NewDesc("ipwatchd_conf_generation", "Generation of the snapshot served for each conf file.", []string{"conf"}, nil)
	descLoadedAt    = prometheus.NewDesc("ipwatchd_conf_loaded_timestamp_seconds", "When the snapshot served for each conf file was loaded.", []string{"conf"}, nil)
	descReloads     = prometheus.NewDesc("ipwatchd_reloads_total", "Loads of each conf file that published a new snapshot.", []string{"conf"}, nil)
	descReloadErrs  = prometheus.NewDesc("ipwatchd_reload_errors_total", "Loads of each conf file that failed (the last good snapshot stayed).", []string{"conf"}, nil)
	descResyncs     = prometheus.NewDesc("ipwatchd_netlink_resyncs_total", "Times the address tracker lost netlink events and dumped again.", nil, nil)
	descBPF         = prometheus.NewDesc("ipwatchd_bpf_enabled", "1 when the kernel counts connections for ipwatchd.", nil, nil)
	descBuild       = prometheus.NewDesc("ipwatchd_build_info", "ipwatchd's version and Go version.", []string{"version", "goversion"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueries, descResolved, descRefused, descShed, descShedOn, descConnections, descKernel, descUnmapped, descEntries, descChecked,
		descGeneration, descLoadedAt, descReloads, descReloadErrs, descResyncs, descBPF, descBuild} {
		ch <- d
	}
}

// series is the set of label values with series of their own: at most
// max, given in the order they first show activity (the busiest first
// among those that show it in the same scrape) and never taken back. A
// value that found the set full is summed into "other" for good, since
// the set never admits anyone once full: so neither a value's own series
// nor "other" ever goes down, and rate() never sees a false reset.
type series struct {
	mu  sync.Mutex
	max int
	in  map[string]bool
}

func newSeries(max int) *series { return &series{max: max, in: map[string]bool{}} }

// split admits what it can of active (value -> activity) and returns the
// values with their own series; the rest belong to "other".
func (s *series) split(active map[string]uint64) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var newcomers []string
	for v := range active {
		if !s.in[v] {
			newcomers = append(newcomers, v)
		}
	}
	slices.SortFunc(newcomers, func(a, b string) int {
		if c := cmp.Compare(active[b], active[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	for _, v := range newcomers {
		if len(s.in) >= s.max {
			break
		}
		s.in[v] = true
	}
	return s.in
}

// activity is what one entry did: questions answered, connections
// counted, connections refused for its limits.
type activity struct{ resolved, connections, refused, shed uint64 }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter(descQueries, d.queries.ok.Load(), "ok")
	counter(descQueries, d.queries.stale.Load(), "stale")
	counter(descQueries, d.queries.racy.Load(), "racy")
	counter(descQueries, d.queries.unknown.Load(), "unknown")
	counter(descQueries, d.queries.errors.Load(), "error")

	counts := d.kernelCounts()
	conns := byAddress(counts)
	services := d.services.Load()
	var kernel uint64
	for _, n := range conns {
		kernel += n
	}
	hostAddrs := d.addresses()
	files := d.confs.all()
	active := map[string]activity{} // "conf\x00key"
	mapped := map[netip.Addr]bool{}
	for e, n := range d.shedCounts() {
		a := active[e.Conf+"\x00"+e.Key]
		a.shed = n
		active[e.Conf+"\x00"+e.Key] = a
	}
	for _, cf := range files {
		// The entries' counters, each into its field of the activity.
		for m, field := range map[*sync.Map]func(*activity) *uint64{
			&cf.resolved: func(a *activity) *uint64 { return &a.resolved },
			&cf.refused:  func(a *activity) *uint64 { return &a.refused },
		} {
			m.Range(func(k, v any) bool {
				if n := v.(*atomic.Uint64).Load(); n > 0 {
					a := active[cf.path+"\x00"+k.(string)]
					*field(&a) = n
					active[cf.path+"\x00"+k.(string)] = a
				}
				return true
			})
		}
		s := cf.cur.Load()
		if s == nil {
			continue
		}
		for addr := range conns {
			if s.file.Lookup(addr).Entry != nil {
				mapped[addr] = true
			}
		}
		ports, _ := portsOf(services.of(cf.path), d.counter != nil)
		for _, ec := range entryConnections(s.file, counts, ports) {
			a := active[cf.path+"\x00"+ec.key]
			a.connections += ec.total
			active[cf.path+"\x00"+ec.key] = a
		}
		c.entryStates(cf, s, hostAddrs, gauge)
		gauge(descGeneration, float64(s.generation), cf.path)
		gauge(descLoadedAt, float64(s.loadedAt.UnixNano())/1e9, cf.path)
	}
	for _, cf := range files {
		counter(descReloads, cf.loads.Load(), cf.path)
		counter(descReloadErrs, cf.loadErrors.Load(), cf.path)
	}

	busy := map[string]uint64{}
	for k, a := range active {
		busy[k] = a.resolved + a.connections + a.refused + a.shed
	}
	own := c.entries.split(busy)
	other := map[string]activity{} // by conf
	for k, a := range active {
		if own[k] {
			conf, key, _ := strings.Cut(k, "\x00")
			counter(descResolved, a.resolved, conf, key)
			counter(descConnections, a.connections, conf, key)
			counter(descRefused, a.refused, conf, key)
			if d.shed.shedder != nil {
				counter(descShed, a.shed, conf, key)
			}
			continue
		}
		conf, _, _ := strings.Cut(k, "\x00")
		o := other[conf]
		o.resolved += a.resolved
		o.connections += a.connections
		o.refused += a.refused
		o.shed += a.shed
		other[conf] = o
	}
	for conf, o := range other {
		counter(descResolved, o.resolved, conf, "other")
		counter(descConnections, o.connections, conf, "other")
		counter(descRefused, o.refused, conf, "other")
		if d.shed.shedder != nil {
			counter(descShed, o.shed, conf, "other")
		}
	}

	unmapped := map[string]uint64{}
	for addr, n := range conns {
		if !mapped[addr] {
			unmapped[addr.String()] = n
		}
	}
	ownAddrs := c.addrs.split(unmapped)
	var rest uint64
	restSeen := false
	for a, n := range unmapped {
		if ownAddrs[a] {
			counter(descUnmapped, n, a)
		} else {
			rest, restSeen = rest+n, true
		}
	}
	if restSeen {
		counter(descUnmapped, rest, "other")
	}
	counter(descKernel, kernel)
	counter(descResyncs, d.tracker.Resyncs())
	on := 0.0
	if d.counter != nil {
		on = 1
	}
	gauge(descBPF, on)
	shedOn := 0.0
	if d.shed.shedder != nil {
		shedOn = 1
	}
	gauge(descShedOn, shedOn)
	gauge(descBuild, 1, d.cfg.Version, runtime.Version())
}

// entryStates reports the entries of one file by state, as a status of a
// large file counts them (stateCounts): without touching every entry.
func (c collector) entryStates(cf *confFile, s *snapshot, hostAddrs []addrs.Address, gauge func(*prometheus.Desc, float64, ...string)) {
	checked := cf.checkFor(s)
	live := map[int]*conf.Entry{} // by line
	for _, a := range hostAddrs {
		if m := s.file.Lookup(a.Addr); a.Live() && m.Entry != nil {
			live[m.Entry.Line] = m.Entry
		}
	}
	var checker conf.Checker
	defer checker.Close()
	n := admin.StateCounts{Invalid: s.file.Len()} // the file cannot be used now: all refused, as status says
	if cf.lastError() == "" {
		n = stateCounts(s, checked, live, &checker)
	}
	if checked != nil {
		gauge(descChecked, float64(checked.at.UnixNano())/1e9, cf.path)
	}
	gauge(descEntries, float64(n.Invalid), cf.path, admin.StateInvalid)
	gauge(descEntries, float64(n.Live), cf.path, admin.StateLive)
	gauge(descEntries, float64(n.Absent), cf.path, admin.StateAbsent)
}

// serveMetrics serves /metrics on the listener until ctx ends.
func (d *Daemon) serveMetrics(ctx context.Context, ln net.Listener) error {
	reg := prometheus.NewRegistry()
	max := d.cfg.MetricsMaxEntries
	if max <= 0 {
		max = DefaultMetricsMaxEntries
	}
	reg.MustRegister(collector{d: d, entries: newSeries(max), addrs: newSeries(max)}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if d.relay != nil {
		reg.MustRegister(relayCollector{d.relay})
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	})
	defer stop()
	d.log.Info("metrics", zap.String("address", ln.Addr().String()))
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
