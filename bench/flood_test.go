package bench

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// BenchmarkFlood is issue 23's noisy neighbour: virtuald in accept mode
// (inetd "wait") serves two addresses of one conf file; one client
// measures address 2 alone, then while 64 clients open connections to
// address 1 as fast as they can, then alone again. It reports address 2's
// rate during the flood against its rate alone (share), the connections
// that failed, and the flood's own rate:
//
//   - no-limits: the entries have no limits (goal: share >= 0.5);
//   - limits: every entry has rate=50/s max=16 (goal: share >= 0.8; the
//     client of address 2 is then held to 50 a second by its own rate=,
//     and the connections its entry refuses are counted apart);
//   - refusal-cost: what a connection refused for a limit costs accept
//     mode (virtuald and its services, in a cpuacct cgroup) against one
//     served, 2 clients at a time (the machine's cores).
func BenchmarkFlood(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces, chroot")
	}
	b.Run("no-limits", func(b *testing.B) { benchFlood(b, "") })
	b.Run("limits", func(b *testing.B) { benchFlood(b, "rate=50/s max=16") })
	b.Run("refusal-cost", benchRefusalCost)
}

// floodSite is virtuald -accept under inetd on port 7100 for the eight
// addresses of sites, address i with options opts(i), and inetd in a
// cpuacct cgroup.
type floodSite struct {
	ns    *testbed.NetNS
	addrs []string
	group cpuGroup
	// sockets are TCP sockets made in the namespace by one thread that
	// stays there (a socket is its namespace's for good), so that a
	// client connection costs this machine what a remote client's would
	// cost it, not two setns and two opens as ns.Ask does.
	sockets <-chan int
	quiet   string // bench/quiet, the measuring client
}

func newFloodSite(b *testing.B, opts func(i int) string) *floodSite {
	group := newCPUGroup(b)
	bins := testbed.Binaries(b)
	quiet, err := testbed.Build(b.TempDir(), "./bench/quiet")
	if err != nil {
		b.Fatal(err)
	}
	hello := buildService(b)
	ns, roots, addrs, rootPaths := sites(b, hello)
	var lines []string
	for i, a := range addrs {
		lines = append(lines, strings.TrimSpace(a+" "+rootPaths[i]+" "+opts(i)))
	}
	conf := roots.WriteConf("conf.flood", lines...)
	sl := testbed.NewSyslog(b, b.TempDir())
	inetd := ns.Start(sl, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		fmt.Sprintf("7100 stream tcp wait root %s virtuald -accept -socket /nonexistent %s /bin/hello", bins["virtuald"], conf)))
	group.add(b, inetd.Process.Pid)
	ns.WaitListening("tcp", 7100)
	sockets := make(chan int, 64)
	done := make(chan struct{})
	b.Cleanup(func() { close(done) })
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err != nil {
			close(sockets)
			return
		}
		for {
			s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				close(sockets)
				return
			}
			select {
			case sockets <- s:
			case <-done:
				unix.Close(s)
				return
			}
		}
	}()
	return &floodSite{ns: ns, addrs: addrs, group: group, sockets: sockets, quiet: quiet["quiet"]}
}

// outcome is how one connection went.
type outcome int

const (
	served  outcome = iota // the service's line came
	refused                // closed without a byte
	failed                 // anything else: no connection, an error
)

// connect makes one connection to addr (port 7100) on a socket of the
// factory and reads until the server closes it.
func (f *floodSite) connect(addr string) outcome {
	s, ok := <-f.sockets
	if !ok {
		return failed
	}
	defer unix.Close(s)
	if unix.Connect(s, &unix.SockaddrInet4{Port: 7100, Addr: netip.MustParseAddr(addr).As4()}) != nil {
		return failed
	}
	buf := make([]byte, 256)
	got := 0
	for {
		n, err := unix.Read(s, buf[got:])
		if n == 0 && err == nil {
			break
		}
		if n < 0 || err != nil {
			return failed
		}
		got += n
	}
	switch {
	case got == 0:
		return refused
	case strings.HasPrefix(string(buf[:got]), "root="):
		return served
	}
	return failed
}

// counts are the outcomes of a phase's connections.
type counts struct{ served, refused, failed atomic.Int64 }

func (c *counts) add(o outcome) {
	switch o {
	case served:
		c.served.Add(1)
	case refused:
		c.refused.Add(1)
	default:
		c.failed.Add(1)
	}
}

