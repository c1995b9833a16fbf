package slots

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// testDir is a slot directory under /run, which is root's: a directory
// in /tmp (everybody's) is refused, as it must be.
func testDir(t *testing.T) string {
	t.Helper()
	testbed.RequirePrivileges(t)
	parent, err := os.MkdirTemp("/run", "slots-test-")
	testbed.Must(t, err)
	t.Cleanup(func() { os.RemoveAll(parent) })
	return filepath.Join(parent, "virtuald", "slots")
}

// open opens entry's file as one more connection would (a description
// of its own), closed at the test's end.
func open(t *testing.T, dir, entry string) *File {
	t.Helper()
	f, err := Open(dir, entry)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestTake(t *testing.T) {
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	a6, b6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	type conn struct {
		src  netip.Addr
		want Limit
	}
	for _, c := range []struct {
		name  string
		l     conf.Limits
		conns []conn
	}{
		{"max=2", conf.Limits{Max: 2}, []conn{{a, None}, {b, None}, {a, Max}, {b, Max}}},
		{"per-source=1", conf.Limits{PerSource: 1}, []conn{{a, None}, {a, PerSource}, {b, None}, {b, PerSource}}},
		{"per-source=2 IPv6", conf.Limits{PerSource: 2}, []conn{{a6, None}, {a6, None}, {a6, PerSource}, {b6, None}}},
		{"an IPv4-mapped address is the IPv4 one", conf.Limits{PerSource: 1}, []conn{{a, None}, {netip.AddrFrom16(a.As16()), PerSource}}},
		// Refused for max=, a connection keeps no place of its client's.
		{"max=1 per-source=1", conf.Limits{Max: 1, PerSource: 1}, []conn{{a, None}, {b, Max}, {b, Max}}},
		{"no client address: max= alone", conf.Limits{Max: 1, PerSource: 1}, []conn{{netip.Addr{}, None}, {netip.Addr{}, Max}}},
		// A burst of 2 (a second's worth), then nothing in the same instant.
		{"rate=2/s", conf.Limits{Rate: conf.Rate{N: 2, Per: time.Second}}, []conn{{a, None}, {b, None}, {a, Rate}}},
		// Refused for rate=, a connection keeps no place.
		{"max=2 rate=1/m", conf.Limits{Max: 2, Rate: conf.Rate{N: 1, Per: time.Minute}}, []conn{{a, None}, {a, Rate}, {a, Rate}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := testDir(t)
			for i, cn := range c.conns {
				got, err := open(t, dir, "conf\x00key").Take(c.l, cn.src, time.Unix(1000, 0))
				if err != nil || got != cn.want {
					t.Fatalf("connection %d from %v: %v %v, want %v", i+1, cn.src, got, err, cn.want)
				}
			}
		})
	}
}

// The kernel gives a place back when its holder closes the last
// descriptor of its description; each entry has places of its own.
func TestGivenBack(t *testing.T) {
	dir := testDir(t)
	first := open(t, dir, "conf\x00one")
	max1 := conf.Limits{Max: 1}
	if got, _ := first.Take(max1, netip.Addr{}, time.Now()); got != None {
		t.Fatal("first connection refused")
	}
	if got, _ := open(t, dir, "conf\x00two").Take(max1, netip.Addr{}, time.Now()); got != None {
		t.Fatal("another entry's connection refused")
	}
	if got, _ := open(t, dir, "conf\x00one").Take(max1, netip.Addr{}, time.Now()); got != Max {
		t.Fatal("second connection served past max=1")
	}
	first.Close()
	if got, _ := open(t, dir, "conf\x00one").Take(max1, netip.Addr{}, time.Now()); got != None {
		t.Fatal("the place was not given back")
	}
}

// Past the exact probes, a limit is never exceeded and is reached within
// a few places.
func TestTakeMany(t *testing.T) {
	dir := testDir(t)
	const n = 300
	taken := 0
	for i := 0; i < n+50; i++ {
		got, err := open(t, dir, "conf\x00many").Take(conf.Limits{Max: n}, netip.Addr{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if got == None {
			taken++
		}
	}
	if taken > n || taken < n-30 {
		t.Fatalf("%d connections under max=%d", taken, n)
	}
}

// rate='s bucket is the entry's, kept in its file across connections: it
// refills at the rate, and starts full when the rate changes (a reload).
func TestRateInFile(t *testing.T) {
	dir := testDir(t)
	two := conf.Limits{Rate: conf.Rate{N: 2, Per: time.Second}}
	at := time.Unix(1000, 0)
	for i, c := range []struct {
		l     conf.Limits
		after time.Duration
		want  Limit
	}{
		{two, 0, None}, {two, 0, None}, {two, 0, Rate},
		{two, 500 * time.Millisecond, None}, {two, 500 * time.Millisecond, Rate},
		{conf.Limits{Rate: conf.Rate{N: 1, Per: time.Second}}, 500 * time.Millisecond, None},
	} {
		if got, err := open(t, dir, "conf\x00rate").Take(c.l, netip.Addr{}, at.Add(c.after)); err != nil || got != c.want {
			t.Errorf("connection %d: %v %v, want %v", i+1, got, err, c.want)
		}
	}
}

// One refusal a second is logged, with the ones that were not since.
func TestRefused(t *testing.T) {
	dir := testDir(t)
	f, g := open(t, dir, "conf\x00k"), open(t, dir, "conf\x00k")
	at := time.Unix(1000, 0)
	for i, c := range []struct {
		f                *File
		now              time.Time
		notLogged, total uint64
		log              bool
	}{
		{f, at, 0, 1, true},
		{g, at.Add(100 * time.Millisecond), 0, 2, false},
		{f, at.Add(900 * time.Millisecond), 0, 3, false},
		{g, at.Add(time.Second), 2, 4, true},
		{f, at.Add(3 * time.Second), 0, 5, true},
	} {
		notLogged, total, log := c.f.Refused(c.now)
		if notLogged != c.notLogged || total != c.total || log != c.log {
			t.Errorf("refusal %d: %d %d %v, want %d %d %v", i+1, notLogged, total, log, c.notLogged, c.total, c.log)
		}
	}
}

// Slots are kept only where nobody but root can give a connection another
// file: a directory others may write to (where the file is made), a link
// where the file would be, or a file others may open, is refused.
func TestOpenRefuses(t *testing.T) {
	dir := testDir(t)
	open(t, dir, "conf\x00k")
	testbed.Must(t, os.Chmod(filepath.Dir(dir), 0o777))
	if _, err := Open(dir, "conf\x00new"); err == nil {
		t.Error("made a file in a directory everybody may write to")
	}
	testbed.Must(t, os.Chmod(filepath.Dir(dir), 0o755))

	name := filepath.Join(dir, fileName("conf\x00link"))
	testbed.Must(t, os.Symlink(filepath.Join(dir, fileName("conf\x00k")), name))
	if _, err := Open(dir, "conf\x00link"); err == nil {
		t.Error("opened through a link")
	}
	testbed.Must(t, os.Remove(name))
	testbed.Must(t, os.WriteFile(name, nil, 0o644))
	if _, err := Open(dir, "conf\x00link"); err == nil {
		t.Error("opened a file others may read")
	}
}

// The reference vectors of SipHash-2-4 (the paper's appendix A): key
// 00 01 .. 0f, messages 00 01 .. of 0, 8 and 15 bytes.
func TestSipHash(t *testing.T) {
	m := make([]byte, 15)
	for i := range m {
		m[i] = byte(i)
	}
	k0, k1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	for _, c := range []struct {
		n    int
		want uint64
	}{{0, 0x726fdb47dd0e0e31}, {8, 0x93f5f5799a932462}, {15, 0xa129ca6149be45e5}} {
		if got := sipHash(k0, k1, m[:c.n]); got != c.want {
			t.Errorf("%d bytes: %x, want %x", c.n, got, c.want)
		}
	}
}

// Connections that take places at the same instant never pass max=
// between them: the kernel decides each lock alone.
func TestTakeRace(t *testing.T) {
	dir := testDir(t)
	const n, conns = 5, 64
	files := make([]*File, conns)
	for i := range files {
		files[i] = open(t, dir, "conf\x00race")
	}
	got := make(chan Limit, conns)
	start := make(chan struct{})
	for _, f := range files {
		go func() {
			<-start
			l, err := f.Take(conf.Limits{Max: n}, netip.Addr{}, time.Now())
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
	}
	close(start)
	taken := 0
	for range conns {
		if <-got == None {
			taken++
		}
	}
	if taken != n {
		t.Fatalf("%d connections took a place under max=%d", taken, n)
	}
}

// A service given the file (isolate=none) that holds the header's locks
// for good keeps no connection waiting: rate= refuses (fail closed) once
// the bounded wait is over, and refusals are logged without their count.
func TestHeaderHeldForGood(t *testing.T) {
	dir := testDir(t)
	tenant := open(t, dir, "conf\x00k")
	testbed.Must(t, tenant.lock(unix.F_WRLCK, logOff, logLen+bucketLen))
	f := open(t, dir, "conf\x00k")
	if _, err := f.Take(conf.Limits{Rate: conf.Rate{N: 5, Per: time.Second}}, netip.Addr{}, time.Now()); err == nil {
		t.Error("rate= served while its bucket could not be read")
	}
	if notLogged, total, log := f.Refused(time.Now()); !log || notLogged != 0 || total != 0 {
		t.Errorf("refusal with the count held: %d %d %v, want it logged without a count", notLogged, total, log)
	}
	if got, err := f.Take(conf.Limits{Max: 1}, netip.Addr{}, time.Now()); err != nil || got != None {
		t.Errorf("max= without the header: %v %v", got, err)
	}
}
