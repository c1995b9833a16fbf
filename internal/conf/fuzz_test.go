package conf

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser and checks what must hold
// for every input: no panic, errors that name a real line, canonical keys,
// valid entries with clean absolute roots, a canonical rendering that
// parses back to the same entries, and Find agreeing with Lookup.
// The corpus is kept in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"# This is a comment and so are blank lines\n\n# Format IP <SPACE> dir <NOSPACES>\n10.10.10.129 /virtual/foo.bar.com\n10.10.10.130 /virtual/bar.foo.com\n10.10.10.157 /virtual/boo.la.com\n",
		"10.10.10.129   /virtual/domain1.com\n10.10.10.130\t/virtual/domain2.com  user=ftp1 group=ftp1\n2001:db8::10   /virtual/domain3.com  user=2001\n10.20.0.0/24   /virtual/pool\ndefault        /\n",
		"10.0.0.1 /a\r\n10.0.0.1 /b\r\n::ffff:10.0.0.0/120 /c # x\n",
		"10.0.0.300 /a\nfe80::1%eth0 /b\n10.0.0.5/24 /c\n10.0.0.6 rel\n10.0.0.7 /a user=x user=y\n",
		"10.0.0.1 /a max=16 rate=50/s per-source=2\n10.0.0.2 /b rate=10/m\n10.0.0.3 /c max=0 rate=5/h per-source=x\n10.0.0.4 /d max=2 per-source=3\n",
		"\x7fELF\x02\x01\x01\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.conf", data)
		if err != nil {
			if !bytes.Contains(data, []byte{0}) {
				t.Fatalf("Parse refused a file without NUL: %v", err)
			}
			return
		}
		nlines := bytes.Count(data, []byte{'\n'}) + 1
		for _, e := range file.Errors {
			if e.Line < 1 || e.Line > nlines || e.File != "fuzz.conf" {
				t.Fatalf("error names no real line: %v", e)
			}
		}
		var canon strings.Builder
		probes := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")}
		for _, e := range file.All() {
			k, err := parseKey([]byte(e.Key))
			if err != nil || k.Kind != e.Kind || k.Prefix != e.Prefix || k.canonicalKey() != e.Key {
				t.Fatalf("key %q is not canonical: %v", e.Key, err)
			}
			if e.Kind != KeyDefault {
				probes = append(probes, e.Prefix.Addr())
			}
			if e.Err != nil {
				continue
			}
			if !strings.HasPrefix(e.Root, "/") || filepath.Clean(e.Root) != e.Root {
				t.Fatalf("valid entry with a bad root: %q", e.Root)
			}
			canon.WriteString(e.String() + "\n")
		}
		again := mustParse(t, canon.String())
		var valid []*Entry
		for _, e := range file.All() {
			if e.Err == nil {
				valid = append(valid, e)
			}
		}
		if again.Len() != len(valid) || len(again.Errors) != 0 {
			t.Fatalf("canonical form does not parse back:\n%s\nerrors: %v", canon.String(), errorStrings(again))
		}
		for i, e := range again.All() {
			if e.String() != valid[i].String() {
				t.Fatalf("round trip changed %q into %q", valid[i].String(), e.String())
			}
		}
		for _, a := range probes {
			got, err := Find("fuzz.conf", data, a)
			if err != nil {
				t.Fatal(err)
			}
			if want := file.Lookup(a); !sameMatch(got, want) {
				t.Fatalf("address %s: Find %s, Lookup %s", a, describeMatch(got), describeMatch(want))
			}
		}
	})
}

// FuzzJoinedLines checks, for any valid conf file and any of its line
// breaks, that joining the two lines around it (the break lost, or turned
// into a bare CR, a tab or a space) never serves an address from a less
// specific entry than the original file did: the joined line's hidden
// entry is refused instead. A comment swallows whatever is joined onto it
// without a CR, as in any line-based format, so joins onto a line holding
// '#' are left out except through a bare CR, which is always caught.
// The corpus is kept in testdata/fuzz/FuzzJoinedLines.
func FuzzJoinedLines(f *testing.F) {
	f.Add([]byte("10.0.0.2 /a\n10.0.0.3 /c\n10.0.0.0/24 /pool\ndefault /d\n"), uint(0), byte(0))
	f.Add([]byte("10.0.0.0/16 /b user=1\n10.0.0.0/24 /a\n10.0.0.9 /c\n"), uint(0), byte(3))
	f.Add([]byte("# comment\n2001:db8::/64 /p\n2001:db8::5 /q group=2\ndefault /\n"), uint(0), byte(1))
	joiners := []string{"", " ", "\t", "\r"}
	f.Fuzz(func(t *testing.T, data []byte, at uint, how byte) {
		orig, err := Parse("fuzz.conf", data)
		if err != nil || len(orig.Errors) > 0 {
			return // only valid files
		}
		breaks := []int{}
		for i, c := range data {
			if c == '\n' {
				breaks = append(breaks, i)
			}
		}
		if len(breaks) == 0 {
			return
		}
		i := breaks[int(at%uint(len(breaks)))]
		join := joiners[int(how)%len(joiners)]
		lineStart := bytes.LastIndexByte(data[:i], '\n') + 1
		if join != "\r" && bytes.IndexByte(data[lineStart:i], '#') >= 0 {
			return
		}
		joined := append(append(append([]byte{}, data[:i]...), join...), data[i+1:]...)
		after, err := Parse("fuzz.conf", joined)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range probeAddrs(orig) {
			before, now := orig.Lookup(a), after.Lookup(a)
			if now.Err != nil || before.Err != nil {
				continue
			}
			if lessSpecific(now, before) {
				t.Fatalf("joined at byte %d with %q: %s was served by %s (line %d), now by the less specific %s (line %d)",
					i, join, a, before.Entry.Key, before.Entry.Line, now.Entry.Key, now.Entry.Line)
			}
		}
	})
}

// probeAddrs are addresses whose answers a join could change: each
// entry's own, and the first and last of each prefix.
func probeAddrs(f *File) []netip.Addr {
	out := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")}
	for _, e := range f.All() {
		if e.Kind == KeyDefault {
			continue
		}
		out = append(out, e.Prefix.Addr(), lastAddr(e.Prefix))
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// lessSpecific reports whether match a comes from a less specific entry
// than b: exact beats any prefix, a longer prefix a shorter, any prefix
// the default.
func lessSpecific(a, b Match) bool {
	rank := func(m Match) int {
		switch m.Rule {
		case RuleExact:
			return 1000
		case RulePrefix:
			return m.Entry.Prefix.Bits()
		}
		return -1
	}
	return rank(a) < rank(b)
}
