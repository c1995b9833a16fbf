package daemon

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/superserver"
)

func mustParse(t *testing.T, path string, lines ...string) *conf.File {
	t.Helper()
	f, err := conf.Parse(path, []byte(strings.Join(lines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func key(a string, port uint16) bpf.Key {
	return bpf.Key{Addr: netip.MustParseAddr(a), Port: port}
}

func nowait(conf string, port uint16) superserver.Service {
	return superserver.Service{Name: "svc", From: "inetd.conf:1", Conf: conf, Transport: "tcp", Port: port}
}

// planShedding: which addresses and ports get which entry's bucket, from
// the files, their services and the live addresses.
func TestPlanShedding(t *testing.T) {
	a := mustParse(t, "/a",
		"192.0.2.1 / rate=20/s",
		"192.0.2.2 /",
		"192.0.2.3 / rate=10/m max=4",
		"2001:db8::1 / rate=5/s",
		"198.51.100.0/24 / rate=100/s",
		"default / rate=3/s",
		"192.0.2.9 /nonexistent user=nobody= rate=1/s", // invalid: nothing
	)
	perSec := func(n int) bpf.ShedRule { return shedRule(conf.Rate{N: n, Per: time.Second}) }
	b := func(key string, port uint16) shedBucket { return shedBucket{Conf: "/a", Key: key, Port: port} }
	live := []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8"), netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("192.0.2.2")}
	for _, tc := range []struct {
		name     string
		services []superserver.Service
		live     []netip.Addr
		keys     map[bpf.Key]shedBucket
		rules    map[shedBucket]bpf.ShedRule
		notes    int
	}{{
		name: "no service: nothing",
		keys: map[bpf.Key]shedBucket{}, rules: map[shedBucket]bpf.ShedRule{},
	}, {
		name:     "accept mode and udp: nothing",
		services: []superserver.Service{{Conf: "/a", Transport: "tcp", Port: 21, Accept: true}, {Conf: "/a", Transport: "udp", Port: 69}},
		keys:     map[bpf.Key]shedBucket{}, rules: map[shedBucket]bpf.ShedRule{},
	}, {
		name:     "exact entries, live or not; no live address for the prefix and default",
		services: []superserver.Service{nowait("/a", 21)},
		keys: map[bpf.Key]shedBucket{
			key("192.0.2.1", 21): b("192.0.2.1", 21), key("192.0.2.3", 21): b("192.0.2.3", 21), key("2001:db8::1", 21): b("2001:db8::1", 21),
		},
		rules: map[shedBucket]bpf.ShedRule{
			b("192.0.2.1", 21): perSec(20), b("192.0.2.3", 21): {Interval: 6 * time.Second, Burst: 1}, b("2001:db8::1", 21): perSec(5),
		},
	}, {
		name:     "a prefix's and default's live addresses share their entry's bucket; two ports, two buckets",
		services: []superserver.Service{nowait("/a", 21), nowait("/a", 79)},
		live:     live,
		keys: map[bpf.Key]shedBucket{
			key("192.0.2.1", 21): b("192.0.2.1", 21), key("192.0.2.3", 21): b("192.0.2.3", 21), key("2001:db8::1", 21): b("2001:db8::1", 21),
			key("192.0.2.1", 79): b("192.0.2.1", 79), key("192.0.2.3", 79): b("192.0.2.3", 79), key("2001:db8::1", 79): b("2001:db8::1", 79),
			key("198.51.100.7", 21): b("198.51.100.0/24", 21), key("198.51.100.8", 21): b("198.51.100.0/24", 21),
			key("198.51.100.7", 79): b("198.51.100.0/24", 79), key("198.51.100.8", 79): b("198.51.100.0/24", 79),
			key("203.0.113.1", 21): b("default", 21), key("203.0.113.1", 79): b("default", 79),
		},
		rules: map[shedBucket]bpf.ShedRule{
			b("192.0.2.1", 21): perSec(20), b("192.0.2.3", 21): {Interval: 6 * time.Second, Burst: 1}, b("2001:db8::1", 21): perSec(5),
			b("192.0.2.1", 79): perSec(20), b("192.0.2.3", 79): {Interval: 6 * time.Second, Burst: 1}, b("2001:db8::1", 79): perSec(5),
			b("198.51.100.0/24", 21): perSec(100), b("198.51.100.0/24", 79): perSec(100), b("default", 21): perSec(3), b("default", 79): perSec(3),
		},
	}, {
		name:     "a line bound to one address: that address only; a port not known: a note",
		services: []superserver.Service{{Conf: "/a", Transport: "tcp", Port: 21, Address: netip.MustParseAddr("192.0.2.1")}, {Name: "rpc", Conf: "/a", Transport: "tcp"}},
		keys:     map[bpf.Key]shedBucket{key("192.0.2.1", 21): b("192.0.2.1", 21)},
		rules:    map[shedBucket]bpf.ShedRule{b("192.0.2.1", 21): perSec(20)},
		notes:    1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := planShedding([]shedSource{{path: "/a", file: a, exact: limitedExact(a), services: tc.services}}, tc.live)
			if !reflect.DeepEqual(p.keys, tc.keys) {
				t.Errorf("keys\n got %v\nwant %v", p.keys, tc.keys)
			}
			if !reflect.DeepEqual(p.rules, tc.rules) {
				t.Errorf("rules\n got %v\nwant %v", p.rules, tc.rules)
			}
			if len(p.notes) != tc.notes {
				t.Errorf("notes %q; want %d", p.notes, tc.notes)
			}
		})
	}
}

// Two files on one address and port: the first path keeps it, a note
// says so.
func TestPlanSheddingConflict(t *testing.T) {
	x := mustParse(t, "/x", "192.0.2.1 / rate=1/s")
	y := mustParse(t, "/y", "192.0.2.1 / rate=2/s")
	p := planShedding([]shedSource{
		{path: "/y", file: y, exact: limitedExact(y), services: []superserver.Service{nowait("/y", 21)}},
		{path: "/x", file: x, exact: limitedExact(x), services: []superserver.Service{nowait("/x", 21)}},
	}, nil)
	if got := p.keys[key("192.0.2.1", 21)]; got.Conf != "/x" || len(p.notes) != 1 {
		t.Errorf("192.0.2.1:21 to %v, notes %q; want /x's, one note", got, p.notes)
	}
}

// shedRule: rate= as the kernel takes it, the burst a second's worth.
func TestShedRule(t *testing.T) {
	for _, tc := range []struct {
		rate conf.Rate
		want bpf.ShedRule
	}{
		{conf.Rate{N: 20, Per: time.Second}, bpf.ShedRule{Interval: 50 * time.Millisecond, Burst: 20}},
		{conf.Rate{N: 1, Per: time.Second}, bpf.ShedRule{Interval: time.Second, Burst: 1}},
		{conf.Rate{N: 120, Per: time.Minute}, bpf.ShedRule{Interval: 500 * time.Millisecond, Burst: 2}},
		{conf.Rate{N: 10, Per: time.Minute}, bpf.ShedRule{Interval: 6 * time.Second, Burst: 1}},
		{conf.Rate{N: conf.MaxLimit, Per: time.Second}, bpf.ShedRule{Interval: time.Microsecond, Burst: conf.MaxLimit}},
	} {
		if got := shedRule(tc.rate); got != tc.want {
			t.Errorf("%v: %+v; want %+v", tc.rate, got, tc.want)
		}
	}
}

// shedIndex keeps a bucket's index while it stays, reuses a freed one,
// and stops at its size with a note.
func TestShedIndex(t *testing.T) {
	bk := func(k string) shedBucket { return shedBucket{Conf: "/a", Key: k, Port: 21} }
	r := bpf.ShedRule{Interval: time.Second, Burst: 1}
	plan := func(names ...string) shedPlan {
		p := shedPlan{keys: map[bpf.Key]shedBucket{}, rules: map[shedBucket]bpf.ShedRule{}}
		for _, n := range names {
			p.keys[key(n, 21)] = bk(n)
			p.rules[bk(n)] = r
		}
		return p
	}
	x := newShedIndex(3)
	steps := []struct {
		names []string
		want  map[bpf.Key]uint32
		notes int
	}{
		{[]string{"192.0.2.1", "192.0.2.2"}, map[bpf.Key]uint32{key("192.0.2.1", 21): 0, key("192.0.2.2", 21): 1}, 0},
		{[]string{"192.0.2.2", "192.0.2.3"}, map[bpf.Key]uint32{key("192.0.2.2", 21): 1, key("192.0.2.3", 21): 0}, 0},
		{[]string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}, map[bpf.Key]uint32{key("192.0.2.2", 21): 1, key("192.0.2.3", 21): 0, key("192.0.2.4", 21): 2}, 1},
		{nil, map[bpf.Key]uint32{}, 0},
		{[]string{"192.0.2.9"}, map[bpf.Key]uint32{key("192.0.2.9", 21): 0}, 0},
	}
	for i, s := range steps {
		keys, rules, notes := x.assign(plan(s.names...))
		if !reflect.DeepEqual(keys, s.want) || len(notes) != s.notes {
			t.Errorf("step %d: keys %v, notes %q; want %v and %d notes", i, keys, notes, s.want, s.notes)
		}
		for _, idx := range keys {
			if rules[idx] != r {
				t.Errorf("step %d: index %d has no rule", i, idx)
			}
		}
	}
}
