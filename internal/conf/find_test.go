package conf

import (
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FindFile streams the file through a small buffer; it must answer
// exactly what Find answers on the whole text, whatever the text: random
// files of every kind of line, padded past the buffer so that lines cross
// its edges, lines longer than the buffer, and a NUL after the entry.
func TestFindFileAgreesWithFind(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	dir := t.TempDir()
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "11.0.0.1", "2001:db8::1", "2001:db8::2", "2001:db9::1", "::ffff:10.0.0.1"}
	pads := []string{"", strings.Repeat("# padding\n", 7000), strings.Repeat("10.9.9.9 /pad\n", 5000), strings.Repeat("x", 70000) + "\n", strings.Repeat("y", 5000) + "\n"}
	for i := 0; i < 300; i++ {
		text := pads[rng.Intn(len(pads))] + randomConf(rng) + pads[rng.Intn(len(pads))]
		if rng.Intn(10) == 0 {
			text += "10.0.0.7 /late\x00\n"
		}
		p := filepath.Join(dir, "conf")
		if err := writeFileMode(p, text, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			addr := netip.MustParseAddr(a)
			want, werr := Find(p, []byte(text), addr)
			got, gerr := FindFile(p, addr)
			if fmt.Sprint(werr) != fmt.Sprint(gerr) || (werr == nil && !sameMatch(got, want)) {
				t.Fatalf("file %d, %s: FindFile %s (%v), Find %s (%v)\n%.300q", i, a, describeMatch(got), gerr, describeMatch(want), werr, text)
			}
		}
	}
	os.Remove(filepath.Join(dir, "conf"))
}
