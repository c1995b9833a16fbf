package bench

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkBPFCost measures what the kernel's connection accounting costs,
// with the program attached and detached in alternating rounds in one run:
// end to end through a real inetd (the service started per connection, as
// in production), and on a bare accept loop (nothing but TCP, the worst
// case for the relative cost).
func BenchmarkBPFCost(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces, BPF")
	}
	bins := testbed.Binaries(b)
	testbed.MountBPFFS(b)
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
	pinDir := "/sys/fs/bpf/" + ns.Name
	defer bpf.Remove(pinDir)
	attach := func(on bool) {
		if !on {
			if err := bpf.Remove(pinDir); err != nil {
				b.Fatal(err)
			}
			return
		}
		if err := ns.Do(func() error {
			c, err := bpf.Open(bpf.Options{PinDir: pinDir})
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
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
	type phase struct{ inetd, bare time.Duration }
	var on, off phase
	const inetdPer, barePer = 40, 400
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, attached := range []bool{i%2 == 0, i%2 != 0} {
			attach(attached)
			p := &off
			if attached {
				p = &on
			}
			t0 := time.Now()
			for k := 0; k < inetdPer; k++ {
				inetdConn()
			}
			t1 := time.Now()
			for k := 0; k < barePer; k++ {
				bareConn()
			}
			p.inetd += t1.Sub(t0)
			p.bare += time.Since(t1)
		}
	}
	b.StopTimer()
	rate := func(d time.Duration, per int) float64 { return float64(per*b.N) / d.Seconds() }
	fmt.Printf("\n| path | conn/s, BPF detached | conn/s, BPF attached | cost |\n|---|---:|---:|---:|\n")
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
