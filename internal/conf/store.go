package conf

import (
	"iter"
	"net/netip"
	"slices"
	"strings"
)

// entry is how a File keeps a valid entry: 36 bytes, its root and options
// held as spans of the file's text. ipwatchd keeps every conf file it
// serves in memory, and at a million entries a struct with strings of its
// own and a pointer per entry cost 249 MiB; this costs 84, text and
// indexes included (BenchmarkHeapMillion). Entry(i) rebuilds the public
// Entry when it is asked for.
type entry struct {
	addr      [16]byte // the key's address, IPv4 in its first 4 bytes
	line      int32
	root      uint32 // offset of the root in the text
	opts      uint32 // offset of the first option, when optsLen > 0
	rootLen   uint16 // lines are at most MaxLine bytes
	optsLen   uint16 // from the first option to the end of the last
	bits      uint8
	kind      KeyKind
	is4, oops bool // oops: invalid, kept whole in File.invalid
}

// span is a field's place in the text.
type span struct{ off, len int }

func (s span) in(text string) string { return text[s.off : s.off+s.len] }

// store holds a File's entries compactly, with the indexes Lookup uses.
type store struct {
	text    string  // the file's text: roots and options are spans of it
	entries []entry // in file order, duplicates left out
	invalid map[int32]*Entry
	refused int // entries whose addresses are refused by the text alone

	exact4   map[[4]byte]int32
	exact6   map[[16]byte]int32
	prefixes [2]prefixTable // [0] IPv4, [1] IPv6
	dflt     int32          // the default entry's index + 1; 0 when there is none
}

// prefixTable finds the longest matching prefix with one map probe per
// distinct prefix length in use, so a lookup costs at most 33 (IPv4) or 129
// (IPv6) probes however many entries the file has.
type prefixTable struct {
	lengths []int // distinct lengths in use, longest first
	byNet   map[netip.Prefix]int32
}

// newStore makes the store of text, sized for the entries it probably
// holds, so that growing does not leave copies behind (at a million
// entries each copy is tens of MiB). A line that can be an entry takes
// ten bytes or so; a file of blank lines does not get a huge store.
func newStore(text string) store {
	hint := min(strings.Count(text, "\n")+1, len(text)/10+1)
	return store{text: text, entries: make([]entry, 0, hint),
		exact4: make(map[[4]byte]int32, hint), exact6: map[[16]byte]int32{}}
}

// Len is the number of entries (keyed lines, duplicates left out).
func (f *File) Len() int { return len(f.entries) }

// Entry returns entry i (0 <= i < Len), in file order. Each call builds
// a new Entry: entries are told apart by their Line.
func (f *File) Entry(i int) *Entry {
	c := &f.entries[i]
	if c.oops {
		e := *f.invalid[c.line]
		return &e
	}
	e := &Entry{Line: int(c.line), Kind: c.kind, Root: f.text[c.root : c.root+uint32(c.rootLen)]}
	switch {
	case c.kind == KeyDefault:
	case c.is4:
		e.Prefix = netip.PrefixFrom(netip.AddrFrom4([4]byte(c.addr[:4])), int(c.bits))
	default:
		e.Prefix = netip.PrefixFrom(netip.AddrFrom16(c.addr), int(c.bits))
	}
	e.Key = e.canonicalKey()
	// Parse checked the options: this parse of them cannot fail.
	e.Options, _ = parseOptions(strings.Fields(f.text[c.opts : c.opts+uint32(c.optsLen)]))
	return e
}

// All yields every entry with its index, in file order, each built anew.
func (f *File) All() iter.Seq2[int, *Entry] {
	return func(yield func(int, *Entry) bool) {
		for i := range f.entries {
			if !yield(i, f.Entry(i)) {
				return
			}
		}
	}
}

// Refused is the number of entries whose addresses the text alone
// refuses: invalid lines, and the catch-alls while a line suspends them.
func (f *File) Refused() int { return f.refused }

// indexOf returns the index of the entry holding the key of e (Kind and
// Prefix), or -1.
func (s *store) indexOf(e *Entry) int32 {
	switch e.Kind {
	case KeyDefault:
		return s.dflt - 1
	case KeyAddr:
		if i, ok := s.exactIndex(e.Prefix.Addr()); ok {
			return i
		}
		return -1
	}
	if i, ok := s.prefixes[family(e.Prefix.Addr())].byNet[e.Prefix]; ok {
		return i
	}
	return -1
}

func (s *store) exactIndex(a netip.Addr) (int32, bool) {
	if a.Is4() {
		i, ok := s.exact4[a.As4()]
		return i, ok
	}
	i, ok := s.exact6[a.As16()]
	return i, ok
}

// add keeps e, whose root and options lie at root and opts in the text.
func (s *store) add(e *Entry, root, opts span) {
	i := int32(len(s.entries))
	c := entry{line: int32(e.Line), kind: e.Kind, oops: e.Err != nil,
		root: uint32(root.off), rootLen: uint16(root.len), opts: uint32(opts.off), optsLen: uint16(opts.len)}
	if e.Kind != KeyDefault {
		a := e.Prefix.Addr()
		c.bits, c.is4 = uint8(e.Prefix.Bits()), a.Is4()
		if c.is4 {
			a4 := a.As4()
			copy(c.addr[:], a4[:])
		} else {
			c.addr = a.As16()
		}
	}
	if c.oops {
		if s.invalid == nil {
			s.invalid = map[int32]*Entry{}
		}
		kept := *e // a copy, so that e need not live on the heap
		s.invalid[c.line] = &kept
	}
	s.entries = append(s.entries, c)
	switch e.Kind {
	case KeyDefault:
		s.dflt = i + 1
	case KeyAddr:
		if a := e.Prefix.Addr(); a.Is4() {
			s.exact4[a.As4()] = i
		} else {
			s.exact6[a.As16()] = i
		}
	case KeyPrefix:
		t := &s.prefixes[family(e.Prefix.Addr())]
		if t.byNet == nil {
			t.byNet = map[netip.Prefix]int32{}
		}
		if !slices.Contains(t.lengths, e.Prefix.Bits()) {
			t.lengths = append(t.lengths, e.Prefix.Bits())
		}
		t.byNet[e.Prefix] = i
	}
}

// seal finishes the indexes once every line is in.
func (f *File) seal() {
	for i := range f.prefixes {
		slices.Sort(f.prefixes[i].lengths)
		slices.Reverse(f.prefixes[i].lengths)
	}
	for i := range f.entries {
		if f.refuses(&f.entries[i]) {
			f.refused++
		}
	}
}

// refuses reports whether the text alone refuses c's addresses: c is
// invalid, or a catch-all while a line suspends them.
func (f *File) refuses(c *entry) bool { return c.oops || c.kind != KeyAddr && f.suspect != 0 }

// Refusals yields, in file order, the entries whose addresses the text
// alone refuses (see Refused), without building the others.
func (f *File) Refusals() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for i := range f.entries {
			if f.refuses(&f.entries[i]) {
				if !yield(f.Entry(i)) {
					return
				}
			}
		}
	}
}

// EntryAt returns the entry of the given line, or nil when no entry is
// kept from that line.
func (f *File) EntryAt(line int) *Entry {
	i, ok := slices.BinarySearchFunc(f.entries, line, func(c entry, line int) int { return int(c.line) - line })
	if !ok {
		return nil
	}
	return f.Entry(i)
}

// CatchAllsSuspended reports whether a line that may have been meant for
// other addresses suspends the prefix and default entries.
func (f *File) CatchAllsSuspended() bool { return f.suspect != 0 }
