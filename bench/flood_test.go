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
	victim := addrs[1] + ":7100"

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
	// The flooders take sockets made in the namespace by one thread that
	// stays there (a socket is its namespace's for good), so that a
	// flood connection costs this machine what a remote client's would
	// cost it, not two setns and two opens as ns.Ask does.
	sockets := make(chan int, flooders)
	factoryDone := make(chan struct{})
	defer close(factoryDone)
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
			case <-factoryDone:
				unix.Close(s)
				return
			}
		}
	}()
	targetAddr := &unix.SockaddrInet4{Port: 7100, Addr: netip.MustParseAddr(addrs[0]).As4()}
	floodOnce := func() bool {
		s, ok := <-sockets
		if !ok {
			return false
		}
		defer unix.Close(s)
		if unix.Connect(s, targetAddr) != nil {
			return false
		}
		buf := make([]byte, 256)
		got := 0
		for {
			n, err := unix.Read(s, buf[got:])
			if n <= 0 || err != nil {
				break
			}
			got += n
		}
		return strings.HasPrefix(string(buf[:got]), "root=")
	}
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
					if floodOnce() {
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
