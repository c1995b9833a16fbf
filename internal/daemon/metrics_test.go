package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"go.uber.org/zap"
)

// metricsDaemon runs a daemon serving confs with metrics on a loopback
// port, capped at max entries with series of their own.
func metricsDaemon(t *testing.T, max int, confs ...string) *Daemon {
	t.Helper()
	settle(t, confs...)
	d, err := New(Config{Socket: filepath.Join(t.TempDir(), "run", "s.sock"), Confs: confs, Log: zap.NewNop(), Version: "v9",
		Metrics: "127.0.0.1:0", MetricsMaxEntries: max})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-d.tracker.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	d.ReloadAll()
	return d
}

// scrape returns the metrics text and its samples (lines not comments).
func scrape(t *testing.T, d *Daemon) (string, map[string]float64) {
	t.Helper()
	resp, err := http.Get("http://" + d.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	samples := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", l, err)
		}
		samples[l[:i]] = v
	}
	return string(body), samples
}

// The metrics say what the daemon did: questions by answer, resolves per
// active entry, entries per state, the snapshot's generation and load
// time, reloads and their errors, resyncs, and build info.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "conf")
	testbed.Must(t, os.WriteFile(p, []byte("10.0.0.1 /\n10.0.0.2 relative\n"), 0o644))
	d := metricsDaemon(t, 0, p)
	for i := 0; i < 3; i++ {
		ask(t, d.cfg.Socket, p, netip.MustParseAddr("10.0.0.1"))
	}
	testbed.Must(t, os.WriteFile(p, []byte("10.0.0.1 /\x00"), 0o644))
	d.ReloadAll()

	body, samples := scrape(t, d)
	// The watcher may see the broken write too: one failed load or more.
	if !regexp.MustCompile(`ipwatchd_reload_errors_total\{conf="` + regexp.QuoteMeta(p) + `"\} [1-9]`).MatchString(body) {
		t.Errorf("no failed load counted:\n%s", body)
	}
	for want, v := range map[string]float64{
		`ipwatchd_queries_total{result="ok"}`:                         3,
		`ipwatchd_resolved_total{conf="` + p + `",key="10.0.0.1"}`:    3,
		`ipwatchd_connections_total{conf="` + p + `",key="10.0.0.1"}`: 0,
		`ipwatchd_entries{conf="` + p + `",state="invalid"}`:          2, // the file cannot be used now: all refused
		`ipwatchd_entries{conf="` + p + `",state="absent"}`:           0,
		`ipwatchd_entries{conf="` + p + `",state="live"}`:             0,
		`ipwatchd_conf_generation{conf="` + p + `"}`:                  1,
		`ipwatchd_reloads_total{conf="` + p + `"}`:                    1,
		`ipwatchd_netlink_resyncs_total`:                              0,
		`ipwatchd_kernel_connections_total`:                           0,
		`ipwatchd_bpf_enabled`:                                        0,
	} {
		if got, ok := samples[want]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", want, got, ok, v)
		}
	}
	for _, want := range []string{`ipwatchd_conf_loaded_timestamp_seconds{conf="` + p + `"}`, `ipwatchd_build_info{goversion="go`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in the metrics", want)
		}
	}
	if strings.Contains(body, `key="10.0.0.2"`) {
		t.Error("an entry without activity has series of its own")
	}
}

// At a million entries, 2 of them live, a scrape is as small as at ten:
// the series are bounded by the conf files and the cap, not the entries.
func TestMetricsAtAMillionEntries(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 1_000_000-2; i++ {
		fmt.Fprintf(&b, "10.%d.%d.%d /virtual/filler%d\n", i>>16&255, i>>8&255, i&255, i)
	}
	b.WriteString("127.0.0.1 /\n::1 /\n") // the loopback addresses: live
	p := filepath.Join(t.TempDir(), "conf")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d := metricsDaemon(t, 0, p)
	ask(t, d.cfg.Socket, p, netip.MustParseAddr("127.0.0.1"))
	body, samples := scrape(t, d)
	ours := 0
	for k := range samples {
		if strings.HasPrefix(k, "ipwatchd_") {
			ours++
		}
	}
	t.Logf("%d ipwatchd series, %d samples in all, %d bytes", ours, len(samples), len(body))
	if ours > 30 || len(body) > 100<<10 {
		t.Errorf("%d ipwatchd series, %d bytes: want a handful and < 100 KiB", ours, len(body))
	}
	states := 0.0
	for _, s := range []string{"live", "absent", "invalid"} {
		states += samples[`ipwatchd_entries{conf="`+p+`",state="`+s+`"}`]
	}
	if states != 1_000_000 || samples[`ipwatchd_entries{conf="`+p+`",state="live"}`] != 2 {
		t.Errorf("entries by state add up to %v (live %v), want 1000000 (2 live)", states, samples[`ipwatchd_entries{conf="`+p+`",state="live"}`])
	}
	if samples[`ipwatchd_resolved_total{conf="`+p+`",key="127.0.0.1"}`] != 1 {
		t.Errorf("the active entry has no series of its own:\n%s", body)
	}
}

