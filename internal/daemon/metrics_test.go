package daemon

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// The metrics say what the daemon did: questions by answer, resolves per
// entry, entries per state, the snapshot's generation and load time,
// reloads and their errors, resyncs, and build info.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "conf")
	os.WriteFile(p, []byte("10.0.0.1 /\n10.0.0.2 relative\n"), 0o644)
	d, err := New(Config{Socket: filepath.Join(dir, "run", "s.sock"), Confs: []string{p}, Log: zap.NewNop(), Version: "v9", Metrics: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-d.tracker.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	settle(t, p)
	d.ReloadAll()
	for i := 0; i < 3; i++ {
		ask(t, d.cfg.Socket, p, netip.MustParseAddr("10.0.0.1"))
	}
	os.WriteFile(p, []byte("10.0.0.1 /\x00"), 0o644)
	d.ReloadAll()

	resp, err := http.Get("http://" + d.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The watcher may see the broken write too: one failed load or more.
	if !regexp.MustCompile(`ipwatchd_reload_errors_total\{conf="` + regexp.QuoteMeta(p) + `"\} [1-9]`).Match(body) {
		t.Errorf("no failed load counted:\n%s", body)
	}
	for _, want := range []string{
		`ipwatchd_queries_total{result="ok"} 3`,
		`ipwatchd_resolved_total{conf="` + p + `",key="10.0.0.1"} 3`,
		`ipwatchd_resolved_total{conf="` + p + `",key="10.0.0.2"} 0`,
		`ipwatchd_entries{conf="` + p + `",state="invalid"} 1`,
		`ipwatchd_conf_generation{conf="` + p + `"} 1`,
		`ipwatchd_conf_loaded_timestamp_seconds{conf="` + p + `"}`,
		`ipwatchd_reloads_total{conf="` + p + `"} 1`,
		`ipwatchd_netlink_resyncs_total 0`,
		`ipwatchd_build_info{goversion="go`,
		`ipwatchd_bpf_enabled`,
		`ipwatchd_connections_total{conf="` + p + `",key="10.0.0.1"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %s in the metrics", want)
		}
	}
}
