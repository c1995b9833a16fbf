package conf

import (
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mustParse(t testing.TB, text string) *File {
	t.Helper()
	f, err := Parse("test.conf", []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

func errorStrings(f *File) []string {
	var s []string
	for _, e := range f.Errors {
		s = append(s, e.Error())
	}
	return s
}

func TestParse(t *testing.T) {
	type entry struct{ key, root, user, group, err string }
	tests := []struct {
		name    string
		text    string
		entries []entry
		errors  []string // each a substring of the error at the same index
	}{
		{
			name:    "seed format",
			text:    "# This is a comment and so are blank lines\n\n# Format IP <SPACE> dir <NOSPACES>\n10.10.10.129 /virtual/foo.bar.com\n",
			entries: []entry{{key: "10.10.10.129", root: "/virtual/foo.bar.com"}},
		},
		{
			name:    "tabs, runs of spaces, CRLF, leading and trailing blanks",
			text:    "  10.0.0.1\t \t/a  \r\n\t10.0.0.2   /b\t\r\n",
			entries: []entry{{key: "10.0.0.1", root: "/a"}, {key: "10.0.0.2", root: "/b"}},
		},
		{
			name:    "last line without newline keeps its last character",
			text:    "10.0.0.1 /virtual/a",
			entries: []entry{{key: "10.0.0.1", root: "/virtual/a"}},
		},
		{
			name:    "trailing comment",
			text:    "10.0.0.1 /a # customer a\n   # indented comment\n",
			entries: []entry{{key: "10.0.0.1", root: "/a"}},
		},
		{
			name: "keys are canonical",
			text: "2001:DB8:0:0::10 /v6\n::ffff:10.0.0.9 /mapped\n10.20.0.0/24 /pool\n::ffff:10.30.0.0/112 /mappedpool\ndefault /\n",
			entries: []entry{
				{key: "2001:db8::10", root: "/v6"},
				{key: "10.0.0.9", root: "/mapped"},
				{key: "10.20.0.0/24", root: "/pool"},
				{key: "10.30.0.0/16", root: "/mappedpool"},
				{key: "default", root: "/"},
			},
		},
		{
			name:    "user and group",
			text:    "10.0.0.1 /a user=ftp1 group=ftp1\n10.0.0.2 /b user=2001\n10.0.0.3 /c group=www-data\n",
			entries: []entry{{key: "10.0.0.1", root: "/a", user: "ftp1", group: "ftp1"}, {key: "10.0.0.2", root: "/b", user: "2001"}, {key: "10.0.0.3", root: "/c", group: "www-data"}},
		},
		{
			name:    "duplicate keeps the first",
			text:    "10.0.0.1 /first\n10.0.0.1 /second\n::ffff:10.0.0.1 /third\ndefault /\ndefault /other\n",
			entries: []entry{{key: "10.0.0.1", root: "/first"}, {key: "default", root: "/"}},
			errors:  []string{"test.conf:2: duplicate key 10.0.0.1: line 1 already maps it", "test.conf:3: duplicate key 10.0.0.1", "test.conf:5: duplicate key default: line 4"},
		},
		{
			name: "bad roots make the entry invalid",
			text: "10.0.0.1 virtual/a\n10.0.0.2 /virtual/../etc\n10.0.0.3 /virtual/a/\n10.0.0.4\n10.0.0.5 /a\x01b\n",
			entries: []entry{
				{key: "10.0.0.1", root: "virtual/a", err: "is not an absolute path"},
				{key: "10.0.0.2", root: "/virtual/../etc", err: "is not a clean path (it would be /etc)"},
				{key: "10.0.0.3", root: "/virtual/a/", err: "is not a clean path"},
				{key: "10.0.0.4", err: "no root directory"},
				{key: "10.0.0.5", root: "/a\x01b", err: "control character"},
			},
			errors: []string{"test.conf:1: 10.0.0.1: root", "test.conf:2:", "test.conf:3:", "test.conf:4: 10.0.0.4: no root directory", "test.conf:5:"},
		},
		{
			name: "bad options make the entry invalid",
			text: "10.0.0.1 /a user=\n10.0.0.2 /a usr=x\n10.0.0.3 /a user=x user=y\n10.0.0.4 /my site\n10.0.0.5 /a user=-rf\n10.0.0.6 /a group=4294967295\n10.0.0.7 /a user=a$b\n",
			entries: []entry{
				{key: "10.0.0.1", root: "/a", err: "empty value"},
				{key: "10.0.0.2", root: "/a", err: `unknown option "usr"`},
				{key: "10.0.0.3", root: "/a", err: "user= given twice"},
				{key: "10.0.0.4", root: "/my", err: "paths with spaces are not supported"},
				{key: "10.0.0.5", root: "/a", err: "cannot start with '-'"},
				{key: "10.0.0.6", root: "/a", err: "out of range"},
				{key: "10.0.0.7", root: "/a", err: "cannot hold '$'"},
			},
			errors: []string{"test.conf:1:", "test.conf:2:", "test.conf:3:", "test.conf:4:", "test.conf:5:", "test.conf:6:", "test.conf:7:"},
		},
		{
			name: "unreadable keys are reported and skipped",
			text: "10.0.0.300 /a\n10.0.0.01 /b\nfe80::1%eth0 /c\n10.20.0.5/24 /d\nDEFAULT /e\n10.0.0.1 /ok\n",
			entries: []entry{
				{key: "10.0.0.1", root: "/ok"},
			},
			errors: []string{
				`test.conf:1: key "10.0.0.300" is not an address, a prefix or default`,
				`test.conf:2: key "10.0.0.01"`,
				"test.conf:3: key \"fe80::1%eth0\": zoned addresses are not supported",
				"test.conf:4: key 10.20.0.5/24 has host bits set; the prefix is 10.20.0.0/24",
				`test.conf:5: key "DEFAULT"`,
			},
		},
		{
			name:   "overlong line",
			text:   "10.0.0.1 /" + strings.Repeat("a", MaxLine) + "\n",
			errors: []string{"test.conf:1: line is 4106 bytes long; the limit is 4096"},
		},
		{
			name: "empty file",
			text: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, tt.text)
			var got []entry
			for _, e := range f.All() {
				g := entry{key: e.Key, root: e.Root, user: e.User, group: e.Group}
				if e.Err != nil {
					g.err = e.Err.Error()
				}
				got = append(got, g)
			}
			if len(got) != len(tt.entries) {
				t.Fatalf("entries:\n got %q\nwant %q", got, tt.entries)
			}
			for i := range got {
				w, g := tt.entries[i], got[i]
				if g.key != w.key || g.root != w.root || g.user != w.user || g.group != w.group ||
					(w.err == "") != (g.err == "") || !strings.Contains(g.err, w.err) {
					t.Errorf("entry %d:\n got %q\nwant %q", i, g, w)
				}
			}
			errs := errorStrings(f)
			if len(errs) != len(tt.errors) {
				t.Fatalf("errors:\n got %q\nwant %q", errs, tt.errors)
			}
			for i := range errs {
				if !strings.Contains(errs[i], tt.errors[i]) {
					t.Errorf("error %d: got %q, want it to hold %q", i, errs[i], tt.errors[i])
				}
			}
		})
	}
}

func TestParseRefusesNUL(t *testing.T) {
	_, err := Parse("x.conf", []byte("10.0.0.1 /a\n10.0.0.2 /b\x00\n"))
	if err == nil || err.Error() != "x.conf:2: holds a NUL byte: this is not a text conf file" {
		t.Fatalf("got %v", err)
	}
}

// The seed's own example, and the v2.1 HOWTO's form with default last.
func TestSeedDocument(t *testing.T) {
	const seed = `# This is a comment and so are blank lines

# Format IP <SPACE> dir <NOSPACES>
10.10.10.129 /virtual/foo.bar.com
10.10.10.130 /virtual/bar.foo.com
10.10.10.157 /virtual/boo.la.com
`
	for _, withDefault := range []bool{false, true} {
		text := seed
		if withDefault {
			text += "default /\n"
		}
		f := mustParse(t, text)
		if len(f.Errors) != 0 {
			t.Fatalf("errors: %v", errorStrings(f))
		}
		for addr, root := range map[string]string{
			"10.10.10.129": "/virtual/foo.bar.com",
			"10.10.10.130": "/virtual/bar.foo.com",
			"10.10.10.157": "/virtual/boo.la.com",
		} {
			m := f.Lookup(netip.MustParseAddr(addr))
			if m.Err != nil || m.Entry.Root != root || m.Rule != RuleExact {
				t.Errorf("default=%v %s: got %+v, want %s", withDefault, addr, m, root)
			}
		}
		m := f.Lookup(netip.MustParseAddr("10.10.10.1"))
		if withDefault && (m.Err != nil || m.Entry.Root != "/" || m.Rule != RuleDefault) {
			t.Errorf("unlisted address with default: %+v", m)
		}
		if !withDefault && (m.Err == nil || m.Rule != RuleNone) {
			t.Errorf("unlisted address without default must be refused: %+v", m)
		}
	}
}

func TestLookup(t *testing.T) {
	f := mustParse(t, `default /default
10.20.0.0/16 /pool16
10.20.0.0/24 /pool24
10.20.0.7 /exact
10.20.0.9 bad-root
10.30.0.0/24 relative
2001:db8::/32 /v6pool
2001:db8::10 /v6exact
0.0.0.0/0 /everything4
`)
	tests := []struct {
		addr, root string
		rule       Rule
		err        string
	}{
		{"10.20.0.7", "/exact", RuleExact, ""},
		{"::ffff:10.20.0.7", "/exact", RuleExact, ""},
		{"10.20.0.8", "/pool24", RulePrefix, ""},
		{"10.20.1.8", "/pool16", RulePrefix, ""},
		{"10.99.0.1", "/everything4", RulePrefix, ""},
		{"2001:db8::10", "/v6exact", RuleExact, ""},
		{"2001:db8::11", "/v6pool", RulePrefix, ""},
		{"2001:db9::1", "/default", RuleDefault, ""},
		// An invalid best match refuses; it never falls through to a
		// less specific entry.
		{"10.20.0.9", "bad-root", RuleExact, "entry 10.20.0.9 is invalid"},
		{"10.30.0.1", "relative", RulePrefix, "entry 10.30.0.0/24 is invalid"},
	}
	for _, tt := range tests {
		m := f.Lookup(netip.MustParseAddr(tt.addr))
		if m.Entry == nil || m.Entry.Root != tt.root || m.Rule != tt.rule {
			t.Errorf("%s: got %+v, want root %s by %s", tt.addr, m, tt.root, tt.rule)
			continue
		}
		if (tt.err == "") != (m.Err == nil) || m.Err != nil && !strings.Contains(m.Err.Error(), tt.err) {
			t.Errorf("%s: error %v, want %q", tt.addr, m.Err, tt.err)
		}
	}
}

// A line whose key cannot be read may have been meant for any address, so
// the catch-all rules refuse while it is there; exact entries still serve.
func TestUnreadableLineSuspendsCatchAlls(t *testing.T) {
	f := mustParse(t, "10.0.0.1 /a\n10.0.0.2x /typo\n10.9.0.0/16 /pool\ndefault /\n")
	if m := f.Lookup(netip.MustParseAddr("10.0.0.1")); m.Err != nil {
		t.Errorf("exact entry refused: %v", m.Err)
	}
	for _, a := range []string{"10.0.0.2", "10.9.0.1"} {
		m := f.Lookup(netip.MustParseAddr(a))
		if m.Err == nil || !strings.Contains(m.Err.Error(), "suspended because line 2 could not be read") {
			t.Errorf("%s: got %+v, want the catch-all suspended", a, m)
		}
	}
}

// seedLookup is the seed's iptodir, in Go: the first line whose text
// before the first space equals the address; '#' lines and empty lines
// skipped. (Its v2.1 edition adds: a line "default DIR" matches anything.)
func seedLookup(text, addr string) (string, bool) {
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		key, dir, ok := strings.Cut(line, " ")
		if !ok {
			return "", false
		}
		if key == addr || key == "default" {
			return dir, true
		}
	}
	return "", false
}

