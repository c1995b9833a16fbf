package conf

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits on untrusted input. A conf file at the size limit holds about a
// million entries; a line longer than MaxLine is refused rather than
// truncated, since a truncated root would be a different root.
const (
	MaxFileSize = 64 << 20
	MaxLine     = 4096
	maxName     = 32 // user and group names, as useradd allows
)

// checkText refuses data that is not text as a whole: a NUL byte means a
// binary file or a corrupted one, and no line of it can be trusted.
func checkText(path string, data []byte) error {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		line := 1 + bytes.Count(data[:i], []byte{'\n'})
		return &LineError{File: path, Line: line, Msg: "holds a NUL byte: this is not a text conf file"}
	}
	return nil
}

// lines walks the text one line at a time, splitting each into fields.
// Parse and Find both read the text through it, so they cannot disagree
// on what a line says.
type lines struct {
	data   []byte
	no     int      // number of the current line
	fields [][]byte // fields of the current line, reused
	err    string   // why the current line cannot be read at all

	// suspect is the first line that may have been meant for addresses
	// its key does not name (0 if none), and suspectWhy says why, as in
	// "line N <suspectWhy>". While such a line exists the catch-all rules
	// (prefix and default) refuse rather than serve an address from a
	// root that line might have overridden: a lost line break or a bare
	// CR joins two entries into one line, which makes the first invalid
	// and hides the second.
	suspect    int
	suspectWhy string
}

func (l *lines) markSuspect(why string) {
	if l.suspect == 0 {
		l.suspect, l.suspectWhy = l.no, why
	}
}

// next advances to the next line that is not blank or a comment.
func (l *lines) next() bool {
	for len(l.data) > 0 {
		l.no++
		var line []byte
		if i := bytes.IndexByte(l.data, '\n'); i >= 0 {
			line, l.data = l.data[:i], l.data[i+1:]
		} else {
			line, l.data = l.data, nil
		}
		l.err = ""
		l.fields = l.fields[:0]
		if len(line) > MaxLine {
			l.err = fmt.Sprintf("line is %d bytes long; the limit is %d", len(line), MaxLine)
			return true
		}
		if bareCR(line) {
			// Checked before comments are dropped: "# note\r10.0.0.3 /c"
			// hides an entry inside a comment.
			l.markSuspect("holds a carriage return inside the line, which may join two lines")
		}
		l.fields = splitFields(line, l.fields)
		if len(l.fields) > 0 {
			if !optionsOnly(l.fields) {
				l.markSuspect("has a field after its root that is not an option, so it may join two lines")
			}
			return true
		}
	}
	return false
}

// bareCR reports whether line holds a CR with something other than blanks
// after it: a CR ending a line (CRLF) is not one.
func bareCR(line []byte) bool {
	i := bytes.IndexByte(line, '\r')
	if i < 0 {
		return false
	}
	for _, c := range line[i:] {
		if !isBlank(c) {
			return true
		}
	}
	return false
}

// optionsOnly reports whether every field after the key and the root
// reads as an option (NAME=VALUE, known or not, NAME of lower-case
// letters and inner '-' as in per-source=). A merged line shows
// itself here: what follows the first entry's root is the second entry's
// key (an address, a prefix, default) and its root (a path), neither of
// which can read as an option.
func optionsOnly(fields [][]byte) bool {
	for _, f := range fields[min(2, len(fields)):] {
		name, _, ok := bytes.Cut(f, []byte("="))
		if !ok || len(name) == 0 {
			return false
		}
		for i, c := range name {
			if (c < 'a' || c > 'z') && (c != '-' || i == 0) {
				return false
			}
		}
	}
	return true
}

// key parses the current line's key; an error means the line cannot be
// attributed to any address.
func (l *lines) key() (Entry, error) {
	if l.err != "" {
		l.markSuspect("could not be read")
		return Entry{}, errors.New(l.err)
	}
	e, err := parseKey(l.fields[0])
	e.Line = l.no
	if err != nil {
		l.markSuspect("could not be read")
	}
	return e, err
}

// rest completes e from the current line: its canonical key, root and
// options.
func (l *lines) rest(e *Entry) {
	e.Key = e.canonicalKey()
	rest := make([]string, len(l.fields)-1)
	for i, f := range l.fields[1:] {
		rest[i] = string(f)
	}
	e.Err = e.parseRest(rest)
}

// Parse parses the conf text data read from path (used in messages only).
// It returns an error, and no File, only when the text as a whole is not a
// conf file (it holds NUL bytes); problems on single lines are recorded in
// File.Errors and, where the line's key could be read, on the entry.
func Parse(path string, data []byte) (*File, error) {
	if err := checkText(path, data); err != nil {
		return nil, err
	}
	text := string(data)
	f := &File{Path: path, store: newStore(text)}
	l := lines{data: data}
	var fields []string
	for l.next() {
		e, err := l.key()
		if err != nil {
			f.addError(l.no, err.Error())
			continue
		}
		if first := f.indexOf(&e); first >= 0 {
			fe := f.Entry(int(first))
			f.addError(l.no, fmt.Sprintf("duplicate key %s: line %d already maps it; this line is ignored", fe.Key, fe.Line))
			continue
		}
		// The fields as spans of the text, so that the entry keeps no
		// strings of its own.
		var root, opts span
		fields = fields[:0]
		for i, b := range l.fields[1:] {
			at := span{off: offsetIn(data, b), len: len(b)}
			fields = append(fields, at.in(text))
			switch {
			case i == 0:
				root = at
			case i == 1:
				opts = at
			default:
				opts.len = at.off + at.len - opts.off
			}
		}
		if e.Err = e.parseRest(fields); e.Err != nil {
			e.Key = e.canonicalKey()
			f.addError(l.no, e.Key+": "+e.Err.Error())
		}
		f.add(&e, root, opts)
	}
	f.suspect, f.suspectWhy = l.suspect, l.suspectWhy
	if f.suspect != 0 {
		f.noteSuspension()
	}
	f.seal()
	return f, nil
}

