package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
)

// admission applies max=, per-source=, rate= and -max-per-entry, each
// entry on its own, and gives back what a service held when it ends. The
// clock is the test's: no wall-clock time is involved.
func TestAdmission(t *testing.T) {
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("::ffff:198.51.100.2")
	t0 := time.Unix(1000, 0)
	type step struct {
		entry   string
		src     netip.Addr
		limits  string        // the entry's options
		at      time.Duration // after t0
		release bool          // give back one of entry's services from src instead
		refusal string        // "" to admit, else a word of the refusal
	}
	tests := []struct {
		name        string
		maxPerEntry int // 1000 when 0
		steps       []step
	}{
		{"max", 0, []step{
			{entry: "e", src: a, limits: "max=2"},
			{entry: "e", src: b, limits: "max=2"},
			{entry: "e", src: a, limits: "max=2", refusal: "at once (max=2)"},
			{entry: "f", src: a, limits: "max=2"}, // another entry: its own count
			{entry: "e", src: a, release: true},
			{entry: "e", src: a, limits: "max=2"},
		}},
		{"per-source", 0, []step{
			{entry: "e", src: a, limits: "per-source=1"},
			{entry: "e", src: a, limits: "per-source=1", refusal: "from 198.51.100.1 (per-source=1)"},
			{entry: "e", src: b, limits: "per-source=1"}, // another client; mapped and plain are one address
			{entry: "e", src: netip.MustParseAddr("198.51.100.2"), limits: "per-source=1", refusal: "from 198.51.100.2"},
			{entry: "e", src: a, release: true},
			{entry: "e", src: a, limits: "per-source=1"},
		}},
		{"rate", 0, []step{
			{entry: "e", src: a, limits: "rate=2/s"},
			{entry: "e", src: a, limits: "rate=2/s"}, // the burst: a second's worth
			{entry: "e", src: a, limits: "rate=2/s", refusal: "new connections to this entry (rate=2/s)"},
			{entry: "f", src: a, limits: "rate=2/s"},
			{entry: "e", src: a, limits: "rate=2/s", at: 400 * time.Millisecond, refusal: "rate=2/s"}, // 0.8 token
			{entry: "e", src: a, limits: "rate=2/s", at: 500 * time.Millisecond},
			{entry: "e", src: a, limits: "rate=2/s", at: 500 * time.Millisecond, refusal: "rate=2/s"},
			{entry: "e", src: a, limits: "rate=2/s", at: time.Hour},
			{entry: "e", src: a, limits: "rate=2/s", at: time.Hour},
			{entry: "e", src: a, limits: "rate=2/s", at: time.Hour, refusal: "rate=2/s"}, // full is a burst, no more
		}},
		{"rate a minute", 0, []step{
			{entry: "e", src: a, limits: "rate=30/m"}, // burst 1
			{entry: "e", src: a, limits: "rate=30/m", at: time.Second, refusal: "rate=30/m"},
			{entry: "e", src: a, limits: "rate=30/m", at: 2 * time.Second},
			{entry: "e", src: a, limits: "rate=60/m", at: 2 * time.Second}, // a new rate (reload) starts full
		}},
		{"a refusal by max takes no token", 0, []step{
			{entry: "e", src: a, limits: "max=1 rate=1/s"},
			{entry: "e", src: a, limits: "max=1 rate=1/s", at: time.Second, refusal: "max=1"},
			{entry: "e", src: a, release: true},
			{entry: "e", src: a, limits: "max=1 rate=1/s", at: time.Second},
		}},
		{"-max-per-entry", 3, []step{
			{entry: "e", src: a},
			{entry: "e", src: a},
			{entry: "e", src: a},
			{entry: "e", src: a, refusal: "-max-per-entry 3"},
			{entry: "e", src: a, limits: "max=10", refusal: "-max-per-entry 3"},
		}},
	}
	for _, tt := range tests {
		ad := newAdmission(1000)
		if tt.maxPerEntry > 0 {
			ad = newAdmission(tt.maxPerEntry)
		}
		var refused uint64
		for i, s := range tt.steps {
			if s.release {
				ad.release(s.entry, s.src)
				continue
			}
			var l conf.Limits
			if s.limits != "" {
				e, err := conf.EntryOf(1, "default", "/", s.limits)
				if err != nil {
					t.Fatal(err)
				}
				l = e.Limits
			}
			got, total := ad.take(s.entry, s.src, l, t0.Add(s.at))
			switch {
			case s.refusal == "" && got != "":
				t.Errorf("%s: step %d: refused: %s", tt.name, i, got)
			case s.refusal != "" && !strings.Contains(got, s.refusal):
				t.Errorf("%s: step %d: refusal %q, want one saying %q", tt.name, i, got, s.refusal)
			case s.refusal != "":
				if refused++; total != refused && s.entry == "e" {
					t.Errorf("%s: step %d: %d refusals counted, want %d", tt.name, i, total, refused)
				}
			}
		}
		pending := ad.takePending()
		if pending["e"] != refused || len(ad.takePending()) != 0 {
			t.Errorf("%s: pending refusals %v, want e: %d, then none", tt.name, pending, refused)
		}
	}
}

