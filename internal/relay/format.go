package relay

import (
	"strconv"
	"unicode/utf8"
)

// Format makes the datagram the relay sends to the host's syslog for
// msg, which a program inside the root labelled label sent to its
// dev/log: "<PRI>virtuald[LABEL]: TEXT". The header is the relay's own,
// so the sender cannot pass for another root or for the host: it can
// choose only the severity and facility (kern, which only the kernel may
// use, becomes user), and its text, whose own header (priority, the
// RFC 3164 timestamp) is dropped and whose control characters, invalid
// UTF-8 and backslashes are escaped as \xNN, so that the line the host
// logs ends where the relay says and holds no terminal escapes. The text
// is cut at maxBody bytes.
func Format(label string, msg []byte) []byte {
	pri, rest := priority(msg)
	if pri>>3 == 0 {
		pri |= 1 << 3
	}
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
		case r == utf8.RuneError && size <= 1, r < ' ', r == 0x7f, r >= 0x80 && r < 0xa0, r == '\\':
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
