package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// collector turns the daemon's state into Prometheus metrics at scrape
// time, so nothing is kept twice; every label set is bounded by the conf
// files and the host's addresses.
type collector struct{ d *Daemon }

var (
	descQueries     = prometheus.NewDesc("ipwatchd_queries_total", "virtuald's questions, by answer.", []string{"result"}, nil)
	descResolved    = prometheus.NewDesc("ipwatchd_resolved_total", "virtuald's questions answered with each entry.", []string{"conf", "key"}, nil)
	descConnections = prometheus.NewDesc("ipwatchd_connections_total", "TCP connections the kernel accepted on each entry's addresses (BPF).", []string{"conf", "key"}, nil)
	descUnmapped    = prometheus.NewDesc("ipwatchd_unmapped_connections_total", "TCP connections the kernel accepted on addresses no entry serves (BPF).", []string{"address"}, nil)
	descEntries     = prometheus.NewDesc("ipwatchd_entries", "Entries of each conf file, by state.", []string{"conf", "state"}, nil)
	descGeneration  = prometheus.NewDesc("ipwatchd_conf_generation", "Generation of the snapshot served for each conf file.", []string{"conf"}, nil)
	descLoadedAt    = prometheus.NewDesc("ipwatchd_conf_loaded_timestamp_seconds", "When the snapshot served for each conf file was loaded.", []string{"conf"}, nil)
	descReloads     = prometheus.NewDesc("ipwatchd_reloads_total", "Loads of each conf file that published a new snapshot.", []string{"conf"}, nil)
	descReloadErrs  = prometheus.NewDesc("ipwatchd_reload_errors_total", "Loads of each conf file that failed (the last good snapshot stayed).", []string{"conf"}, nil)
	descResyncs     = prometheus.NewDesc("ipwatchd_netlink_resyncs_total", "Times the address tracker lost netlink events and dumped again.", nil, nil)
	descBPF         = prometheus.NewDesc("ipwatchd_bpf_enabled", "1 when the kernel counts connections for ipwatchd.", nil, nil)
	descBuild       = prometheus.NewDesc("ipwatchd_build_info", "ipwatchd's version and Go version.", []string{"version", "goversion"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueries, descResolved, descConnections, descUnmapped, descEntries,
		descGeneration, descLoadedAt, descReloads, descReloadErrs, descResyncs, descBPF, descBuild} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	st := d.Status()
	counter(descQueries, st.Queries.OK, "ok")
	counter(descQueries, st.Queries.Stale, "stale")
	counter(descQueries, st.Queries.Racy, "racy")
	counter(descQueries, st.Queries.Unknown, "unknown")
	counter(descQueries, st.Queries.Error, "error")
	for _, cs := range st.Confs {
		states := map[string]float64{"live": 0, "absent": 0, "invalid": 0}
		for _, e := range cs.Entries {
			counter(descResolved, e.Resolved, cs.Path, e.Key)
			counter(descConnections, e.Connections, cs.Path, e.Key)
			states[e.State]++
		}
		for s, n := range states {
			gauge(descEntries, n, cs.Path, s)
		}
		gauge(descGeneration, float64(cs.Generation), cs.Path)
		if cs.Generation > 0 {
			gauge(descLoadedAt, float64(cs.LoadedAt.UnixNano())/1e9, cs.Path)
		}
		if f := d.confs.get(cs.Path); f != nil {
			counter(descReloads, f.loads.Load(), cs.Path)
			counter(descReloadErrs, f.loadErrors.Load(), cs.Path)
		}
	}
	for _, u := range st.Unmapped {
		counter(descUnmapped, u.Connections, u.Address)
	}
	counter(descResyncs, st.NetlinkResyncs)
	on := 0.0
	if st.BPF == "on" {
		on = 1
	}
	gauge(descBPF, on)
	gauge(descBuild, 1, d.cfg.Version, runtime.Version())
}

// serveMetrics serves /metrics on the listener until ctx ends.
func (d *Daemon) serveMetrics(ctx context.Context, ln net.Listener) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{d}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
