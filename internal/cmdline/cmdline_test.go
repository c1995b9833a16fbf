package cmdline

import (
	"slices"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
)

// The flags come before the conf path, as the seed's inetd lines have it;
// everything from the conf path on is the service's.
func TestParse(t *testing.T) {
	defaults := Options{MaxChildren: 512, MaxPerEntry: 64, StopTimeout: 30 * time.Second, Favour: 20 * time.Millisecond, CPUShare: CPUShareEntry, Isolate: conf.IsolateAll}
	with := func(change func(*Options)) Options {
		o := defaults
		change(&o)
		return o
	}
	for _, c := range []struct {
		args []string
		want Options
		rest []string
		err  string
	}{
		{args: []string{"virtuald", "/c", "prog", "-x"}, want: defaults, rest: []string{"virtuald", "/c", "prog", "-x"}},
		{args: []string{"virtuald", "-allow-wildcard-dgram", "/c", "prog"}, want: with(func(o *Options) { o.AllowWildcardDgram = true }), rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-accept", "-stop-timeout", "5s", "--max-children=3", "/c", "prog"}, want: with(func(o *Options) { o.Accept, o.MaxChildren, o.StopTimeout = true, 3, 5*time.Second }), rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-socket", "/s", "--", "-odd-conf", "prog"}, want: with(func(o *Options) { o.Socket = "/s" }), rest: []string{"virtuald", "-odd-conf", "prog"}},
		{args: []string{"virtuald", "-accept", "-idle-exit", "10m", "/c", "prog"}, want: with(func(o *Options) { o.Accept, o.IdleExit = true, 10*time.Minute }), rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-idle-exit", "10m", "/c", "prog"}, err: "-idle-exit is for accept mode (-accept)"}, // per connection, nothing idles
		{args: []string{"virtuald", "-accept", "-idle-exit", "-1s", "/c", "prog"}, err: "-idle-exit takes a duration (e.g. 30s)"},
		{args: []string{"virtuald", "-favour", "0", "-accept", "/c", "prog"}, want: with(func(o *Options) { o.Accept, o.Favour = true, 0 }), rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-favour", "50ms", "/c", "prog"}, err: "-favour is for accept mode (-accept)"},
		{args: []string{"virtuald", "-accept", "-cpu-share", "service", "/c", "prog"}, want: with(func(o *Options) { o.Accept, o.CPUShare = true, CPUShareService }), rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-cpu-share=entry", "/c", "prog"}, err: "-cpu-share is for accept mode (-accept)"},
		{args: []string{"virtuald", "-accept", "-cpu-share", "tenant", "/c", "prog"}, err: "-cpu-share takes entry or service"},
		{args: []string{"virtuald", "-stop-timeout", "soon", "/c", "prog"}, err: "-stop-timeout takes a duration (e.g. 30s)"},
		{args: []string{"virtuald", "-max-per-entry", "0", "/c", "prog"}, err: "-max-per-entry takes a positive number"},
		{args: []string{"virtuald", "-max-children", "many", "/c", "prog"}, err: "-max-children takes a positive number"},
		{args: []string{"virtuald", "-frobnicate", "/c", "prog"}, err: "unknown option -frobnicate"},
		{args: []string{"virtuald", "-socket"}, err: "-socket needs a value"},
		{args: []string{"virtuald", "-isolate", "none", "/c", "prog"}, want: with(func(o *Options) { o.Isolate = conf.IsolateNone }), rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-accept", "-isolate=mount,uts", "/c", "prog"}, want: with(func(o *Options) { o.Accept, o.Isolate = true, conf.IsolateMount|conf.IsolateUTS }), rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-isolate", "chroot", "/c", "prog"}, err: `-isolate "chroot": unknown namespace "chroot" (none, all, all,user, or a comma list of mount, pid, ipc, uts, user)`},
		{args: []string{"virtuald", "-version"}, want: with(func(o *Options) { o.Version = true }), rest: []string{"virtuald"}},
		{args: []string{"virtuald", "-h"}, want: with(func(o *Options) { o.Help = true }), rest: []string{"virtuald"}},
		{args: []string{"virtuald", "--help"}, want: with(func(o *Options) { o.Help = true }), rest: []string{"virtuald"}},
	} {
		got, rest, err := Parse(c.args)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%q: error %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want || !slices.Equal(rest, c.rest) {
			t.Errorf("%q: %+v %q %v, want %+v %q", c.args, got, rest, err, c.want, c.rest)
		}
	}
}
