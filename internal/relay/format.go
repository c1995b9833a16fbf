package relay

import (
	"strconv"
	"unicode/utf8"
)

// Format makes the datagram the relay sends to the host's syslog for
// msg, which a program inside the root labelled label sent to its
// dev/log: "<PRI>virtuald[LABEL]: TEXT". The header is the relay's own,
// so the sender cannot pass for another root or for the host: it can
// choose only the severity and facility, within what a tenant may claim
// (clamp), and its text, whose own header (priority, the RFC 3164
// timestamp) is dropped and whose control characters, invalid UTF-8,
// backslashes, line and paragraph separators and bidirectional overrides
// are escaped as \xNN, so that the line the host logs ends where the
// relay says, holds no terminal escapes and reads in the order it was
// written. The text is cut at maxBody bytes.
func Format(label string, msg []byte) []byte {
	pri, rest := priority(msg)
	pri = clamp(pri)
	rest = withoutTimestamp(rest)
	for len(rest) > 0 && (rest[len(rest)-1] == '\n' || rest[len(rest)-1] == 0) {
		rest = rest[:len(rest)-1]
	}
	b := make([]byte, 0, 32+len(label)+min(len(rest)+16, maxBody+8))
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(pri), 10)
	b = append(b, ">virtuald["...)
	b = append(b, label...)
	b = append(b, "]: "...)
	start := len(b)
	for len(rest) > 0 {
		if len(b)-start >= maxBody {
			b = append(b, "..."...)
			break
		}
		r, size := utf8.DecodeRune(rest)
		switch {
		case r == utf8.RuneError && size <= 1, r < ' ', r == 0x7f, r >= 0x80 && r < 0xa0, r == '\\', reordering(r):
			for _, c := range rest[:size] {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			}
		default:
			b = append(b, rest[:size]...)
		}
		rest = rest[size:]
	}
	return b
}

const hex = "0123456789abcdef"

// reordering reports whether r breaks a line or changes the order text
// is shown in: U+2028 and U+2029 (line and paragraph separators), the
// bidirectional embeddings, overrides and isolates (U+202A-U+202E,
// U+2066-U+2069) and marks (U+200E, U+200F, U+061C). A tenant could
// otherwise make its line read as something else in a terminal or a log
// viewer.
func reordering(r rune) bool {
	return r == 0x2028 || r == 0x2029 || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 ||
		r == 0x200e || r == 0x200f || r == 0x061c
}

// Syslog facilities and severities (RFC 5424) that clamp names.
const (
	facilityUser = 1
	severityErr  = 3
)

// clamp limits the priority a tenant's message may claim. The facilities
// of the kernel and of the host's own security and log system (kern,
// auth, syslog, authpriv, and 12-15: ntp, security, console, clock)
// become user: journald and rsyslog route them to the host's
// authentication and console logs, which a tenant must not write to. The
// severities emerg, alert and crit become err: journald and rsyslog send
// emerg to every logged-in terminal, and alert and crit page people.
func clamp(pri int) int {
	facility, severity := pri>>3, pri&7
	switch facility {
	case 0, 4, 5, 10, 12, 13, 14, 15:
		facility = facilityUser
	}
	return facility<<3 | max(severity, severityErr)
}

// priority reads a "<PRI>" header (0 to 191), or gives user.notice (13)
// when there is none, as syslog daemons do.
func priority(msg []byte) (int, []byte) {
	if len(msg) < 3 || msg[0] != '<' {
		return 13, msg
	}
	n := 0
	for i := 1; i < len(msg) && i <= 4; i++ {
		c := msg[i]
		switch {
		case c == '>' && i > 1 && n <= 191:
			return n, msg[i+1:]
		case c >= '0' && c <= '9':
			n = n*10 + int(c-'0')
		default:
			return 13, msg
		}
	}
	return 13, msg
}

// withoutTimestamp drops an RFC 3164 timestamp ("Nov 29 23:59:00 "),
// which the host's syslog stamps again on arrival.
func withoutTimestamp(msg []byte) []byte {
	const layout = "Mmm dd hh:nn:ss " // M, m: a letter; d, h, n, s: a digit (a day may start with a space)
	if len(msg) < len(layout) {
		return msg
	}
	for i, c := range msg[:len(layout)] {
		switch layout[i] {
		case 'M', 'm':
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
				return msg
			}
		case 'd', 'h', 'n', 's':
			if !(c >= '0' && c <= '9' || c == ' ' && i == 4) {
				return msg
			}
		default:
			if c != layout[i] {
				return msg
			}
		}
	}
	return msg[len(layout):]
}
