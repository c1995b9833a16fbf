package relay

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFormat(t *testing.T) {
	for _, c := range []struct{ label, in, want string }{
		// glibc's syslog(3): the priority kept, its timestamp dropped.
		{"192.0.2.1", "<30>Nov 29 23:59:00 in.ftpd[42]: connect from x", "<30>virtuald[192.0.2.1]: in.ftpd[42]: connect from x"},
		{"192.0.2.1", "<13>Nov  9 03:04:05 app: hi\n", "<13>virtuald[192.0.2.1]: app: hi"},
		// No header: user.notice, as syslog daemons read it.
		{"k", "plain text", "<13>virtuald[k]: plain text"},
		// kern (facility 0) is the kernel's; crit becomes err.
		{"k", "<2>panic", "<11>virtuald[k]: panic"},
		// What a tenant may not claim: emerg (to every terminal), alert,
		// crit, and the host's security and log facilities.
		{"k", "<0>wall", "<11>virtuald[k]: wall"},
		{"k", "<80>forged", "<11>virtuald[k]: forged"},   // authpriv.emerg
		{"k", "<38>su: ok", "<14>virtuald[k]: su: ok"},   // auth.info
		{"k", "<43>x", "<11>virtuald[k]: x"},             // syslog.err
		{"k", "<105>x", "<11>virtuald[k]: x"},            // log audit (13).alert
		{"k", "<25>mail", "<27>virtuald[k]: mail"},       // mail.alert
		{"k", "<134>local0", "<134>virtuald[k]: local0"}, // local0.info kept
		{"k", "<30>daemon", "<30>virtuald[k]: daemon"},   // daemon.info kept
		// Line and paragraph separators and bidirectional overrides are
		// escaped: the line reads as written.
		{"k", "a\u2028b\u2029c\u202ed\u2066e\u200ff", "<13>virtuald[k]: a\\xe2\\x80\\xa8b\\xe2\\x80\\xa9c\\xe2\\x80\\xaed\\xe2\\x81\\xa6e\\xe2\\x80\\x8ff"},
		{"k", "<999>x", "<13>virtuald[k]: <999>x"},
		// A forged header stays in the text, after the relay's own; a
		// line break cannot start a line of the tenant's making.
		{"192.0.2.1", "<13>virtuald[192.0.2.2]: x\n<13>sshd[1]: root login", "<13>virtuald[192.0.2.1]: virtuald[192.0.2.2]: x\\x0a<13>sshd[1]: root login"},
		{"k", "esc\x1b[31mred\x7f\xc2\x9b \\ \xff ok é", "<13>virtuald[k]: esc\\x1b[31mred\\x7f\\xc2\\x9b \\x5c \\xff ok é"},
	} {
		if got := string(Format(c.label, []byte(c.in))); got != c.want {
			t.Errorf("Format(%q, %q)\n got %q\nwant %q", c.label, c.in, got, c.want)
		}
	}
	long := Format("k", bytes.Repeat([]byte("\x01"), 100000))
	if len(long) > maxBody+64 || !strings.HasSuffix(string(long), "...") {
		t.Errorf("a long message gave %d bytes", len(long))
	}
}

// FuzzFormat: whatever a tenant sends, the relayed line starts with the
// relay's header for its label, is one line of printable UTF-8, and is
// bounded.
func FuzzFormat(f *testing.F) {
	f.Add([]byte("<30>Nov 29 23:59:00 in.ftpd[42]: hi"))
	f.Add([]byte("<13>virtuald[192.0.2.2]: x\n<1>y"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := Format("192.0.2.1", msg)
		_, rest, ok := bytes.Cut(out, []byte(">virtuald[192.0.2.1]: "))
		if !ok || out[0] != '<' || len(out) > maxBody+64 || !utf8.Valid(out) {
			t.Fatalf("Format(%q) = %q", msg, out)
		}
		pri, _ := strconv.Atoi(string(out[1:bytes.IndexByte(out, '>')]))
		if f := pri >> 3; pri&7 < severityErr || f == 0 || f == 4 || f == 5 || f == 10 || f >= 12 && f <= 15 {
			t.Fatalf("Format(%q) claims priority %d", msg, pri)
		}
		for _, r := range string(rest) {
			if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || reordering(r) {
				t.Fatalf("Format(%q) holds %U: %q", msg, r, out)
			}
		}
	})
}
