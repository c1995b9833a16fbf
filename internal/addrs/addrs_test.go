package addrs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtuald/virtuald/internal/testbed"
)

// wait bounds every wait for the tracker; none of them is a measure.
const wait = 10 * time.Second

// start runs a tracker on ns until the test ends; tune, when given, runs
// before Run (to shrink the buffer or slow the consumer).
func start(tb testing.TB, ns *testbed.NetNS, tune func(*Tracker)) *Tracker {
	tb.Helper()
	tr, err := New(Options{
		NetNS:   ns.Path,
		OnError: func(err error) { tb.Logf("tracker: %v", err) },
	})
	if err != nil {
		tb.Fatal(err)
	}
	if tune != nil {
		tune(tr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	var runErr error
	go func() { runErr = tr.Run(ctx); close(ended) }()
	tb.Cleanup(func() {
		cancel()
		<-ended
		if runErr != nil {
			tb.Errorf("Run: %v", runErr)
		}
	})
	select {
	case <-tr.Ready():
	case <-ended:
		tb.Fatalf("Run ended before the first dump: %v", runErr)
	case <-time.After(wait):
		tb.Fatalf("not ready after %v", wait)
	}
	return tr
}

// waitFor waits until cond holds for the tracker's snapshot, waking on
// Changed only.
func waitFor(tb testing.TB, tr *Tracker, what string, cond func(*Snapshot) bool) *Snapshot {
	tb.Helper()
	deadline := time.After(wait)
	for {
		ch := tr.Changed()
		s := tr.Snapshot()
		if cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline:
			tb.Fatalf("after %v, still waiting for %s; the tracker has:\n%s", wait, what, strings.Join(lines(s.All()), "\n"))
		}
	}
}

// find returns addr as held by the link named ifname.
func find(s *Snapshot, addr, ifname string) (Address, bool) {
	for _, a := range s.Lookup(netip.MustParseAddr(addr)) {
		if a.Interface == ifname {
			return a, true
		}
	}
	return Address{}, false
}

// ipFlags maps the flag names of `ip -j addr` to IFA_F_* bits; iproute2
// names the absence of IFA_F_PERMANENT "dynamic".
var ipFlags = map[string]uint32{
	"secondary": unix.IFA_F_SECONDARY, "temporary": unix.IFA_F_TEMPORARY,
	"nodad": unix.IFA_F_NODAD, "optimistic": unix.IFA_F_OPTIMISTIC,
	"dadfailed": unix.IFA_F_DADFAILED, "home": unix.IFA_F_HOMEADDRESS,
	"deprecated": unix.IFA_F_DEPRECATED, "tentative": unix.IFA_F_TENTATIVE,
	"mngtmpaddr": unix.IFA_F_MANAGETEMPADDR, "noprefixroute": unix.IFA_F_NOPREFIXROUTE,
	"autojoin": unix.IFA_F_MCAUTOJOIN, "stable-privacy": unix.IFA_F_STABLE_PRIVACY,
}

// kernel returns every address as `ip -j addr` shows it.
func kernel(tb testing.TB, ns *testbed.NetNS) []Address {
	tb.Helper()
	out, err := ns.Exec("ip", "-j", "addr").Output()
	if err != nil {
		tb.Fatalf("ip -j addr: %v", err)
	}
	var links []struct {
		Ifindex   int              `json:"ifindex"`
		Ifname    string           `json:"ifname"`
		Flags     []string         `json:"flags"`
		Operstate string           `json:"operstate"`
		AddrInfo  []map[string]any `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		tb.Fatalf("ip -j addr: %v", err)
	}
	var all []Address
	for _, l := range links {
		// ip hides IFF_RUNNING; the kernel sets it when up and operstate is UP or UNKNOWN.
		up := slices.Contains(l.Flags, "UP") && (l.Operstate == "UP" || l.Operstate == "UNKNOWN")
		for _, ai := range l.AddrInfo {
			a := Address{
				Addr:      netip.MustParseAddr(ai["local"].(string)),
				PrefixLen: int(ai["prefixlen"].(float64)),
				Ifindex:   l.Ifindex,
				Interface: l.Ifname,
				LinkUp:    up,
			}
			a.Label, _ = ai["label"].(string)
			for name, bit := range ipFlags {
				if ai[name] == true {
					a.Flags |= bit
				}
			}
			if ai["dynamic"] != true {
				a.Flags |= unix.IFA_F_PERMANENT
			}
			all = append(all, a)
		}
	}
	return all
}

// lines renders addresses for comparison, with the flags ip can show.
func lines(as []Address) []string {
	var mask uint32 = unix.IFA_F_PERMANENT
	for _, bit := range ipFlags {
		mask |= bit
	}
	var ls []string
	for _, a := range as {
		ls = append(ls, fmt.Sprintf("%s/%d if=%d %s label=%q flags=%#x up=%v live=%v",
			a.Addr, a.PrefixLen, a.Ifindex, a.Interface, a.Label, a.Flags&mask, a.LinkUp, a.Live()))
	}
	slices.Sort(ls)
	return ls
}

// matchKernel waits until the tracker holds exactly what `ip -j addr`
// shows, reading the kernel again whenever the tracker changes.
func matchKernel(tb testing.TB, tr *Tracker, ns *testbed.NetNS, timeout time.Duration) {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		ch := tr.Changed()
		want := lines(kernel(tb, ns))
		got := lines(tr.Snapshot().All())
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			var d []string
			for _, l := range got {
				if !slices.Contains(want, l) {
					d = append(d, "tracker only: "+l)
				}
			}
			for _, l := range want {
				if !slices.Contains(got, l) {
					d = append(d, "kernel only:  "+l)
				}
			}
			tb.Fatalf("after %v the tracker (%d addresses) differs from ip -j addr (%d):\n%s",
				timeout, len(got), len(want), strings.Join(d[:min(len(d), 40)], "\n"))
		}
	}
}

// ipBatch runs the commands with `ip -batch` in the namespace.
func ipBatch(tb testing.TB, ns *testbed.NetNS, cmds string) {
	tb.Helper()
	f := filepath.Join(tb.TempDir(), "batch")
	if err := os.WriteFile(f, []byte(cmds), 0o644); err != nil {
		tb.Fatal(err)
	}
	if out, err := ns.Exec("ip", "-batch", f).CombinedOutput(); err != nil {
		tb.Fatalf("ip -batch: %v: %s", err, out)
	}
}

func TestAddRemove(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := testbed.NewNetNS(t)
	ns.AddDummy("dummy0", true)
	tr := start(t, ns, nil)
	matchKernel(t, tr, ns, wait)

	cases := []struct {
		add          string // ip addr add ARGS; its first three words delete it
		addr, ifname string
		plen         int
		label        string
	}{
		{"192.0.2.5/24 dev dummy0 label dummy0:7", "192.0.2.5", "dummy0", 24, "dummy0:7"},
		{"192.0.2.6/24 dev dummy0", "192.0.2.6", "dummy0", 24, "dummy0"},
		{"2001:db8::5/64 dev dummy0 nodad", "2001:db8::5", "dummy0", 64, ""},
		// With DAD: on a NOARP link the kernel ends DAD at once.
		{"2001:db8::6/64 dev dummy0", "2001:db8::6", "dummy0", 64, ""},
		{"198.51.100.9/32 dev lo", "198.51.100.9", "lo", 32, "lo"},
		{"198.51.100.10/32 dev lo label lo:web", "198.51.100.10", "lo", 32, "lo:web"},
		{"2001:db8:1::9/128 dev lo nodad", "2001:db8:1::9", "lo", 128, ""},
		// One address on two links.
		{"203.0.113.1/32 dev lo", "203.0.113.1", "lo", 32, "lo"},
		{"203.0.113.1/32 dev dummy0", "203.0.113.1", "dummy0", 32, "dummy0"},
	}
	for _, c := range cases {
		ns.IP(append([]string{"addr", "add"}, strings.Fields(c.add)...)...)
		s := waitFor(t, tr, c.add, func(s *Snapshot) bool {
			a, ok := find(s, c.addr, c.ifname)
			return ok && a.Live()
		})
		a, _ := find(s, c.addr, c.ifname)
		if a.PrefixLen != c.plen || a.Label != c.label || !a.LinkUp || a.Addr.Zone() != "" {
			t.Errorf("%s: tracker has %+v, want prefix %d, label %q, link up", c.add, a, c.plen, c.label)
		}
	}
	matchKernel(t, tr, ns, wait)

	s := tr.Snapshot()
	if got := s.Lookup(netip.MustParseAddr("203.0.113.1")); len(got) != 2 || got[0].Interface != "lo" || got[1].Interface != "dummy0" {
		t.Errorf("Lookup(203.0.113.1) = %+v, want lo then dummy0", got)
	}
	if got := s.Lookup(netip.MustParseAddr("::ffff:192.0.2.5")); len(got) != 1 || got[0].Addr != netip.MustParseAddr("192.0.2.5") {
		t.Errorf("Lookup(::ffff:192.0.2.5) = %+v, want the IPv4 address", got)
	}
	if got := s.Lookup(netip.MustParseAddr("192.0.2.99")); got != nil {
		t.Errorf("Lookup(192.0.2.99) = %+v, want nil", got)
	}

	// Backwards: deleting a primary IPv4 address takes its secondaries.
	for _, c := range slices.Backward(cases) {
		ns.IP(append([]string{"addr", "del"}, strings.Fields(c.add)[:3]...)...)
		waitFor(t, tr, "deleted "+c.add, func(s *Snapshot) bool {
			_, ok := find(s, c.addr, c.ifname)
			return !ok
		})
	}
	matchKernel(t, tr, ns, wait)
}

func TestLinkChanges(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := testbed.NewNetNS(t)
	ns.AddDummy("dummy0", true)
	ns.IP("addr", "add", "192.0.2.5/24", "dev", "dummy0", "label", "dummy0:7")
	ns.IP("addr", "add", "192.0.2.6/24", "dev", "dummy0")
	ns.IP("addr", "add", "2001:db8::5/64", "dev", "dummy0", "nodad")
	tr := start(t, ns, nil)
	matchKernel(t, tr, ns, wait)
	a, _ := find(tr.Snapshot(), "192.0.2.5", "dummy0")
	ifindex := a.Ifindex

	linkUp := func(want bool) func(*Snapshot) bool {
		return func(s *Snapshot) bool {
			a, ok := find(s, "192.0.2.5", "dummy0")
			return ok && a.LinkUp == want
		}
	}
	ns.IP("link", "set", "dummy0", "down")
	waitFor(t, tr, "dummy0 down", linkUp(false))
	matchKernel(t, tr, ns, wait) // IPv4 stays; IPv6 goes unless keep_addr_on_down
	ns.IP("link", "set", "dummy0", "up")
	waitFor(t, tr, "dummy0 up", linkUp(true))
	matchKernel(t, tr, ns, wait)

	// The kernel renames the IPv4 labels with the link, in its own way
	// (dummy0:7 becomes web0, dummy0 becomes web0:2); they must match it.
	ns.IP("link", "set", "dummy0", "down")
	ns.IP("link", "set", "dummy0", "name", "web0")
	ns.IP("link", "set", "web0", "up")
	waitFor(t, tr, "dummy0 renamed web0, up", func(s *Snapshot) bool {
		a, ok := find(s, "192.0.2.5", "web0")
		return ok && a.LinkUp
	})
	matchKernel(t, tr, ns, wait)
	for _, a := range tr.Snapshot().All() {
		if a.Ifindex == ifindex && (a.Interface != "web0" || strings.HasPrefix(a.Label, "dummy0")) {
			t.Errorf("after the rename: %+v", a)
		}
	}

	ns.IP("link", "del", "web0")
	waitFor(t, tr, "web0 deleted", func(s *Snapshot) bool {
		return !slices.ContainsFunc(s.All(), func(a Address) bool { return a.Ifindex == ifindex })
	})
	matchKernel(t, tr, ns, wait)
}

// TestTentative uses a veth pair, because DAD never runs on a dummy (it is
// NOARP): with its peer down, va has no carrier and keeps a new IPv6
// address tentative; with the peer up DAD runs and ends; and the same
// address added on the peer fails DAD, since va answers its probe.
func TestTentative(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := testbed.NewNetNS(t)
	ns.IP("link", "add", "va", "type", "veth", "peer", "name", "vb")
	ns.IP("link", "set", "va", "up")
	tr := start(t, ns, nil)

	ns.IP("addr", "add", "2001:db8:7::1/64", "dev", "va")
	s := waitFor(t, tr, "2001:db8:7::1 on va", func(s *Snapshot) bool {
		_, ok := find(s, "2001:db8:7::1", "va")
		return ok
	})
	if a, _ := find(s, "2001:db8:7::1", "va"); a.Live() || a.Flags&unix.IFA_F_TENTATIVE == 0 || a.LinkUp {
		t.Errorf("without carrier: %+v, want tentative, not live, link not up", a)
	}
	matchKernel(t, tr, ns, wait) // the kernel agrees that it is tentative

	ns.IP("link", "set", "vb", "up")
	waitFor(t, tr, "2001:db8:7::1 live on va", func(s *Snapshot) bool {
		a, ok := find(s, "2001:db8:7::1", "va")
		return ok && a.Live() && a.LinkUp
	})
	matchKernel(t, tr, ns, wait)

	ns.IP("addr", "add", "2001:db8:7::1/64", "dev", "vb")
	s = waitFor(t, tr, "2001:db8:7::1 dadfailed on vb", func(s *Snapshot) bool {
		a, ok := find(s, "2001:db8:7::1", "vb")
		return ok && a.Flags&unix.IFA_F_DADFAILED != 0
	})
	va, _ := find(s, "2001:db8:7::1", "va")
	vb, _ := find(s, "2001:db8:7::1", "vb")
	if len(s.Lookup(va.Addr)) != 2 || !va.Live() || vb.Live() {
		t.Errorf("Lookup(2001:db8:7::1) = %+v, want va live, vb not", s.Lookup(va.Addr))
	}
	matchKernel(t, tr, ns, wait)
}

// storm is 10,000 `ip -batch` commands adding and deleting addresses.
func storm() string {
	var b strings.Builder
	v4 := func(i int) string { return fmt.Sprintf("10.20.%d.%d", i/250, i%250+1) }
	v6 := func(i int) string { return fmt.Sprintf("2001:db8:20::%x", i+1) }
	lo := func(i int) string { return fmt.Sprintf("10.30.%d.%d", i/250, i%250+1) }
	for i := range 3000 {
		fmt.Fprintf(&b, "addr add %s/32 dev dummy0 label dummy0:%d\n", v4(i), i%100)
	}
	for i := range 3000 {
		fmt.Fprintf(&b, "addr add %s/64 dev dummy0 nodad\n", v6(i))
	}
	for i := range 1000 {
		fmt.Fprintf(&b, "addr add %s/32 dev lo\n", lo(i))
	}
	// A primary and 198 secondaries, which go with it at the end: one
	// command, many events.
	for i := range 199 {
		fmt.Fprintf(&b, "addr add 10.40.0.%d/16 dev dummy0 label dummy0:c\n", i+1)
	}
	for i := 0; i < 3000; i += 3 {
		fmt.Fprintf(&b, "addr del %s/32 dev dummy0\n", v4(i))
		fmt.Fprintf(&b, "addr del %s/64 dev dummy0\n", v6(i))
	}
	for i := 0; i < 1000; i += 2 {
		fmt.Fprintf(&b, "addr del %s/32 dev lo\n", lo(i))
	}
	for i := 0; i < 900; i += 3 { // back, with another label
		fmt.Fprintf(&b, "addr add %s/32 dev dummy0 label dummy0:r\n", v4(i))
	}
	b.WriteString("addr del 10.40.0.1/16 dev dummy0\n")
	return b.String()
}

// TestStorm overflows the tracker's socket on purpose (a tiny receive
// buffer, a consumer slowed down) and checks that it resyncs and ends with
// exactly the kernel's state.
func TestStorm(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := testbed.NewNetNS(t)
	ns.AddDummy("dummy0", true)
	tr := start(t, ns, func(tr *Tracker) {
		tr.rcvbuf = 1 // the kernel raises it to its minimum, a few messages
		tr.beforeApply = func() { time.Sleep(time.Millisecond) }
	})
	cmds := storm()
	if n := strings.Count(cmds, "\n"); n != 10000 {
		t.Fatalf("the storm has %d commands", n)
	}
	ipBatch(t, ns, cmds)
	matchKernel(t, tr, ns, 60*time.Second)
	if tr.Resyncs() == 0 {
		t.Fatal("the storm never overflowed the socket: nothing tested the resync")
	}
	t.Logf("%d addresses, %d resyncs, generation %d", len(tr.Snapshot().All()), tr.Resyncs(), tr.Snapshot().Generation())
}

// TestRunEnds checks that Run returns on cancel and leaves no goroutine,
// after a forced resync too.
func TestRunEnds(t *testing.T) {
	testbed.RequirePrivileges(t)
	ns := testbed.NewNetNS(t)
	before := runtime.NumGoroutine()

	tr, err := New(Options{NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	// The consumer stops at the first event until the burst is over, so
	// that the tiny buffer surely overflows.
	gate := make(chan struct{})
	tr.rcvbuf, tr.beforeApply = 1, func() { <-gate }
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() { ended <- tr.Run(ctx) }()
	select {
	case <-tr.Ready():
	case err := <-ended:
		t.Fatalf("Run: %v", err)
	case <-time.After(wait):
		t.Fatal("not ready")
	}
	var b strings.Builder
	for i := range 300 {
		fmt.Fprintf(&b, "addr add 10.50.%d.%d/32 dev lo\n", i/250, i%250+1)
	}
	ipBatch(t, ns, b.String())
	close(gate)
	waitFor(t, tr, "a resync and 300 addresses", func(s *Snapshot) bool {
		return tr.Resyncs() > 0 && len(s.All()) == 300+2 // and 127.0.0.1, ::1
	})

	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
	// Run has waited for its goroutine; the runtime may take a moment to
	// retire it after its last statement.
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before, %d after Run returned:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// BenchmarkAddToLive measures the time from just before exec of
// `ip addr add` to the address being live in the tracker's snapshot. It
// includes starting the ip process (fork, exec, its netlink request),
// which is most of it.
func BenchmarkAddToLive(b *testing.B) {
	testbed.RequirePrivileges(b)
	ns := testbed.NewNetNS(b)
	tr := start(b, ns, nil)
	lat := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		ch := tr.Changed()
		t0 := time.Now()
		if out, err := ns.Exec("ip", "addr", "add", a.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
			b.Fatalf("ip addr add: %v: %s", err, out)
		}
		for !slices.ContainsFunc(tr.Snapshot().Lookup(a), Address.Live) {
			select {
			case <-ch:
			case <-time.After(wait):
				b.Fatalf("%s not live after %v", a, wait)
			}
			ch = tr.Changed()
		}
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		if out, err := ns.Exec("ip", "addr", "del", a.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
			b.Fatalf("ip addr del: %v: %s", err, out)
		}
		b.StartTimer()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "add-to-live-µs")
}
