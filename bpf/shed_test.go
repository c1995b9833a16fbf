package bpf

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/virtuald/virtuald/internal/testbed"
)

// openShedderIn attaches a Shedder to ns, detached when the test ends.
func openShedderIn(t *testing.T, ns *testbed.NetNS) *Shedder {
	t.Helper()
	var s *Shedder
	if err := ns.Do(func() error {
		var err error
		s, err = OpenShedder()
		return err
	}); err != nil {
		t.Fatalf("OpenShedder in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dialCount makes n connections to addr from inside ns, one after the
// other, and returns how many were accepted and how many refused; any
// other error fails the test.
func dialCount(t *testing.T, ns *testbed.NetNS, addr string, n int) (ok, refused int) {
	t.Helper()
	for range n {
		c, err := ns.Dial("tcp", addr)
		switch {
		case err == nil:
			ok++
			c.Close()
		case errors.Is(err, syscall.ECONNREFUSED):
			refused++
		default:
			t.Fatalf("dial %s: %v", addr, err)
		}
	}
	return ok, refused
}

// A limited address and port gets its burst, then is refused with a RST
// (no listener sees the SYN); another port of the same address, other
// addresses and IPv6 are not touched; changing the rule starts the bucket
// full again; removing the key lifts the limit; Close detaches.
func TestShed(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := newNS(t)
	ns.AddAddr("192.0.2.2")
	var lns []net.Listener
	for _, a := range []string{"0.0.0.0:7400", "0.0.0.0:7401", "[::]:7402"} {
		if err := ns.Do(func() error {
			l, err := net.Listen("tcp", a)
			lns = append(lns, l)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	// Accepted connections are closed; the SYN's fate is what counts.
	for _, l := range lns {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}

	s := openShedderIn(t, ns)
	limited := Key{Addr: netip.MustParseAddr("192.0.2.1"), Port: 7400}
	limited6 := Key{Addr: netip.MustParseAddr("2001:db8::1"), Port: 7402}
	slow := ShedRule{Interval: time.Hour, Burst: 3} // no refill during the test
	if err := s.Apply(map[Key]uint32{limited: 5, limited6: 6}, map[uint32]ShedRule{5: slow, 6: {Interval: time.Hour, Burst: 1}}); err != nil {
		t.Fatal(err)
	}
	if ok, refused := dialCount(t, ns, "192.0.2.1:7400", 10); ok != 3 || refused != 7 {
		t.Errorf("limited 192.0.2.1:7400, burst 3: %d accepted, %d refused; want 3 and 7", ok, refused)
	}
	for _, a := range []string{"192.0.2.1:7401", "192.0.2.2:7400", "[2001:db8::1]:7400"} {
		if ok, _ := dialCount(t, ns, a, 10); ok != 10 {
			t.Errorf("%s has no limit: %d of 10 accepted", a, ok)
		}
	}
	if ok, refused := dialCount(t, ns, "[2001:db8::1]:7402", 4); ok != 1 || refused != 3 {
		t.Errorf("limited [2001:db8::1]:7402, burst 1: %d accepted, %d refused; want 1 and 3", ok, refused)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st[5] != (ShedStats{Passed: 3, Dropped: 7}) || st[6] != (ShedStats{Passed: 1, Dropped: 3}) {
		t.Errorf("stats %+v; want 5: 3 passed 7 dropped, 6: 1 passed 3 dropped", st)
	}

	// A new rule: a full bucket, the counts kept.
	if err := s.Apply(map[Key]uint32{limited: 5}, map[uint32]ShedRule{5: {Interval: time.Hour, Burst: 2}}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := dialCount(t, ns, "192.0.2.1:7400", 5); ok != 2 {
		t.Errorf("after the rule changed to burst 2: %d of 5 accepted", ok)
	}
	if ok, _ := dialCount(t, ns, "[2001:db8::1]:7402", 3); ok != 3 {
		t.Errorf("key removed: %d of 3 accepted", ok)
	}
	st, _ = s.Stats()
	if st[5] != (ShedStats{Passed: 5, Dropped: 10}) || len(st) != 1 {
		t.Errorf("stats %+v; want only 5: 5 passed 10 dropped", st)
	}

	// A fast rate refills.
	if err := s.Apply(map[Key]uint32{limited: 5}, map[uint32]ShedRule{5: {Interval: time.Millisecond, Burst: 1}}); err != nil {
		t.Fatal(err)
	}
	ok := 0
	for range 5 {
		time.Sleep(2 * time.Millisecond)
		n, _ := dialCount(t, ns, "192.0.2.1:7400", 1)
		ok += n
	}
	if ok != 5 {
		t.Errorf("one a millisecond, 2 ms apart: %d of 5 accepted", ok)
	}

	if err := s.Apply(map[Key]uint32{limited: 5}, map[uint32]ShedRule{5: slow}); err != nil {
		t.Fatal(err)
	}
	dialCount(t, ns, "192.0.2.1:7400", 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := dialCount(t, ns, "192.0.2.1:7400", 5); ok != 5 {
		t.Errorf("after Close: %d of 5 accepted", ok)
	}
}

// Apply refuses a key without a rule and a rule it cannot hold, and
// applies the rest.
func TestShedApplyErrors(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := newNS(t)
	s := openShedderIn(t, ns)
	a := Key{Addr: netip.MustParseAddr("192.0.2.1"), Port: 1}
	b := Key{Addr: netip.MustParseAddr("192.0.2.1"), Port: 2}
	err := s.Apply(map[Key]uint32{a: 1, b: 2}, map[uint32]ShedRule{1: {Interval: time.Second, Burst: 1}, ShedBuckets: {Interval: time.Second, Burst: 1}})
	if err == nil {
		t.Fatal("no error for a key without a rule and a bucket out of range")
	}
	if got := s.Keys(); len(got) != 1 || got[a] != 1 {
		t.Errorf("keys %v; want only %v", got, a)
	}
}

// skLookupCtx is struct bpf_sk_lookup of include/uapi/linux/bpf.h, as
// BPF_PROG_TEST_RUN takes it.
type skLookupCtx struct {
	Cookie         uint64
	Family         uint32
	Protocol       uint32
	RemoteIP4      uint32
	RemoteIP6      [4]uint32
	RemotePort     uint16 // network order
	_              uint16
	LocalIP4       [4]byte
	LocalIP6       [4]uint32
	LocalPort      uint32
	IngressIfindex uint32
	_              uint32
}

// BenchmarkShedRun is the program's own cost per new connection
// (BPF_PROG_TEST_RUN, b.N runs in one call): to an address without a
// limit (a lookup that misses) with 0 and 10,000 limited addresses in the
// map, and to a limited one (the lookup, the bucket's lock and its
// arithmetic), let through and shed.
func BenchmarkShedRun(b *testing.B) {
	testbed.RequirePrivileges(b)
	ns := testbed.NewNetNS(b)
	var s *Shedder
	if err := ns.Do(func() (err error) { s, err = OpenShedder(); return err }); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	limited := Key{Addr: netip.MustParseAddr("192.0.2.1"), Port: 21}
	ctxFor := func(k Key) *skLookupCtx {
		return &skLookupCtx{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, LocalIP4: k.Addr.As4(), LocalPort: uint32(k.Port), RemotePort: 0x3930}
	}
	run := func(b *testing.B, k Key, want uint32) {
		b.ResetTimer()
		got, err := s.objs.Shed.Run(&ebpf.RunOptions{Context: ctxFor(k), Repeat: uint32(b.N)})
		if err != nil {
			b.Fatal(err)
		}
		if got != want {
			b.Fatalf("verdict %d, want %d", got, want)
		}
	}
	many := func(n int) map[Key]uint32 {
		keys := map[Key]uint32{}
		for i := range n {
			keys[Key{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 21}] = 0
		}
		return keys
	}
	fast := ShedRule{Interval: time.Nanosecond, Burst: 1 << 30}
	slow := ShedRule{Interval: time.Hour, Burst: 1}
	other := Key{Addr: netip.MustParseAddr("192.0.2.2"), Port: 21}
	for _, bc := range []struct {
		name string
		keys map[Key]uint32
		rule ShedRule
		to   Key
		want uint32 // SK_PASS 1, SK_DROP 0
	}{
		{"no-limit/keys=0", nil, fast, other, 1},
		{"no-limit/keys=10000", many(10000), fast, other, 1},
		{"limited/passed", map[Key]uint32{limited: 0}, fast, limited, 1},
		{"limited/shed", map[Key]uint32{limited: 0}, slow, limited, 0},
	} {
		if err := s.Apply(bc.keys, map[uint32]ShedRule{0: bc.rule}); err != nil {
			b.Fatal(err)
		}
		if bc.want == 0 { // the burst of one goes first
			if _, err := s.objs.Shed.Run(&ebpf.RunOptions{Context: ctxFor(limited), Repeat: 1}); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(bc.name, func(b *testing.B) { run(b, bc.to, bc.want) })
	}
}
