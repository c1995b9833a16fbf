package bench

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// attachCost measures what a BPF program costs connections, attached and
// detached in alternating rounds of one run: end to end through a real
// inetd (the service started per connection, as in production), and on a
// bare accept loop (nothing but TCP, the worst case for the relative
// cost), both on 192.0.2.1 in a namespace of their own. attach attaches
// the program to ns (on) or detaches it; what names it in the table.
func attachCost(b *testing.B, what string, attach func(ns *testbed.NetNS, on bool)) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces, BPF")
	}
	bins := testbed.Binaries(b)
	ns := testbed.NewNetNS(b)
	ns.AddAddr("192.0.2.1")
	roots := testbed.NewRoots(b)
	ns.Start(nil, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf", "7000 stream tcp nowait root "+bins["whoami"]+" whoami"))
	ns.WaitListening("tcp", 7000)
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", "192.0.2.1:7001"); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	inetdConn := func() {
		if got, err := ns.Ask("192.0.2.1:7000"); err != nil || !strings.HasPrefix(got, "root=") {
			b.Fatalf("%q %v", got, err)
		}
	}
	bareConn := func() {
		c, err := ns.Dial("tcp", "192.0.2.1:7001")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, c)
		c.Close()
	}
	defer attach(ns, false)
	type phase struct{ inetd, bare time.Duration }
	var on, off phase
	const inetdPer, barePer = 40, 400
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, attached := range []bool{i%2 == 0, i%2 != 0} {
			attach(ns, attached)
			p := &off
			if attached {
				p = &on
			}
			t0 := time.Now()
			for range inetdPer {
				inetdConn()
			}
			t1 := time.Now()
			for range barePer {
				bareConn()
			}
			p.inetd += t1.Sub(t0)
			p.bare += time.Since(t1)
		}
	}
	b.StopTimer()
	rate := func(d time.Duration, per int) float64 { return float64(per*b.N) / d.Seconds() }
	fmt.Printf("\n| path | conn/s, %[1]s detached | conn/s, %[1]s attached | cost |\n|---|---:|---:|---:|\n", what)
	for _, r := range []struct {
		name    string
		on, off time.Duration
		per     int
	}{{"through inetd (service per connection)", on.inetd, off.inetd, inetdPer}, {"bare accept loop", on.bare, off.bare, barePer}} {
		fmt.Printf("| %s | %.0f | %.0f | %+.1f%% |\n", r.name, rate(r.off, r.per), rate(r.on, r.per), 100*(1-rate(r.on, r.per)/rate(r.off, r.per)))
	}
	b.ReportMetric(100*(1-rate(on.inetd, inetdPer)/rate(off.inetd, inetdPer)), "inetd-cost-%")
	b.ReportMetric(100*(1-rate(on.bare, barePer)/rate(off.bare, barePer)), "bare-cost-%")
}