// With the cap at 3, the 3 busiest entries get series of their own and
// keep them; everything else is summed into key="other", including an
// entry that becomes the busiest later and entries a reload removes, so
// no series ever goes down and the sum over a file's series only grows.
func TestMetricsCapAndOther(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "conf")
	var lines []string
	for i := 1; i <= 6; i++ {
		lines = append(lines, fmt.Sprintf("10.0.0.%d /", i))
	}
	testbed.Must(t, os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	d := metricsDaemon(t, 3, p)
	askN := func(a string, n int) {
		for i := 0; i < n; i++ {
			ask(t, d.cfg.Socket, p, netip.MustParseAddr(a))
		}
	}
	askN("10.0.0.1", 5)
	askN("10.0.0.2", 4)
	askN("10.0.0.3", 3)
	askN("10.0.0.4", 2)
	askN("10.0.0.5", 1)
	key := func(k string) string { return `ipwatchd_resolved_total{conf="` + p + `",key="` + k + `"}` }
	_, first := scrape(t, d)
	for k, want := range map[string]float64{"10.0.0.1": 5, "10.0.0.2": 4, "10.0.0.3": 3, "other": 3} {
		if first[key(k)] != want {
			t.Errorf("%s = %v, want %v", key(k), first[key(k)], want)
		}
	}
	if _, ok := first[key("10.0.0.4")]; ok {
		t.Error("a fourth entry got a series of its own past the cap")
	}

	askN("10.0.0.4", 10) // now the busiest: it stays in other
	settle(t, p)
	testbed.Must(t, os.WriteFile(p, []byte("10.0.0.1 /\n10.0.0.6 /\n"), 0o644)) // 2 and 3 removed
	settle(t, p)
	d.ReloadAll()
	askN("10.0.0.6", 1)
	_, second := scrape(t, d)
	for name, v := range first {
		if strings.HasPrefix(name, "ipwatchd_resolved_total") && second[name] < v {
			t.Errorf("%s went down from %v to %v", name, v, second[name])
		}
	}
	if second[key("other")] != 3+10+1 || second[key("10.0.0.2")] != 4 {
		t.Errorf("other = %v (want 14), 10.0.0.2 = %v (want 4, kept after the reload)", second[key("other")], second[key("10.0.0.2")])
	}
}

// The refusals virtuald -accept reports for the entries' limits show per
// entry in status (beside the limits from the conf) and in the metrics,
// apart from the questions answered.
func TestRefusedCounts(t *testing.T) {
	testbed.RequirePrivileges(t) // the report is root's only
	dir := t.TempDir()
	p := filepath.Join(dir, "conf")
	testbed.Must(t, os.WriteFile(p, []byte("10.0.0.1 / max=16 rate=50/s per-source=2\n10.0.0.2 /\n"), 0o644))
	d := metricsDaemon(t, 0, p)
	c := ipc.Client{Socket: d.cfg.Socket, Timeout: 5 * time.Second}
	for _, n := range []uint64{5, 2} {
		if _, err := c.Count(ipc.CountRequest{Conf: p, Counts: []ipc.EntryCount{{Key: "10.0.0.1", Connections: n}}, Refused: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Count(ipc.CountRequest{Conf: p, Counts: []ipc.EntryCount{{Key: "10.0.0.2", Connections: 4}}}); err != nil {
		t.Fatal(err)
	}
	st := d.Status(admin.StatusQuery{})
	got := map[string]admin.EntryStatus{}
	for _, e := range st.Confs[0].Entries {
		got[e.Key] = e
	}
	if e := got["10.0.0.1"]; e.Limits != "max=16 rate=50/s per-source=2" || e.Refused != 7 || e.Resolved != 0 {
		t.Errorf("10.0.0.1: limits %q, refused %d, resolved %d; want the conf's limits, 7, 0", e.Limits, e.Refused, e.Resolved)
	}
	if e := got["10.0.0.2"]; e.Limits != "" || e.Refused != 0 || e.Resolved != 4 {
		t.Errorf("10.0.0.2: limits %q, refused %d, resolved %d; want none, 0, 4", e.Limits, e.Refused, e.Resolved)
	}
	_, samples := scrape(t, d)
	for want, v := range map[string]float64{
		`ipwatchd_refused_total{conf="` + p + `",key="10.0.0.1"}`:  7,
		`ipwatchd_resolved_total{conf="` + p + `",key="10.0.0.1"}`: 0,
		`ipwatchd_refused_total{conf="` + p + `",key="10.0.0.2"}`:  0,
		`ipwatchd_resolved_total{conf="` + p + `",key="10.0.0.2"}`: 4,
	} {
		if got, ok := samples[want]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", want, got, ok, v)
		}
	}
}
