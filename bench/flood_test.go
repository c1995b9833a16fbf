package bench

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkFlood is issue 23's noisy neighbour: virtuald in accept mode
// (inetd "wait") serves two addresses of one conf file; one client
// measures address 2 alone, then while 64 clients open connections to
// address 1 as fast as they can, then alone again. It reports address 2's
// rate during the flood against its rate alone (goal: >= 0.5), the
// connections that failed, and the flood's own rate.
func BenchmarkFlood(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces, chroot")
	}
	bins := testbed.Binaries(b)
	hello := buildService(b)
	ns, roots, addrs, rootPaths := sites(b, hello)
	conf := writeConfs(b, roots, addrs, rootPaths, len(addrs))
	sl := testbed.NewSyslog(b, b.TempDir())
	ns.Start(sl, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		fmt.Sprintf("7100 stream tcp wait root %s virtuald -accept -socket /nonexistent %s /bin/hello", bins["virtuald"], conf)))
	ns.WaitListening("tcp", 7100)
	const phase, flooders = 4 * time.Second, 64
	victim, target := addrs[1]+":7100", addrs[0]+":7100"

	// measure counts address 2's connections (one client, one at a time)
	// until stop is closed.
	measure := func(stop <-chan struct{}) (ok, failed int) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got, err := ns.Ask(victim); err == nil && strings.HasPrefix(got, "root=site-2") {
				ok++
			} else {
				failed++
			}
		}
	}
	timed := func(d time.Duration, during func(stop <-chan struct{})) (rate float64, failed int) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		if during != nil {
			wg.Add(1)
			go func() { defer wg.Done(); during(stop) }()
		}
		time.AfterFunc(d, func() { close(stop) })
		ok, failed := measure(stop)
		wg.Wait()
		return float64(ok) / d.Seconds(), failed
	}
	var floodOK, floodFailed atomic.Int64
	flood := func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		for range flooders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if got, err := ns.Ask(target); err == nil && strings.HasPrefix(got, "root=") {
						floodOK.Add(1)
					} else {
						floodFailed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| round | address 2 alone (conn/s) | during the flood | ratio | failed during | flood conn/s (failed) | after |\n|---|---:|---:|---:|---:|---:|---:|\n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		alone, _ := timed(phase, nil)
		floodOK.Store(0)
		floodFailed.Store(0)
		during, failed := timed(phase, flood)
		after, _ := timed(phase, nil)
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.2f | %d | %.0f (%d) | %.0f |\n", i+1, alone, during, during/alone, failed,
			float64(floodOK.Load())/phase.Seconds(), floodFailed.Load(), after)
		b.ReportMetric(during/alone, "share")
	}
	b.StopTimer()
	fmt.Print(sb.String())
}
