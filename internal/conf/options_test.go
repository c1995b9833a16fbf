package conf

import (
	"net/netip"
	"strings"
	"testing"
)

func TestOptions(t *testing.T) {
	tests := []struct {
		line string
		want string // the options in canonical form, or the error
		err  bool
	}{
		{"10.0.0.1 /a", "", false},
		{"10.0.0.1 /a isolate=all", "isolate=all", false},
		{"10.0.0.1 /a isolate=none user=ftp", "user=ftp isolate=none", false},
		{"10.0.0.1 /a isolate=uts,mount,ipc,pid", "isolate=all", false},
		{"10.0.0.1 /a isolate=pid,mount", "isolate=mount,pid", false},
		{"10.0.0.1 /a hostname=www.example.com", "hostname=www.example.com", false},
		{"10.0.0.1 /a isolate=uts hostname=a-1.b", "isolate=uts hostname=a-1.b", false},
		{"10.0.0.1 /a group=g user=u isolate=mount", "user=u group=g isolate=mount", false},
		{"10.0.0.1 /a isolate=", "isolate=\"\": empty value", true},
		{"10.0.0.1 /a isolate=net", `unknown namespace "net"`, true},
		{"10.0.0.1 /a isolate=all,user", "isolate=all,user", false},
		{"10.0.0.1 /a isolate=user,all", "isolate=all,user", false},
		{"10.0.0.1 /a isolate=user,mount,pid,ipc,uts", "isolate=all,user", false},
		{"10.0.0.1 /a isolate=mount,user", "isolate=mount,user", false},
		{"10.0.0.1 /a isolate=user", "user needs mount", true},
		{"10.0.0.1 /a isolate=pid,user", "user needs mount", true},
		{"10.0.0.1 /a isolate=all,pid", `"all" combines only with user`, true},
		{"10.0.0.1 /a isolate=all,all", `"all" combines only with user`, true},
		{"10.0.0.1 /a isolate=user,all,pid", `"all" combines only with user`, true},
		{"10.0.0.1 /a isolate=none,pid", `"none" stands alone`, true},
		{"10.0.0.1 /a isolate=pid,pid", "pid given twice", true},
		{"10.0.0.1 /a isolate=Mount", `unknown namespace "Mount"`, true},
		{"10.0.0.1 /a isolate=all isolate=none", "isolate= given twice", true},
		{"10.0.0.1 /a isolate=mount hostname=x", "hostname=x needs uts in isolate= (isolate=mount)", true},
		{"10.0.0.1 /a isolate=none hostname=x", "needs uts", true},
		{"10.0.0.1 /a hostname=", "1 to 64 characters", true},
		{"10.0.0.1 /a hostname=" + strings.Repeat("a", 65), "1 to 64 characters", true},
		{"10.0.0.1 /a hostname=" + strings.Repeat("a", 64), "at most 63", true},
		{"10.0.0.1 /a hostname=a..b", "no empty label", true},
		{"10.0.0.1 /a hostname=-a", "neither starts nor ends", true},
		{"10.0.0.1 /a hostname=a_b", `cannot hold '_'`, true},
		{"10.0.0.1 /a hostname=a/b", `cannot hold '/'`, true},
		{"10.0.0.1 /a hostname=x hostname=y", "hostname= given twice", true},
		{"10.0.0.1 /a color=red", `unknown option "color" (options are user=, group=, isolate=, hostname=, max=, rate= and per-source=)`, true},
		// The limits (issue 23): canonical order after the other options.
		{"10.0.0.1 /a max=16", "max=16", false},
		{"10.0.0.1 /a rate=50/s", "rate=50/s", false},
		{"10.0.0.1 /a rate=600/m", "rate=600/m", false},
		{"10.0.0.1 /a per-source=4", "per-source=4", false},
		{"10.0.0.1 /a per-source=2 rate=50/s max=16 user=ftp", "user=ftp max=16 rate=50/s per-source=2", false},
		{"10.0.0.1 /a max=016", "max=16", false},
		{"10.0.0.1 /a max=1000000 rate=1000000/s", "max=1000000 rate=1000000/s", false},
		{"10.0.0.1 /a max=4 per-source=4", "max=4 per-source=4", false},
		{"10.0.0.1 /a max=", `max="": not a whole number`, true},
		{"10.0.0.1 /a max=0", `max="0": out of range (1 to 1000000`, true},
		{"10.0.0.1 /a max=1000001", "out of range", true},
		{"10.0.0.1 /a max=99999999999999999999", "out of range", true},
		{"10.0.0.1 /a max=-1", "not a whole number", true},
		{"10.0.0.1 /a max=+1", "not a whole number", true},
		{"10.0.0.1 /a max=1.5", "not a whole number", true},
		{"10.0.0.1 /a max=ten", "not a whole number", true},
		{"10.0.0.1 /a max=1 max=2", "max= given twice", true},
		{"10.0.0.1 /a per-source=0", `per-source="0": out of range`, true},
		{"10.0.0.1 /a per-source=x", `per-source="x": not a whole number`, true},
		{"10.0.0.1 /a max=4 per-source=5", "per-source=5 is more than max=4", true},
		{"10.0.0.1 /a rate=50", `rate="50": not N/s or N/m`, true},
		{"10.0.0.1 /a rate=", "not N/s or N/m", true},
		{"10.0.0.1 /a rate=50/h", `unit "h" is not s or m`, true},
		{"10.0.0.1 /a rate=50/S", `unit "S" is not s or m`, true},
		{"10.0.0.1 /a rate=50/sec", `unit "sec" is not s or m`, true},
		{"10.0.0.1 /a rate=/s", `rate="/s": not a whole number`, true},
		{"10.0.0.1 /a rate=0/s", "out of range", true},
		{"10.0.0.1 /a rate=1000001/s", "out of range", true},
		{"10.0.0.1 /a rate=5/s/s", `unit "s/s"`, true},
		{"10.0.0.1 /a rate=1/s rate=2/s", "rate= given twice", true},
	}
	for _, tt := range tests {
		f, err := Parse("c", []byte(tt.line+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		e := f.Entry(0)
		switch {
		case tt.err && (e.Err == nil || !strings.Contains(e.Err.Error(), tt.want)):
			t.Errorf("%s: error %v, want one saying %q", tt.line, e.Err, tt.want)
		case tt.err && (len(f.Errors) != 1 || !strings.HasPrefix(f.Errors[0].Error(), "c:1: ")):
			t.Errorf("%s: errors %v, want one at c:1", tt.line, f.Errors)
		case !tt.err && e.Err != nil:
			t.Errorf("%s: %v", tt.line, e.Err)
		case !tt.err && e.Options.String() != tt.want:
			t.Errorf("%s: options %q, want %q", tt.line, e.Options.String(), tt.want)
		case !tt.err:
			// The canonical form is what a daemon's answer carries:
			// EntryOf takes it back, and nothing else.
			back, err := EntryOf(1, e.Key, e.Root, e.Options.String())
			if err != nil || back.Options != e.Options {
				t.Errorf("%s: EntryOf gives %+v, %v", tt.line, back, err)
			}
		}
	}
	if _, err := EntryOf(1, "10.0.0.1", "/a", "isolate=pid,mount"); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Errorf("EntryOf took options out of canonical form: %v", err)
	}
}

func TestIsolationDefault(t *testing.T) {
	var o Options
	if got := o.Isolation(IsolateAll); got != IsolateAll {
		t.Errorf("no isolate=: %v, want the default", got)
	}
	o = Options{Isolate: IsolateNone, IsolateSet: true}
	if got := o.Isolation(IsolateAll); got != IsolateNone {
		t.Errorf("isolate=none: %v, want none", got)
	}
}

func TestLimits(t *testing.T) {
	tests := []struct {
		rate      string
		perSecond float64
		burst     float64
	}{
		{"50/s", 50, 50},
		{"1/s", 1, 1},
		{"120/m", 2, 2},
		{"30/m", 0.5, 1}, // a burst of one at least
		{"1/m", 1.0 / 60, 1},
	}
	for _, tt := range tests {
		r, err := ParseRate(tt.rate)
		if err != nil {
			t.Fatalf("%s: %v", tt.rate, err)
		}
		if r.PerSecond() != tt.perSecond || r.Burst() != tt.burst || r.String() != tt.rate {
			t.Errorf("%s: %v a second, burst %v, written %s; want %v, %v", tt.rate, r.PerSecond(), r.Burst(), r, tt.perSecond, tt.burst)
		}
	}
	if (Limits{}).Set() || !(Limits{PerSource: 1}).Set() {
		t.Error("Limits.Set is wrong")
	}
}

// A line with per-source= is an option line: it does not suspend the
// catch-alls as a line that may join two lines would.
func TestLimitsAreOptions(t *testing.T) {
	f, err := Parse("c", []byte("10.0.0.1 /a per-source=2\ndefault /d\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Errors) != 0 {
		t.Fatalf("errors: %v", f.Errors)
	}
	if m := f.Lookup(netip.MustParseAddr("10.0.0.9")); m.Err != nil || m.Entry == nil || m.Entry.Root != "/d" {
		t.Errorf("default refused after a per-source= line: %+v", m)
	}
}
