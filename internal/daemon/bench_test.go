package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
	"go.uber.org/zap"
)

// writeBig writes a conf of n exact entries and returns its path and the
// address on its last line.
func writeBig(tb testing.TB, dir string, n int) (string, netip.Addr) {
	var b strings.Builder
	var last netip.Addr
	for i := 0; i < n; i++ {
		last = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		fmt.Fprintf(&b, "%s /virtual/site%d user=%d\n", last, i, 1000+i%1000)
	}
	p := filepath.Join(dir, fmt.Sprintf("conf.%d", n))
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p, last
}

// BenchmarkQueries1000Clients: 1,000 clients ask at once, each on its own
// connection per question as virtuald does; it reports questions per
// second and the latency percentiles. The clients use the net package
// (goroutines) instead of virtuald's blocking client, which would need a
// thread each; the server cannot tell.
func BenchmarkQueries1000Clients(b *testing.B) {
	dir := b.TempDir()
	path, addr := writeBig(b, dir, 1000)
	_, sock := startDaemon(b, []string{path})
	q := question(b, path, addr)
	frame := q.AppendFrame(nil)
	const clients = 1000
	per := b.N/clients + 1
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := 0; i < per; i++ {
				t0 := time.Now()
				conn, err := net.Dial("unix", sock)
				if err != nil {
					b.Error(err)
					return
				}
				conn.Write(frame)
				if _, err := io.ReadAtLeast(conn, buf, 8); err != nil {
					b.Error(err)
				}
				conn.Close()
				lat[c] = append(lat[c], time.Since(t0))
			}
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "queries/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkLoad1M: the time to load a conf file of 1,000,000 entries and
// the heap the snapshot holds.
func BenchmarkLoad1M(b *testing.B) {
	dir := b.TempDir()
	path, _ := writeBig(b, dir, 1000000)
	var took time.Duration
	var heap uint64
	for i := 0; i < b.N; i++ {
		s := newConfSet()
		c, _ := s.add(path)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		if _, err := s.load(c); err != nil {
			b.Fatal(err)
		}
		took += time.Since(t0)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(c.cur.Load())
	}
	b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "load-ms")
	b.ReportMetric(float64(heap)/float64(b.N)/(1<<20), "heap-MiB")
}

// BenchmarkReread1M: what the rereader's read of a file whose content did
// not change costs at 1,000,000 entries (it reads and hashes the file,
// publishes nothing), every DefaultRecheck.
func BenchmarkReread1M(b *testing.B) {
	path, _ := writeBig(b, b.TempDir(), 1000000)
	s := newConfSet()
	c, _ := s.add(path)
	if _, err := s.load(c); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if changed, err := s.load(c); err != nil || changed {
			b.Fatalf("a reread of the same content: changed %v, %v", changed, err)
		}
	}
	msPerRead := float64(b.Elapsed().Milliseconds()) / float64(b.N)
	b.ReportMetric(msPerRead/(DefaultRecheck.Seconds()*1000)*100, "%core")
}

// BenchmarkMetricsScrape: one scrape of -metrics at 1,000,000 entries with
// 2 live (the loopback addresses) and one active, and at 1,000 active
// entries with the cap raised to 1,000; after the validator's first pass,
// as in steady state. It reports the scrape's size.
func BenchmarkMetricsScrape(b *testing.B) {
	dir := b.TempDir()
	var big strings.Builder
	for i := 0; i < 1_000_000-2; i++ {
		fmt.Fprintf(&big, "10.%d.%d.%d /virtual/filler%d\n", i>>16&255, i>>8&255, i&255, i)
	}
	big.WriteString("127.0.0.1 /\n::1 /\n")
	million := filepath.Join(dir, "conf.1000000")
	testbed.Must(b, os.WriteFile(million, []byte(big.String()), 0o644))
	thousand, _ := writeBig(b, dir, 1000)
	for _, c := range []struct {
		name   string
		conf   string
		cap    int
		active int
	}{{"entries=1000000/live=2", million, 0, 1}, {"active=1000/cap=1000", thousand, 1000, 1000}} {
		b.Run(c.name, func(b *testing.B) {
			d := benchMetricsDaemon(b, c.conf, c.cap)
			f := d.confs.get(c.conf)
			for deadline := time.Now().Add(2 * time.Minute); f.checked.Load() == nil; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatal("the validator did not finish its first pass")
				}
			}
			client := ipc.Client{Socket: d.cfg.Socket, Timeout: time.Second}
			for i := 0; i < c.active; i++ {
				a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
				if c.active == 1 {
					a = netip.MustParseAddr("127.0.0.1")
				}
				if _, err := client.Resolve(question(b, c.conf, a)); err != nil {
					b.Fatal(err)
				}
			}
			size := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resp, err := http.Get("http://" + d.MetricsAddr().String() + "/metrics")
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				size = len(body)
			}
			b.ReportMetric(float64(size)/1024, "KiB/scrape")
		})
	}
}

func benchMetricsDaemon(b *testing.B, conf string, max int) *Daemon {
	settle(b, conf)
	d, err := New(Config{Socket: filepath.Join(b.TempDir(), "run", "s.sock"), Confs: []string{conf}, Log: zap.NewNop(),
		Metrics: "127.0.0.1:0", MetricsMaxEntries: max})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx, nil) }()
	b.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(time.Minute); d.confs.get(conf).cur.Load() == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("not loaded")
		}
	}
	return d
}

// BenchmarkPass1M: one pass of the validator (each entry's root and user
// checked, the services' program checked inside each root) over
// 1,000,000 entries that map 2 roots, the relay's roots gathered from it:
// what the daemon does after each reload and every recheckEvery.
func BenchmarkPass1M(b *testing.B) {
	roots := testbed.NewRoots(b)
	two := []string{roots.Root("a", "/bin/true"), roots.Root("b", "/bin/true")}
	var text strings.Builder
	for i := 0; i < 1000000; i++ {
		fmt.Fprintf(&text, "10.%d.%d.%d %s\n", byte(i>>16), byte(i>>8), byte(i), two[i%2])
	}
	path := roots.WriteConf("conf", strings.TrimSuffix(text.String(), "\n"))
	s := newConfSet()
	c, _ := s.add(path)
	if _, err := s.load(c); err != nil {
		b.Fatal(err)
	}
	snap := c.cur.Load()
	programs := []program{{name: "/bin/true"}}
	for b.Loop() {
		r, ok := check(context.Background(), snap, 1, programs, true)
		if !ok || r.invalid != 0 {
			b.Fatalf("pass: %v, %d invalid", ok, r.invalid)
		}
		c.checked.Store(r)
		roots := map[string]bool{}
		for _, e := range r.relay {
			roots[e.Root] = true
		}
		if len(roots) != 2 {
			b.Fatalf("%d roots for the relay, want 2", len(roots))
		}
	}
}