// Every file the seed accepts keeps its meaning: for random seed-format
// files (including duplicates, comments, blank lines and a default last)
// the lookup gives the seed's directory for every address.
func TestSeedEquivalence(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 500; i++ {
		var b strings.Builder
		n := rng.Intn(30)
		for j := 0; j < n; j++ {
			switch rng.Intn(6) {
			case 0:
				b.WriteString("# comment " + fmt.Sprint(j) + "\n")
			case 1:
				b.WriteString("\n")
			default:
				fmt.Fprintf(&b, "10.0.0.%d /virtual/site%d.example\n", rng.Intn(20), j)
			}
		}
		if rng.Intn(2) == 0 {
			b.WriteString("default /\n")
		}
		text := b.String()
		f := mustParse(t, text)
		for k := 0; k < 22; k++ {
			addr := fmt.Sprintf("10.0.0.%d", k)
			want, ok := seedLookup(text, addr)
			m := f.Lookup(netip.MustParseAddr(addr))
			if !ok {
				if m.Err == nil {
					t.Fatalf("file:\n%s\n%s: the seed refuses, we serve %s", text, addr, m.Entry.Root)
				}
				continue
			}
			if m.Err != nil || m.Entry.Root != want {
				t.Fatalf("file:\n%s\n%s: the seed serves %s, we give %+v", text, addr, want, m)
			}
		}
	}
}