// offsetIn is where b, a slice of data made by reslicing it, begins in
// data: such slices all end their capacity where data's does.
func offsetIn(data, b []byte) int { return cap(data) - cap(b) }

// noteSuspension says on the suspect line's error (or a new one) that the
// catch-alls are suspended, so that check tells the operator why.
func (f *File) noteSuspension() {
	const note = "the prefix and default entries are suspended while this line stands"
	for _, e := range f.Errors {
		if e.Line == f.suspect {
			e.Msg += "; " + note
			return
		}
	}
	f.addError(f.suspect, "this line "+f.suspectWhy+"; "+note)
	slices.SortStableFunc(f.Errors, func(a, b *LineError) int { return a.Line - b.Line })
}

func (f *File) addError(line int, msg string) {
	f.Errors = append(f.Errors, &LineError{File: f.Path, Line: line, Msg: msg})
}

// splitFields appends to dst the fields of line, separated by runs of
// spaces, tabs and CRs, dropping everything from a field that starts
// with '#'.
func splitFields(line []byte, dst [][]byte) [][]byte {
	i := 0
	for {
		for i < len(line) && isBlank(line[i]) {
			i++
		}
		if i == len(line) || line[i] == '#' {
			return dst
		}
		start := i
		for i < len(line) && !isBlank(line[i]) {
			i++
		}
		dst = append(dst, line[start:i])
	}
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

// parseKey parses a key into an Entry's Kind and Prefix; the canonical
// Key string is made only for entries that are kept.
func parseKey(b []byte) (Entry, error) {
	if string(b) == "default" {
		return Entry{Kind: KeyDefault}, nil
	}
	s := string(b)
	if strings.Contains(s, "%") {
		return Entry{}, fmt.Errorf("key %s: zoned addresses are not supported", quote(s))
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Entry{}, fmt.Errorf("key %s is not an address, a prefix or default", quote(s))
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p != p.Masked() {
			return Entry{}, fmt.Errorf("key %s has host bits set; the prefix is %s", s, p.Masked())
		}
		return Entry{Kind: KeyPrefix, Prefix: p}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return Entry{}, fmt.Errorf("key %s is not an address, a prefix or default", quote(s))
	}
	a = a.Unmap()
	return Entry{Kind: KeyAddr, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
}

// EntryOf rebuilds the entry a daemon names in its answer (its line, key,
// root and options in canonical form), checking it with the parser's own
// rules: the key must be in canonical form, and the rest must be what a
// valid line holds. A daemon answer is never trusted further than the
// file would be.
func EntryOf(line int, key, root, options string) (*Entry, error) {
	if line < 1 {
		return nil, fmt.Errorf("line %d", line)
	}
	e, err := parseKey([]byte(key))
	if err != nil {
		return nil, err
	}
	if e.Key = e.canonicalKey(); e.Key != key {
		return nil, fmt.Errorf("key %s is not in canonical form (%s)", quote(key), e.Key)
	}
	e.Line = line
	fields := append([]string{root}, strings.Fields(options)...)
	if err := e.parseRest(fields); err != nil {
		return nil, err
	}
	if e.Options.String() != options {
		return nil, fmt.Errorf("options %s are not in canonical form (%s)", quote(options), e.Options.String())
	}
	return &e, nil
}

// Serves reports whether e is the entry that rule r would pick for addr:
// its own address, a prefix holding it, or default.
func (e *Entry) Serves(addr netip.Addr, r Rule) bool {
	addr = addr.Unmap().WithZone("")
	switch r {
	case RuleExact:
		return e.Kind == KeyAddr && e.Prefix.Addr() == addr
	case RulePrefix:
		return e.Kind == KeyPrefix && e.Prefix.Contains(addr)
	case RuleDefault:
		return e.Kind == KeyDefault
	}
	return false
}

func (e *Entry) parseRest(fields []string) error {
	if len(fields) == 0 {
		return errors.New("no root directory")
	}
	e.Root = fields[0]
	if err := checkRootSyntax(e.Root); err != nil {
		return err
	}
	o, err := parseOptions(fields[1:])
	if err != nil {
		return err
	}
	e.Options = o
	return nil
}

func checkRootSyntax(root string) error {
	switch {
	case !strings.HasPrefix(root, "/"):
		return fmt.Errorf("root %s is not an absolute path", quote(root))
	case len(root) >= unix.PathMax:
		return fmt.Errorf("root is longer than %d bytes", unix.PathMax-1)
	case filepath.Clean(root) != root:
		return fmt.Errorf("root %s is not a clean path (it would be %s)", quote(root), filepath.Clean(root))
	}
	for _, r := range root {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("root %s holds a control character", quote(root))
		}
	}
	return nil
}

// checkIDSyntax accepts a number or a user or group name of the portable
// form (letters, digits, '.', '_', '-', not starting with '-').
func checkIDSyntax(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	if isDigits(v) {
		if _, err := parseID(v); err != nil {
			return err
		}
		return nil
	}
	if len(v) > maxName {
		return fmt.Errorf("name longer than %d characters", maxName)
	}
	if v[0] == '-' {
		return errors.New("a name cannot start with '-'")
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("a name cannot hold %q", c)
		}
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseID parses a numeric uid or gid; 4294967295 is (uid_t)-1, which the
// kernel takes as "leave unchanged", so it is refused.
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, errors.New("id out of range")
	}
	return uint32(n), nil
}

// quote makes text from the file safe to print in one log line.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}
