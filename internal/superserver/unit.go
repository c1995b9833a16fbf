package superserver

import (
	"errors"
	"strconv"
	"strings"
)

// assignment is one "Key=Value" line of a unit file.
type assignment struct {
	section, key, value string
}

// unit is a unit file with its drop-ins, their assignments in the order
// systemd applies them.
type unit struct {
	path    string
	assigns []assignment
}

// parseUnit adds the assignments of one unit file or drop-in: sections
// in brackets, "#" and ";" comments, a trailing backslash joining the
// next line.
func (u *unit) parseUnit(text string) {
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, "\\") && i+1 < len(lines) && len(line) <= maxLine {
			i++
			next := strings.TrimSpace(lines[i])
			if next != "" && (next[0] == '#' || next[0] == ';') {
				continue // a comment inside a continued line is skipped
			}
			line = line[:len(line)-1] + " " + next
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if ok && len(u.assigns) < maxFiles {
				u.assigns = append(u.assigns, assignment{section, strings.TrimSpace(k), strings.TrimSpace(v)})
			}
		}
	}
}

// list is a list setting's values: an empty assignment empties it.
func (u *unit) list(section, key string) []string {
	var values []string
	for _, a := range u.assigns {
		if a.section == section && a.key == key {
			if a.value == "" {
				values = nil
			} else {
				values = append(values, a.value)
			}
		}
	}
	return values
}

// last is a single setting's value: the last assignment wins.
func (u *unit) last(section, key string) string {
	v := u.list(section, key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// boolean reads a systemd boolean.
func boolean(v string) bool {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on":
		return true
	}
	return false
}

var (
	errSpecifier = errors.New("uses a % specifier, which Find does not expand")
	errVariable  = errors.New("uses a $ variable, which Find does not expand")
)

// splitCommand splits an ExecStart= (or Environment=) value into words
// as systemd does: whitespace separates, single and double quotes group,
// C escapes are undone, "%%" and "$$" stand for "%" and "$".
func splitCommand(v string) ([]string, error) {
	var words []string
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quote == 0 && (c == ' ' || c == '\t'):
			if in {
				words, in = append(words, w.String()), false
				w.Reset()
			}
			continue
		case quote == 0 && (c == '"' || c == '\''):
			quote, in = c, true
			continue
		case c == quote:
			quote = 0
			continue
		case c == '\\':
			if i+1 == len(v) {
				return nil, errors.New("ends in a backslash")
			}
			r, n, err := unescape(v[i+1:])
			if err != nil {
				return nil, err
			}
			w.WriteString(r)
			i += n
		case c == '%' || c == '$':
			if i+1 < len(v) && v[i+1] == c {
				w.WriteByte(c)
				i++
			} else if c == '%' {
				return nil, errSpecifier
			} else {
				return nil, errVariable
			}
		default:
			w.WriteByte(c)
		}
		in = true
		if len(words) >= maxArgs {
			return nil, errors.New("has more than " + strconv.Itoa(maxArgs) + " words")
		}
	}
	if quote != 0 {
		return nil, errors.New("has an unclosed quote")
	}
	if in {
		words = append(words, w.String())
	}
	return words, nil
}

// unescape reads the C escape after a backslash: its text and length.
func unescape(s string) (string, int, error) {
	if r, ok := map[byte]string{'a': "\a", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v",
		'\\': "\\", '"': "\"", '\'': "'", 's': " "}[s[0]]; ok {
		return r, 1, nil
	}
	switch {
	case s[0] == 'x' && len(s) >= 3:
		if n, err := strconv.ParseUint(s[1:3], 16, 8); err == nil && n != 0 {
			return string([]byte{byte(n)}), 3, nil
		}
	case s[0] >= '0' && s[0] <= '7' && len(s) >= 3:
		if n, err := strconv.ParseUint(s[:3], 8, 8); err == nil && n != 0 {
			return string([]byte{byte(n)}), 3, nil
		}
	}
	return "", 0, errors.New("has an escape \\" + s[:1] + " Find does not read")
}