func TestLoadChecksTheFile(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/c"
	write := func(perm uint32) {
		if err := writeFileMode(p, "10.0.0.1 /\n", perm); err != nil {
			t.Fatal(err)
		}
	}
	write(0o644)
	if f, err := Load(p); err != nil || f.Len() != 1 {
		t.Fatalf("Load: %v", err)
	}
	write(0o664)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "is writable by group or others (mode 0664)") {
		t.Fatalf("group-writable conf: %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "is not a regular file") {
		t.Fatalf("directory: %v", err)
	}
	if _, err := Load(dir + "/missing"); err == nil || err.Error() != dir+"/missing: cannot open: no such file or directory" {
		t.Fatalf("missing: %v", err)
	}
}

func genConf(n int) (string, []netip.Addr) {
	var b strings.Builder
	addrs := make([]netip.Addr, 0, n)
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		addrs = append(addrs, a)
		fmt.Fprintf(&b, "%s /virtual/site%d user=%d\n", a, i, 1000+i%1000)
	}
	b.WriteString("172.16.0.0/12 /virtual/pool\ndefault /\n")
	return b.String(), addrs
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		text, addrs := genConf(n)
		f := mustParse(b, text)
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if m := f.Lookup(addrs[i%len(addrs)]); m.Err != nil {
					b.Fatal(m.Err)
				}
			}
		})
		b.Run(fmt.Sprintf("entries=%d/default", n), func(b *testing.B) {
			a := netip.MustParseAddr("192.0.2.1")
			for i := 0; i < b.N; i++ {
				if m := f.Lookup(a); m.Rule != RuleDefault {
					b.Fatal(m)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		text, _ := genConf(n)
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for i := 0; i < b.N; i++ {
				mustParse(b, text)
			}
		})
	}
}