// quick refuses, from what the last full resolution of a local address
// found, while the entry is at a limit (its own, or -max-per-entry); it
// cannot tell (and the connection goes the full way) for an address it
// has no memo of, an entry under its limits, a memo older than memoTTL,
// or an address whose entry has no limits now and is under
// -max-per-entry.
func TestQuickRefusal(t *testing.T) {
	local, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	src := netip.MustParseAddr("198.51.100.1")
	t0 := time.Unix(1000, 0)
	ad := newAdmission(1000)
	limited := func(opts string) conf.Limits {
		e, err := conf.EntryOf(1, "default", "/", opts)
		if err != nil {
			t.Fatal(err)
		}
		return e.Limits
	}
	check := func(what string, addr netip.Addr, at time.Duration, want string) {
		t.Helper()
		_, got, _, ok := ad.quick(addr, src, t0.Add(at))
		if want == "" && ok || want != "" && (!ok || !strings.Contains(got, want)) {
			t.Errorf("%s: %q %v, want %q", what, got, ok, want)
		}
	}
	if ad.limited() {
		t.Error("limited before any memo")
	}
	l := limited("max=1 rate=2/s")
	ad.remember(local, memo{entry: "e", limits: l, at: t0})
	if !ad.limited() {
		t.Error("not limited with a memo")
	}
	check("under the limits", local, 0, "")
	check("no memo", other, 0, "")
	if r, _ := ad.take("e", src, l, t0); r != "" {
		t.Fatal(r)
	}
	check("at max=1", local, 0, "max=1")
	ad.release("e", src)
	check("after the release", local, 0, "")
	ad.take("e", src, l, t0)
	ad.release("e", src)
	check("the bucket empty", local, 0, "rate=2/s")
	check("the bucket refilled", local, 500*time.Millisecond, "")
	ad.take("e", src, l, t0.Add(500*time.Millisecond))
	ad.release("e", src)
	check("empty again", local, 500*time.Millisecond, "rate=2/s")
	check("the memo too old", local, memoTTL+time.Millisecond, "")
	ad.remember(local, memo{entry: "e", at: t0}) // the address's entry has no limits now
	check("limits lifted", local, 500*time.Millisecond, "")
	if ad.limited() {
		t.Error("limited after the only memo was forgotten")
	}
	if got := ad.takePending()["e"]; got != 3 {
		t.Errorf("%d refusals counted, want 3", got)
	}

	// An entry without limits at -max-per-entry (a flood) is refused
	// quickly too, until it is under it again.
	ad = newAdmission(1)
	ad.take("e", src, conf.Limits{}, t0)
	ad.remember(local, memo{entry: "e", at: t0})
	check("at -max-per-entry", local, 0, "-max-per-entry 1")
	ad.release("e", src)
	check("under -max-per-entry", local, 0, "")
	ad.remember(local, memo{entry: "e", at: t0})
	if ad.limited() {
		t.Error("a memo kept for an entry without limits under -max-per-entry")
	}
}

// A service is favoured while its entry runs fewer services than the
// entries that run any do on average, its own just taken counted, by as
// much as weighs it as the busiest entry (nice -20 at most).
func TestAdmissionFavour(t *testing.T) {
	src := netip.MustParseAddr("198.51.100.1")
	for _, c := range []struct {
		running map[string]int // services taken, by entry
		entry   string
		want    int
	}{
		{map[string]int{"q": 1}, "q", 0},                          // alone
		{map[string]int{"q": 1, "f": 1}, "q", 0},                  // on a par
		{map[string]int{"q": 1, "f": 2}, "q", -3},                 // beside a busier one: 1.25^3 < 2
		{map[string]int{"q": 1, "f": 64}, "q", -18},               // beside a flood
		{map[string]int{"q": 1, "f": 64}, "f", 0},                 // the flood
		{map[string]int{"q": 1, "f": 500}, "q", -20},              // at most -20
		{map[string]int{"q": 2, "f": 3, "g": 1}, "q", 0},          // at the average
		{map[string]int{"q": 1, "f": 3, "g": 3}, "q", -4},         // below it
		{map[string]int{"q": 2, "f": 8, "g": 2, "h": 2}, "q", -6}, // weighed against the busiest
	} {
		ad := newAdmission(1000)
		for e, n := range c.running {
			for range n {
				if r, _ := ad.take(e, src, conf.Limits{}, time.Unix(1000, 0)); r != "" {
					t.Fatal(r)
				}
			}
		}
		if got := ad.favour(c.entry); got != c.want {
			t.Errorf("%v: favour(%s) = %d, want %d", c.running, c.entry, got, c.want)
		}
		for e, n := range c.running {
			for range n {
				ad.release(e, src)
			}
		}
		if ad.running != 0 || len(ad.perEntry) != 0 {
			t.Errorf("%v: after release, running %d, entries %v", c.running, ad.running, ad.perEntry)
		}
	}
}