// until calls f again and again until stop is closed.
func until(stop <-chan struct{}, f func()) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		f()
	}
}

// clients runs n clients, each connecting to addr one connection after
// the other, until stop is closed.
func (f *floodSite) clients(n int, addr string, c *counts, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			until(stop, func() { c.add(f.connect(addr)) })
		}()
	}
	wg.Wait()
}

// phase runs the measuring client on address 2 for d, with during (the
// flood) beside it when not nil, and returns the measuring client's
// counts.
func (f *floodSite) phase(d time.Duration, during func(stop <-chan struct{})) *counts {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if during != nil {
		wg.Add(1)
		go func() { defer wg.Done(); during(stop) }()
	}
	time.AfterFunc(d, func() { close(stop) })
	// The measuring client is a process of its own (bench/quiet), as a
	// client of another address is: among the flood's goroutines, the Go
	// scheduler would queue it behind them at every turn.
	out, err := f.ns.Exec(f.quiet, f.addrs[1]+":7100", d.String(), "root=site-2").Output()
	wg.Wait()
	var c counts
	var s, r, x int64
	if _, err2 := fmt.Sscan(string(out), &s, &r, &x); err != nil || err2 != nil {
		c.failed.Store(1 << 30) // shows in the table
		return &c
	}
	c.served.Store(s)
	c.refused.Store(r)
	c.failed.Store(x)
	return &c
}

func benchFlood(b *testing.B, limits string) {
	f := newFloodSite(b, func(int) string { return limits })
	const phase, flooders = 4 * time.Second, 64
	rate := func(c *counts) float64 { return float64(c.served.Load()) / phase.Seconds() }
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nlimits %q\n| round | address 2 alone (conn/s) | during the flood | share | failed during | refused by its own limits (alone, during) | flood served/s (refused, failed) | after |\n|---|---:|---:|---:|---:|---:|---:|---:|\n", limits)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		alone := f.phase(phase, nil)
		var flood counts
		during := f.phase(phase, func(stop <-chan struct{}) { f.clients(flooders, f.addrs[0], &flood, stop) })
		after := f.phase(phase, nil)
		share := rate(during) / rate(alone)
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.2f | %d | %d, %d | %.0f (%d, %d) | %.0f |\n", i+1, rate(alone), rate(during), share,
			during.failed.Load(), alone.refused.Load(), during.refused.Load(),
			rate(&flood), flood.refused.Load(), flood.failed.Load(), rate(after))
		b.ReportMetric(share, "share")
	}
	b.StopTimer()
	fmt.Print(sb.String())
}

// benchRefusalCost measures accept mode's CPU for a connection refused
// for a limit (address 1, rate=1/m: every connection after the first is
// refused) against one served (address 2, no limit): 2 clients at a time
// for 3 s each way, CPU from the cgroup of inetd, virtuald and the
// services (the clients are not in it).
func benchRefusalCost(b *testing.B) {
	f := newFloodSite(b, func(i int) string {
		if i == 0 {
			return "rate=1/m"
		}
		return ""
	})
	const d = 3 * time.Second
	run := func(addr string) (perSecond, cpuMicros float64, c *counts) {
		c = &counts{}
		stop := make(chan struct{})
		time.AfterFunc(d, func() { close(stop) })
		before := f.group.usage()
		f.clients(2, addr, c, stop)
		n := c.served.Load() + c.refused.Load()
		return float64(n) / d.Seconds(), float64(f.group.usage()-before) / 1e3 / float64(max(n, 1)), c
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| round | served conn/s | CPU µs/served | refused conn/s | CPU µs/refused | cost refused / served | failed |\n|---|---:|---:|---:|---:|---:|---:|\n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sRate, sCPU, sc := run(f.addrs[1])
		rRate, rCPU, rc := run(f.addrs[0])
		if sc.refused.Load() > 0 || rc.served.Load() > 1 {
			b.Fatalf("served %d refused %d on the unlimited address; served %d on the limited one", sc.served.Load(), sc.refused.Load(), rc.served.Load())
		}
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.0f | %.1f | %.3f | %d |\n", i+1, sRate, sCPU, rRate, rCPU, rCPU/sCPU, sc.failed.Load()+rc.failed.Load())
		b.ReportMetric(rCPU/sCPU, "cost-ratio")
	}
	b.StopTimer()
	fmt.Print(sb.String())
}
