package bench

import (
	"net/netip"
	"testing"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkShedCost measures what kernel shedding (bpf/shed.c, attached
// at sk_lookup) costs connections to an address without a limit while it
// limits 1,000 other addresses on the same ports, attached and detached
// in alternating rounds of one run (attachCost). BenchmarkShedRun in bpf/
// gives the program's own time per connection.
func BenchmarkShedCost(b *testing.B) {
	keys := map[bpf.Key]uint32{}
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		keys[bpf.Key{Addr: a, Port: 7000}] = uint32(i % 10)
		keys[bpf.Key{Addr: a, Port: 7001}] = uint32(i % 10)
	}
	rules := map[uint32]bpf.ShedRule{}
	for i := range uint32(10) {
		rules[i] = bpf.ShedRule{Interval: 50 * time.Millisecond, Burst: 20}
	}
	var s *bpf.Shedder
	attachCost(b, "shedding", func(ns *testbed.NetNS, on bool) {
		if s != nil {
			s.Close()
			s = nil
		}
		if !on {
			return
		}
		if err := ns.Do(func() (err error) {
			if s, err = bpf.OpenShedder(); err != nil {
				return err
			}
			return s.Apply(keys, rules)
		}); err != nil {
			b.Fatal(err)
		}
	})
}
