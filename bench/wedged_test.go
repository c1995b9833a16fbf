package bench

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// BenchmarkInetdWedged measures what a wedged ipwatchd (SIGSTOP: it
// accepts connections and never answers) costs per-connection virtuald
// under steady traffic, against a daemon that is gone: each iteration
// makes 600 connections, 8 at a time, to each, in alternating order,
// through a real inetd (the measurement). Then it lets the daemon
// run again and measures how long until virtuald asks it again.
func BenchmarkInetdWedged(b *testing.B) {
	testbed.RequirePrivileges(b)
	bins := testbed.Binaries(b)
	hello := buildService(b)
	ns, roots, addrs, rootPaths := sites(b, hello)
	dir := b.TempDir()
	sl := testbed.NewSyslog(b, dir)
	conf := writeConfs(b, roots, addrs, rootPaths, 8)
	sock := filepath.Join(dir, "run", "ipwatchd.sock")
	daemon := ns.Start(sl, bins["ipwatchd"], "-socket", sock, "-conf", conf, "-bpf", "off", "-log-level", "warn")
	for deadline := time.Now().Add(10 * time.Second); !answers(sock); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("ipwatchd did not answer")
		}
	}
	daemon.Process.Signal(unix.SIGSTOP)
	defer daemon.Process.Signal(unix.SIGCONT)
	ns.Start(sl, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		fmt.Sprintf("7000 stream tcp nowait root %s virtuald -socket %s %s /bin/hello", bins["virtuald"], sock+".gone", conf),
		fmt.Sprintf("7001 stream tcp nowait root %s virtuald -socket %s %s /bin/hello", bins["virtuald"], sock, conf)))
	ns.WaitListening("tcp", 7000)
	ns.WaitListening("tcp", 7001)

	const perRound, parallel = 600, 8
	round := func(port string) time.Duration {
		start := time.Now()
		next := make(chan int, perRound)
		for k := 0; k < perRound; k++ {
			next <- k
		}
		close(next)
		var wg sync.WaitGroup
		for p := 0; p < parallel; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					if got, err := ns.Ask(addrs[k%len(addrs)] + ":" + port); err != nil || !strings.HasPrefix(got, "root=") {
						b.Errorf("port %s: %q %v", port, got, err)
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	var gone, wedged time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			gone += round("7000")
			wedged += round("7001")
		} else {
			wedged += round("7001")
			gone += round("7000")
		}
	}
	b.StopTimer()
	n := float64(b.N * perRound)
	goneRate, wedgedRate := n/gone.Seconds(), n/wedged.Seconds()
	waited := sl.Count(":7001 ", "daemon=slow ")
	b.ReportMetric(goneRate, "gone-conn/s")
	b.ReportMetric(wedgedRate, "wedged-conn/s")
	b.ReportMetric(wedgedRate/goneRate, "wedged/gone")
	b.ReportMetric(float64(waited), "waits")

	daemon.Process.Signal(unix.SIGCONT)
	resumed := time.Now()
	before := sl.Count(":7001 ", "via=daemon")
	for sl.Count(":7001 ", "via=daemon") == before {
		if time.Since(resumed) > 10*time.Second {
			b.Fatal("the daemon was not asked again within 10 s of resuming")
		}
		ns.Ask(addrs[0] + ":7001")
	}
	b.ReportMetric(float64(time.Since(resumed).Milliseconds()), "recovery-ms")
}
