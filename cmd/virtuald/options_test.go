package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// The flags come before the conf path, as the seed's inetd lines have it;
// everything from the conf path on is the service's.
func TestParseOptions(t *testing.T) {
	for _, c := range []struct {
		args []string
		want options
		rest []string
		err  bool
	}{
		{args: []string{"virtuald", "/c", "prog", "-x"}, want: options{maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second}, rest: []string{"virtuald", "/c", "prog", "-x"}},
		{args: []string{"virtuald", "-allow-wildcard-dgram", "/c", "prog"}, want: options{maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second, allowWildcardDgram: true}, rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-accept", "-stop-timeout", "5s", "--max-children=3", "/c", "prog"}, want: options{accept: true, maxChildren: 3, maxPerEntry: 64, stopTimeout: 5 * time.Second}, rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-socket", "/s", "--", "-odd-conf", "prog"}, want: options{socket: "/s", maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second}, rest: []string{"virtuald", "-odd-conf", "prog"}},
		{args: []string{"virtuald", "-accept", "-idle-exit", "10m", "/c", "prog"}, want: options{accept: true, maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second, idleExit: 10 * time.Minute}, rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-idle-exit", "10m", "/c", "prog"}, err: true}, // per connection, nothing idles
		{args: []string{"virtuald", "-accept", "-idle-exit", "-1s", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-stop-timeout", "soon", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-max-per-entry", "0", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-frobnicate", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-socket"}, err: true},
		{args: []string{"virtuald", "-h"}, err: true},
	} {
		got, rest, err := parseOptions(c.args)
		if c.err {
			if err == nil {
				t.Errorf("%q: no error", c.args)
			}
			continue
		}
		if err != nil || got != c.want || !slices.Equal(rest, c.rest) {
			t.Errorf("%q: %+v %q %v, want %+v %q", c.args, got, rest, err, c.want, c.rest)
		}
	}
}

// Only systemd's socket-passing variables are taken out of a service's
// environment.
func TestWithoutListenVars(t *testing.T) {
	env := []string{"PATH=/bin", "LISTEN_PID=7", "LISTEN_FDS=1", "LISTEN_FDNAMES=c", "TCPLOCALIP=192.0.2.1", "LISTEN=kept"}
	if got := withoutListenVars(env); !slices.Equal(got, []string{"PATH=/bin", "TCPLOCALIP=192.0.2.1", "LISTEN=kept"}) {
		t.Errorf("got %q", got)
	}
}

// -h and --help print the usage on stdout and exit 0 (-h was taken for an
// option that needs a value).
func TestHelp(t *testing.T) {
	bin := testbed.Binaries(t)["virtuald"]
	for _, flag := range []string{"-h", "--help", "-help"} {
		out, err := exec.Command(bin, flag).Output()
		if err != nil || !strings.HasPrefix(string(out), "usage: virtuald ") {
			t.Errorf("virtuald %s: %q, %v", flag, out, err)
		}
	}
}
