package conf

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// streamExact (FindFile's first pass, per connection without the daemon)
// finds the line that findExact finds in the whole text, wherever the
// line falls against its reads, or says there is none, so that FindFile
// never goes the slow way (the whole file read and parsed) for an
// address a line names. Only lines that could hold the key are parsed:
// the cases are the ways a key can be missed by that shortcut.
func TestStreamExact(t *testing.T) {
	filler := strings.Repeat("10.9.9.9 /virtual/filler\n", 3*streamBuf/25) // several reads' worth
	long := "10.0.0.1 /" + strings.Repeat("x", streamBuf+10) + "\n"        // longer than a read: never an entry
	for _, c := range []struct {
		name, text, addr string
		line             int // 0: none
	}{
		{"first line", "10.0.0.1 /a\n" + filler, "10.0.0.1", 1},
		{"after reads, more follow", filler + "10.0.0.1 /a\n" + filler, "10.0.0.1", 3*streamBuf/25 + 1},
		{"last line without a break", filler + "10.0.0.1 /a", "10.0.0.1", 3*streamBuf/25 + 1},
		{"a longer address first", "10.0.0.10 /b\n110.0.0.1 /c\n10.0.0.1 /a\n", "10.0.0.1", 3},
		{"leading blanks", "10.0.0.2 /b\n \t10.0.0.1 /a\n", "10.0.0.1", 2},
		{"IPv4-mapped key", "10.0.0.2 /b\n::ffff:10.0.0.1 /a\n", "10.0.0.1", 2},
		{"IPv6 in capitals", "2001:db8::2 /b\n2001:DB8::1 /a\n", "2001:db8::1", 2},
		{"colon in a path before", "10.0.0.2 /b:c\n10.0.0.1 /a\n", "10.0.0.1", 2},
		{"comment", "#10.0.0.1 /b\n10.0.0.1 /a\n", "10.0.0.1", 2},
		{"after a line too long", long + "10.0.0.1 /a\n", "10.0.0.1", 2},
		{"none", filler, "10.0.0.1", 0},
		{"a NUL after it", "10.0.0.1 /a\n" + filler + "\x00\n", "10.0.0.1", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "conf")
			if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			addr := netip.MustParseAddr(c.addr)
			e, err := streamExact(fd, addr)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.line == 0 && e != nil:
				t.Errorf("found line %d, want none", e.Line)
			case c.line != 0 && (e == nil || e.Line != c.line || e.Root != "/a"):
				t.Errorf("found %+v, want line %d", e, c.line)
			}
			if !strings.Contains(c.text, "\x00") {
				if w := findExact([]byte(c.text), addr); (w == nil) != (e == nil) || w != nil && w.Line != e.Line {
					t.Errorf("findExact says %+v", w)
				}
			}
		})
	}
}
