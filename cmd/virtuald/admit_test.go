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