func writeFileMode(p, text string, perm uint32) error {
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		return err
	}
	return os.Chmod(p, os.FileMode(perm))
}

// randomConf makes a conf text mixing good and bad lines of every kind,
// with addresses drawn from a small pool so that lines collide.
func randomConf(rng *rand.Rand) string {
	keys := []string{"10.0.0.1", "10.0.0.2", "::ffff:10.0.0.2", "10.0.0.0/24", "10.0.0.0/16", "10.0.0.0/8",
		"0.0.0.0/0", "2001:db8::1", "2001:db8::/64", "2001:db8::/32", "::/0", "default", "10.0.0.1/32",
		"10.0.0.300", "10.0.0.5/24", "garbage", "fe80::1%lo"}
	rests := []string{"/a", "/b user=1", "/c user=x group=y", "relative", "/d/../e", "", "/f bogus", "/g user="}
	var b strings.Builder
	for n := rng.Intn(12); n > 0; n-- {
		switch rng.Intn(10) {
		case 0:
			b.WriteString("# comment\n")
		case 1:
			b.WriteString(" \t\r\n")
		default:
			fmt.Fprintf(&b, "%s %s\n", keys[rng.Intn(len(keys))], rests[rng.Intn(len(rests))])
		}
	}
	return b.String()
}

