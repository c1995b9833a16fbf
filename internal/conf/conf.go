// Package conf parses, validates and looks up virtuald conf files: the one
// parser and the one validator shared by virtuald, ipwatchd and ipwatchctl,
// so that every program gives the same answer for the same file.
//
// A conf file maps local addresses to root directories:
//
//	10.10.10.129   /virtual/domain1.com
//	2001:db8::10   /virtual/domain3.com  user=ftp1 group=ftp1
//	10.20.0.0/24   /virtual/pool
//	default        /
//
// Lookup precedence is exact address, then the longest matching prefix, then
// default, whatever the line order. Parsing (Parse, Load) checks everything
// that can be checked from the text; Entry.Resolve checks the rest against
// the running system (the root directory and the named user and group).
package conf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// KeyKind says what an entry's key matches.
type KeyKind uint8

// The kinds of key, from most to least specific.
const (
	KeyAddr    KeyKind = iota + 1 // one address
	KeyPrefix                     // a CIDR prefix
	KeyDefault                    // every address not otherwise matched
)

// Entry is one keyed line of a conf file. An entry whose Err is set is
// invalid: its addresses are refused, never served from another entry.
type Entry struct {
	Line    int          // 1-based line number
	Key     string       // canonical: "default", "10.20.0.0/24", "2001:db8::10"
	Kind    KeyKind      //
	Prefix  netip.Prefix // the addresses matched; a single address is a full-length prefix; zero for default
	Root    string       // the root directory, as written
	Options              // what follows the root
	Err     error        // why the line is invalid, nil when it parsed cleanly
}

// LineError is a problem found at one place in a conf file. It prints as
// FILE:LINE: message so that editors and people can jump to it.
type LineError struct {
	File string
	Line int // 0 when the problem concerns the whole file
	Msg  string
}

func (e *LineError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
}

// File is a parsed conf file. It is immutable once returned by Parse, so
// it can be shared by concurrent readers without locks.
type File struct {
	Path   string
	Errors []*LineError // every problem, in line order
	store               // the entries: Len, Entry, All

	// suspect is the first line that may have been meant for addresses
	// its key does not name (see lines.suspect), 0 if none; while it
	// stands, the catch-all rules refuse.
	suspect    int
	suspectWhy string
}

// Rule says which precedence rule matched.
type Rule uint8

// The lookup rules, in precedence order.
const (
	RuleNone    Rule = iota // nothing matched
	RuleExact               // the address's own line
	RulePrefix              // the longest matching prefix
	RuleDefault             // the default line
)

func (r Rule) String() string {
	switch r {
	case RuleExact:
		return "exact"
	case RulePrefix:
		return "prefix"
	case RuleDefault:
		return "default"
	}
	return "none"
}

// ParseRule is the inverse of Rule.String.
func ParseRule(s string) Rule {
	for r := RuleExact; r <= RuleDefault; r++ {
		if r.String() == s {
			return r
		}
	}
	return RuleNone
}

// Match is the answer for one address.
type Match struct {
	Entry *Entry // nil when Rule is RuleNone
	Rule  Rule
	// Err is why the address must be refused: no entry, an invalid entry,
	// or a catch-all suspended by an unreadable line. Nil means serve Entry.
	Err error
}

// Lookup finds the entry that serves addr. IPv4-mapped IPv6 addresses match
// IPv4 entries. Its cost does not grow with the number of entries.
func (f *File) Lookup(addr netip.Addr) Match {
	addr = addr.Unmap().WithZone("")
	if i, ok := f.exactIndex(addr); ok {
		return f.match(f.Entry(int(i)), RuleExact)
	}
	t := &f.prefixes[family(addr)]
	for _, bits := range t.lengths {
		p, err := addr.Prefix(bits)
		if err != nil {
			continue
		}
		if i, ok := t.byNet[p]; ok {
			return f.match(f.Entry(int(i)), RulePrefix)
		}
	}
	if f.dflt > 0 {
		return f.match(f.Entry(int(f.dflt-1)), RuleDefault)
	}
	return Match{Rule: RuleNone, Err: fmt.Errorf("%s: no entry for %s and no default", f.Path, addr)}
}

// Refusal returns why addresses that e serves are refused (e is invalid,
// or it is a catch-all suspended by an unreadable line), or nil.
func (f *File) Refusal(e *Entry) error {
	r := RuleExact
	switch e.Kind {
	case KeyPrefix:
		r = RulePrefix
	case KeyDefault:
		r = RuleDefault
	}
	return f.match(e, r).Err
}

func (f *File) match(e *Entry, r Rule) Match {
	m := Match{Entry: e, Rule: r}
	switch {
	case e.Err != nil:
		m.Err = fmt.Errorf("%s:%d: entry %s is invalid: %w", f.Path, e.Line, e.Key, e.Err)
	case r != RuleExact && f.suspect != 0:
		m.Err = fmt.Errorf("%s:%d: the %s entry of line %d is suspended because line %d %s and may have been meant for this address",
			f.Path, e.Line, r, e.Line, f.suspect, f.suspectWhy)
	}
	return m
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func (e *Entry) canonicalKey() string {
	switch e.Kind {
	case KeyDefault:
		return "default"
	case KeyAddr:
		return e.Prefix.Addr().String()
	}
	return e.Prefix.String()
}

// String gives the entry as a conf line in canonical form.
func (e *Entry) String() string {
	var b strings.Builder
	b.WriteString(e.Key)
	b.WriteByte(' ')
	b.WriteString(e.Root)
	if o := e.Options.String(); o != "" {
		b.WriteString(" " + o)
	}
	return b.String()
}
