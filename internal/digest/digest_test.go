package digest

import (
	"testing"

	"github.com/virtuald/virtuald/internal/conf"
)

func mustParse(t *testing.T, text string) *conf.File {
	t.Helper()
	f, err := conf.Parse("test.conf", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The digest follows the meaning: the same entries however written give
// one digest, any change to what an address gets gives another.
func TestDigest(t *testing.T) {
	base := "10.0.0.1 /a user=ftp1 group=ftp1\n2001:db8::1 /b\n10.20.0.0/24 /pool\ndefault /\n"
	same := []string{
		"# host b's copy\n\ndefault   /\n\t2001:DB8::1\t/b   # customer b\n10.20.0.0/24 /pool\r\n  10.0.0.1  /a  user=ftp1   group=ftp1\n",
		base + "10.0.0.1 /other\n", // a duplicate: the first line wins, as before
	}
	other := []string{
		"10.0.0.1 /a user=ftp1\n2001:db8::1 /b\n10.20.0.0/24 /pool\ndefault /\n",            // no group=
		"10.0.0.1 /a user=ftp1 group=ftp1\n2001:db8::1 /c\n10.20.0.0/24 /pool\ndefault /\n", // another root
		"10.0.0.1 /a user=ftp1 group=ftp1\n2001:db8::1 /b\n10.20.0.0/25 /pool\ndefault /\n", // another prefix
		"10.0.0.1 /a user=ftp1 group=ftp1\n2001:db8::1 /b\n10.20.0.0/24 /pool\n",            // no default
		base + "10.0.0.300 /x\n", // catch-alls suspended
		"10.0.0.1 /a user=ftp1 group=ftp1\n2001:db8::1 b\n10.20.0.0/24 /pool\ndefault /\n",               // an invalid entry
		"10.0.0.1 /a user=ftp1 group=ftp1\n2001:db8::1 /b\n10.20.0.0/24 /pool\ndefault /\n10.0.0.2 /a\n", // one more
	}
	want := Of(mustParse(t, base))
	for _, text := range same {
		if got := Of(mustParse(t, text)); got != want {
			t.Errorf("%q: digest %s, want %s as for\n%s", text, got, want, base)
		}
	}
	seen := map[string]string{want: base}
	for _, text := range other {
		got := Of(mustParse(t, text))
		if prev, ok := seen[got]; ok {
			t.Errorf("%q and %q mean different things but share the digest %s", text, prev, got)
		}
		seen[got] = text
	}
}