// Find (virtuald's per-connection path) and Parse+Lookup (the daemon's)
// must give the same answer for every file and address.
func TestFindEqualsLookup(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.1.0.1", "11.0.0.1",
		"2001:db8::1", "2001:db8::2", "2001:db8:1::1", "2001:db9::1", "::ffff:10.0.0.1"}
	for i := 0; i < 3000; i++ {
		text := randomConf(rng)
		f := mustParse(t, text)
		for _, a := range addrs {
			addr := netip.MustParseAddr(a)
			want := f.Lookup(addr)
			got, err := Find("test.conf", []byte(text), addr)
			if err != nil {
				t.Fatal(err)
			}
			if !sameMatch(got, want) {
				t.Fatalf("file:\n%s\naddress %s:\nFind   %s\nLookup %s", text, a, describeMatch(got), describeMatch(want))
			}
		}
	}
}

func sameMatch(a, b Match) bool {
	if a.Rule != b.Rule || (a.Err == nil) != (b.Err == nil) || (a.Entry == nil) != (b.Entry == nil) {
		return false
	}
	if a.Err != nil && a.Err.Error() != b.Err.Error() {
		return false
	}
	if a.Entry != nil && (a.Entry.String() != b.Entry.String() || a.Entry.Line != b.Entry.Line) {
		return false
	}
	return true
}

func describeMatch(m Match) string {
	s := m.Rule.String()
	if m.Entry != nil {
		s += fmt.Sprintf(" line %d %q", m.Entry.Line, m.Entry.String())
	}
	if m.Err != nil {
		s += " err: " + m.Err.Error()
	}
	return s
}

// BenchmarkFind: the address on the last entry line (the seed's worst
// case, and the inetd benchmark's), and one that only default serves
// (the whole file's rules must run).
func BenchmarkFind(b *testing.B) {
	for _, n := range []int{10, 1000, 10000, 100000} {
		text, addrs := genConf(n)
		data := []byte(text)
		b.Run(fmt.Sprintf("entries=%d/last", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if m, err := Find("bench.conf", data, addrs[len(addrs)-1]); err != nil || m.Err != nil || m.Rule != RuleExact {
					b.Fatal(err, m.Err)
				}
			}
		})
		b.Run(fmt.Sprintf("entries=%d/default", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if m, err := Find("bench.conf", data, netip.MustParseAddr("192.0.2.1")); err != nil || m.Rule != RuleDefault {
					b.Fatal(err, m.Err)
				}
			}
		})
	}
}

// BenchmarkFindFile is virtuald's file path as it runs per connection
// without the daemon: the file streamed from disk (the page cache), the
// address on its last entry line, at 50,000 entries (BenchmarkInetd's
// largest).
func BenchmarkFindFile(b *testing.B) {
	text, addrs := genConf(50000)
	path := filepath.Join(b.TempDir(), "bench.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if m, err := FindFile(path, addrs[len(addrs)-1]); err != nil || m.Rule != RuleExact {
			b.Fatal(err, m.Err)
		}
	}
}

