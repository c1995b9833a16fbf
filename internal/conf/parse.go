package conf

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
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

// Load opens, checks and parses the conf file at path. The file must be a
// regular file owned by root (or by the caller's effective uid) and not
// writable by group or others: whoever can write it chooses every root.
// A nil *File comes with a non-nil error; a non-nil *File may still carry
// line errors in File.Errors.
func Load(path string) (*File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &LineError{File: path, Msg: "cannot open: " + errText(err)}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &LineError{File: path, Msg: "cannot stat: " + errText(err)}
	}
	if err := checkFileMode(&st, uint32(os.Geteuid())); err != nil {
		return nil, &LineError{File: path, Msg: err.Error()}
	}
	if st.Size > MaxFileSize {
		return nil, &LineError{File: path, Msg: fmt.Sprintf("is %d bytes; the limit is %d", st.Size, MaxFileSize)}
	}
	data, err := readAll(fd, int(st.Size))
	if err != nil {
		return nil, &LineError{File: path, Msg: "cannot read: " + errText(err)}
	}
	return Parse(path, data)
}

func checkFileMode(st *unix.Stat_t, euid uint32) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return errors.New("is not a regular file")
	case st.Uid != 0 && st.Uid != euid:
		return fmt.Errorf("is owned by uid %d, not by root", st.Uid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("is writable by group or others (mode %04o)", st.Mode&0o7777)
	}
	return nil
}

// readAll reads at most MaxFileSize bytes; sizeHint is fstat's size, which
// may be stale, so the read goes on until EOF.
func readAll(fd, sizeHint int) ([]byte, error) {
	buf := make([]byte, 0, sizeHint+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if len(buf) > MaxFileSize {
			return nil, fmt.Errorf("file grew past %d bytes", MaxFileSize)
		}
	}
}

// errText gives a syscall error in words, without the Go wrapping.
func errText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// Parse parses the conf text data read from path (used in messages only).
// It returns an error, and no File, only when the text as a whole is not a
// conf file (it holds NUL bytes); problems on single lines are recorded in
// File.Errors and, where the line's key could be read, on the entry.
func Parse(path string, data []byte) (*File, error) {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		line := 1 + bytes.Count(data[:i], []byte{'\n'})
		return nil, &LineError{File: path, Line: line, Msg: "holds a NUL byte: this is not a text conf file"}
	}
	f := &File{Path: path, exact: make(map[netip.Addr]*Entry)}
	seen := make(map[string]int) // canonical key -> line of first use
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) > MaxLine {
			f.unkeyed(lineNo, fmt.Sprintf("line is %d bytes long; the limit is %d", len(line), MaxLine))
			continue
		}
		fields := splitFields(line)
		if len(fields) == 0 {
			continue
		}
		e, err := parseKey(fields[0])
		if err != nil {
			f.unkeyed(lineNo, err.Error())
			continue
		}
		e.Line = lineNo
		if first, dup := seen[e.Key]; dup {
			f.addError(lineNo, fmt.Sprintf("duplicate key %s: line %d already maps it; this line is ignored", e.Key, first))
			continue
		}
		seen[e.Key] = lineNo
		if err := e.parseRest(fields[1:]); err != nil {
			e.Err = err
			f.addError(lineNo, e.Key+": "+err.Error())
		}
		f.add(e)
	}
	for i := range f.prefixes {
		slices.Sort(f.prefixes[i].lengths)
		slices.Reverse(f.prefixes[i].lengths)
	}
	return f, nil
}

func (f *File) addError(line int, msg string) {
	f.Errors = append(f.Errors, &LineError{File: f.Path, Line: line, Msg: msg})
}

func (f *File) unkeyed(line int, msg string) {
	f.addError(line, msg)
	if f.unkeyedLine == 0 {
		f.unkeyedLine = line
	}
}

func (f *File) add(e *Entry) {
	f.Entries = append(f.Entries, e)
	switch e.Kind {
	case KeyDefault:
		f.dflt = e
	case KeyAddr:
		f.exact[e.Prefix.Addr()] = e
	case KeyPrefix:
		t := &f.prefixes[family(e.Prefix.Addr())]
		if t.byNet == nil {
			t.byNet = make(map[netip.Prefix]*Entry)
		}
		if !slices.Contains(t.lengths, e.Prefix.Bits()) {
			t.lengths = append(t.lengths, e.Prefix.Bits())
		}
		t.byNet[e.Prefix] = e
	}
}

// splitFields splits on runs of spaces, tabs and CRs, and drops everything
// from a field that starts with '#'.
func splitFields(line []byte) []string {
	var fields []string
	for {
		line = bytes.TrimLeft(line, " \t\r")
		if len(line) == 0 || line[0] == '#' {
			return fields
		}
		end := bytes.IndexAny(line, " \t\r")
		if end < 0 {
			end = len(line)
		}
		fields = append(fields, string(line[:end]))
		line = line[end:]
	}
}

func parseKey(s string) (*Entry, error) {
	if s == "default" {
		return &Entry{Key: s, Kind: KeyDefault}, nil
	}
	if strings.Contains(s, "%") {
		return nil, fmt.Errorf("key %s: zoned addresses are not supported", quote(s))
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("key %s is not an address, a prefix or default", quote(s))
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("key %s has host bits set; the prefix is %s", s, p.Masked())
		}
		return &Entry{Key: p.String(), Kind: KeyPrefix, Prefix: p}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil, fmt.Errorf("key %s is not an address, a prefix or default", quote(s))
	}
	a = a.Unmap()
	return &Entry{Key: a.String(), Kind: KeyAddr, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
}

func (e *Entry) parseRest(fields []string) error {
	if len(fields) == 0 {
		return errors.New("no root directory")
	}
	e.Root = fields[0]
	if err := checkRootSyntax(e.Root); err != nil {
		return err
	}
	for _, opt := range fields[1:] {
		name, value, ok := strings.Cut(opt, "=")
		if !ok {
			return fmt.Errorf("unexpected field %s after the root (options are user= and group=; paths with spaces are not supported)", quote(opt))
		}
		var dst *string
		switch name {
		case "user":
			dst = &e.User
		case "group":
			dst = &e.Group
		default:
			return fmt.Errorf("unknown option %s (options are user= and group=)", quote(name))
		}
		if *dst != "" {
			return fmt.Errorf("%s= given twice", name)
		}
		if err := checkIDSyntax(value); err != nil {
			return fmt.Errorf("%s=%s: %v", name, quote(value), err)
		}
		*dst = value
	}
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
