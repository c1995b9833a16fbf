package daemon

import (
	"fmt"
	"io"
	"net"
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
	"golang.org/x/sys/unix"
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
	var st unix.Stat_t
	unix.Stat(path, &st)
	frame, _ := ipc.EncodeStrings(append([]string{ipc.Version, ipc.OpResolve, path, addr.String()}, ipc.FileIDOf(&st).Fields()...)...)
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