// A line break lost between two entries, or replaced by a bare CR, a tab
// or a space, joins them into one line: the first becomes invalid and the
// second's address disappears. It must then be refused, never served from
// a catch-all (prefix or default) that the lost line overrode.
func TestJoinedLinesSuspendCatchAlls(t *testing.T) {
	for name, join := range map[string]string{"bare CR": "\r", "tab": "\t", "space": " ", "lost newline": ""} {
		t.Run(name, func(t *testing.T) {
			text := "10.0.0.2 /a" + join + "10.0.0.3 /c\n10.0.0.0/24 /pool\ndefault /d\n"
			f := mustParse(t, text)
			for _, a := range []string{"10.0.0.3", "10.0.0.9", "192.0.2.1"} {
				m := f.Lookup(netip.MustParseAddr(a))
				if m.Err == nil || !strings.Contains(m.Err.Error(), "is suspended because line 1") {
					t.Errorf("%s: served from %+v (%v), want refused: line 1 joins two entries", a, m.Entry, m.Err)
				}
				fm, err := Find("test.conf", []byte(text), netip.MustParseAddr(a))
				if err != nil || fmt.Sprint(fm.Err) != fmt.Sprint(m.Err) {
					t.Errorf("%s: Find says %v, Lookup %v", a, fm.Err, m.Err)
				}
			}
			if len(f.Errors) != 1 || !strings.Contains(f.Errors[0].Msg, "prefix and default entries are suspended") {
				t.Errorf("check would not say why: %v", f.Errors)
			}
		})
	}
	// A bare CR inside a comment hides the entry after it.
	f := mustParse(t, "# moved\r10.0.0.3 /c\ndefault /d\n")
	if m := f.Lookup(netip.MustParseAddr("10.0.0.3")); m.Err == nil {
		t.Errorf("a CR inside a comment: 10.0.0.3 served from %+v", m.Entry)
	}
	// What is not a joined line keeps the catch-alls: CRLF line ends, an
	// unknown option (a typo is not an address), a commented-out entry.
	for _, text := range []string{
		"10.0.0.2 /a\r\ndefault /d\r\n",
		"10.0.0.2 /a usr=ftp\ndefault /d\n",
		"#10.0.0.3 /c\n10.0.0.2 /a # 10.0.0.4 /x\ndefault /d\n",
	} {
		f := mustParse(t, text)
		if m := f.Lookup(netip.MustParseAddr("192.0.2.1")); m.Err != nil {
			t.Errorf("%q: default suspended: %v", text, m.Err)
		}
	}
}

// Racy: a read that began within a timestamp granularity of the file's
// last change cannot be told apart, by status, from a later same-size
// write in the same tick.
func TestRacy(t *testing.T) {
	ctime := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	st := unix.Stat_t{Ctim: unix.NsecToTimespec(ctime.UnixNano()), Mtim: unix.NsecToTimespec(ctime.UnixNano())}
	for _, c := range []struct {
		after time.Duration
		racy  bool
	}{{-time.Second, true}, {0, true}, {4 * time.Millisecond, true}, {49 * time.Millisecond, true}, {50 * time.Millisecond, false}, {time.Hour, false}} {
		if got := Racy(&st, ctime.Add(c.after)); got != c.racy {
			t.Errorf("read %v after the change: racy=%v, want %v", c.after, got, c.racy)
		}
	}
	// Whole-second timestamps: a file system of coarse granularity.
	whole := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st.Ctim, st.Mtim = unix.NsecToTimespec(whole.UnixNano()), unix.NsecToTimespec(whole.UnixNano())
	if !Racy(&st, whole.Add(1500*time.Millisecond)) || Racy(&st, whole.Add(2*time.Second)) {
		t.Errorf("whole-second timestamps: racy window is not 2s")
	}
}

// Whoever can rename a file in a directory of the conf file's path
// chooses its content: every directory must be trusted, as for roots.
func TestReadChecksTheDirectories(t *testing.T) {
	base := t.TempDir() // under /tmp: sticky, and owned by the caller
	good := filepath.Join(base, "good")
	os.Mkdir(good, 0o755)
	os.Chmod(good, 0o755)
	writeFileMode(filepath.Join(good, "conf"), "10.0.0.1 /\n", 0o644)
	if _, err := Read(filepath.Join(good, "conf")); err != nil {
		t.Fatalf("a conf in a trusted directory under sticky /tmp: %v", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	writeFileMode(filepath.Join(open, "conf"), "10.0.0.1 /\n", 0o644)
	if _, err := Read(filepath.Join(open, "conf")); err == nil || !strings.Contains(err.Error(), open+" is writable by group or others (mode 0777)") {
		t.Errorf("a conf in a world-writable directory: %v", err)
	}
	os.Symlink(good, filepath.Join(base, "link"))
	if _, err := Read(filepath.Join(base, "link", "conf")); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("a conf under a symlinked directory: %v", err)
	}
	os.Symlink(filepath.Join(good, "conf"), filepath.Join(good, "conf-link"))
	if _, err := Read(filepath.Join(good, "conf-link")); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("a conf that is a symlink: %v", err)
	}
}
