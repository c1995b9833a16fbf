// Package conftable compiles a conf file into a lookup table that
// virtuald's front (internal/enter/init/front.c) reads when ipwatchd does
// not answer: a sorted array of keys it can search in a few page faults,
// where reading the file itself would cost a parse of every line per
// connection. The table is written by the one parser (conf.Parse) and
// holds only what the file says, never what the system says (roots,
// users, programs are checked by whoever serves, as for a daemon answer),
// so it goes stale only when the file changes. It is keyed by the
// file's identity (ipc.FileID), as the daemon's answers are: a table
// whose identity is not the file's is never used.
//
// The format, little-endian (the front is amd64 only):
//
//	header (HeaderSize bytes):
//	  0  magic "vdtable1"
//	  8  dev, ino, size (u64), mtime, ctime (i64 ns): the file's identity
//	  48 records (u32), flags (u32; FlagSuspended)
//	  56 length (u64): the whole table's size in bytes
//	  64 v4 prefix lengths present (u64 bitmap, bit b for /b)
//	  72 v6 prefix lengths present ([3]u64 bitmap)
//	records (RecordSize bytes each, sorted by their first KeySize bytes):
//	  0  kind (1 address, 2 prefix, 3 default), family (4, 6; 0 for
//	     default), bits, 0
//	  4  address (16 bytes; an IPv4 one in the first 4, zeros after)
//	  20 line (u32), text (u32: offset of "root\0options\0" in the
//	     strings), flags (u32; RecordRefused)
//	strings: the entries' roots and options, each pair once.
package conftable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
)

// Sizes and fields of the format (see the package comment); the front's
// copies of them are checked by TestFrontTable.
const (
	Magic      = "vdtable1"
	HeaderSize = 128
	RecordSize = 32
	KeySize    = 20
)

// FlagSuspended says that a line of the file suspends its prefix and default
// entries (conf.File.CatchAllsSuspended): only exact entries serve.
const FlagSuspended = 1

// RecordRefused marks an invalid entry: its addresses are refused, with
// the words only the parser has.
const RecordRefused = 1

// Record kinds, as conf.KeyKind.
const (
	kindAddr    = 1
	kindPrefix  = 2
	kindDefault = 3
)

// maxText bounds a root and its options in the strings: more than the
// front takes is never written (the front hands such an entry over).
const maxText = 4096

// Build compiles f, read from the file with identity id, into a table.
func Build(f *conf.File, id ipc.FileID) []byte {
	type rec struct {
		key   [KeySize]byte
		line  uint32
		text  string
		flags uint32
	}
	recs := make([]rec, 0, f.Len())
	var lens4 uint64
	var lens6 [3]uint64
	for _, e := range f.All() {
		r := rec{line: uint32(e.Line)}
		switch e.Kind {
		case conf.KeyDefault:
			r.key[0] = kindDefault
		default:
			r.key[0] = kindAddr
			if e.Kind == conf.KeyPrefix {
				r.key[0] = kindPrefix
			}
			a, bits := e.Prefix.Addr(), e.Prefix.Bits()
			r.key[2] = byte(bits)
			if a.Is4() {
				r.key[1] = 4
				a4 := a.As4()
				copy(r.key[4:], a4[:])
				if e.Kind == conf.KeyPrefix {
					lens4 |= 1 << bits
				}
			} else {
				r.key[1] = 6
				a16 := a.As16()
				copy(r.key[4:], a16[:])
				if e.Kind == conf.KeyPrefix {
					lens6[bits/64] |= 1 << (bits % 64)
				}
			}
		}
		if e.Err != nil {
			r.flags = RecordRefused
		} else {
			r.text = e.Root + "\x00" + e.Options.String() + "\x00"
			if len(r.text) > maxText {
				r.flags, r.text = RecordRefused, ""
			}
		}
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(a, b rec) int { return bytes.Compare(a.key[:], b.key[:]) })

	strings := []byte{0} // offset 0: the refused entries' empty text
	at := map[string]uint32{"": 0}
	out := make([]byte, HeaderSize+RecordSize*len(recs))
	le := binary.LittleEndian
	for i, r := range recs {
		off, ok := at[r.text]
		if !ok {
			off = uint32(len(strings))
			at[r.text] = off
			strings = append(strings, r.text...)
		}
		b := out[HeaderSize+RecordSize*i:]
		copy(b, r.key[:])
		le.PutUint32(b[20:], r.line)
		le.PutUint32(b[24:], off)
		le.PutUint32(b[28:], r.flags)
	}
	out = append(out, strings...)
	copy(out, Magic)
	putIdentity(out[8:], id)
	le.PutUint32(out[48:], uint32(len(recs)))
	if f.CatchAllsSuspended() {
		le.PutUint32(out[52:], FlagSuspended)
	}
	le.PutUint64(out[56:], uint64(len(out)))
	le.PutUint64(out[64:], lens4)
	for i, w := range lens6 {
		le.PutUint64(out[72+8*i:], w)
	}
	return out
}

// putIdentity writes id as the header holds it.
func putIdentity(b []byte, id ipc.FileID) {
	le := binary.LittleEndian
	le.PutUint64(b, id.Dev)
	le.PutUint64(b[8:], id.Ino)
	le.PutUint64(b[16:], id.Size)
	le.PutUint64(b[24:], uint64(id.MtimeNs))
	le.PutUint64(b[32:], uint64(id.CtimeNs))
}

// ErrFormat says that the bytes are not a table this package writes.
var ErrFormat = errors.New("not a conf table")

// Found is a lookup's answer: what the daemon would have said.
type Found struct {
	Rule    conf.Rule
	Line    int
	Key     string // canonical, as conf.Entry.Key
	Root    string
	Options string // canonical, as conf.Options.String
	Refused bool   // the entry is invalid, or a catch-all the file suspends
}

// Lookup is the front's search, in Go: it answers what f.Lookup(addr)
// would for the file the table was built from (TestLookupAgrees), and
// ok is false when no entry serves addr.
func Lookup(t []byte, addr netip.Addr) (found Found, ok bool, err error) {
	if err := check(t); err != nil {
		return Found{}, false, err
	}
	le := binary.LittleEndian
	addr = addr.Unmap().WithZone("")
	n := int(le.Uint32(t[48:]))
	suspended := le.Uint32(t[52:])&FlagSuspended != 0
	find := func(key [KeySize]byte) int {
		lo, hi := 0, n
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			c := bytes.Compare(t[HeaderSize+RecordSize*mid:][:KeySize], key[:])
			switch {
			case c == 0:
				return mid
			case c < 0:
				lo = mid + 1
			default:
				hi = mid
			}
		}
		return -1
	}
	keyOf := func(kind byte, p netip.Prefix) (k [KeySize]byte) {
		k[0], k[2] = kind, byte(p.Bits())
		if p.Addr().Is4() {
			k[1] = 4
			a4 := p.Addr().As4()
			copy(k[4:], a4[:])
		} else {
			k[1] = 6
			a16 := p.Addr().As16()
			copy(k[4:], a16[:])
		}
		return k
	}
	answer := func(i int, rule conf.Rule, key string) (Found, bool, error) {
		r := t[HeaderSize+RecordSize*i:]
		fo := Found{Rule: rule, Line: int(le.Uint32(r[20:])), Key: key,
			Refused: le.Uint32(r[28:])&RecordRefused != 0 || rule != conf.RuleExact && suspended}
		if le.Uint32(r[28:])&RecordRefused == 0 {
			strs := t[HeaderSize+RecordSize*n:]
			off := int(le.Uint32(r[24:]))
			if off >= len(strs) {
				return Found{}, false, ErrFormat
			}
			parts := bytes.SplitN(strs[off:], []byte{0}, 3)
			if len(parts) < 3 {
				return Found{}, false, ErrFormat
			}
			fo.Root, fo.Options = string(parts[0]), string(parts[1])
		}
		return fo, true, nil
	}
	if i := find(keyOf(kindAddr, netip.PrefixFrom(addr, addr.BitLen()))); i >= 0 {
		return answer(i, conf.RuleExact, addr.String())
	}
	for bits := addr.BitLen(); bits >= 0; bits-- {
		var present bool
		if addr.Is4() {
			present = le.Uint64(t[64:])&(1<<bits) != 0
		} else {
			present = le.Uint64(t[72+8*(bits/64):])&(1<<(bits%64)) != 0
		}
		if !present {
			continue
		}
		p, _ := addr.Prefix(bits)
		if i := find(keyOf(kindPrefix, p)); i >= 0 {
			return answer(i, conf.RulePrefix, p.String())
		}
	}
	if i := find([KeySize]byte{kindDefault}); i >= 0 {
		return answer(i, conf.RuleDefault, "default")
	}
	return Found{}, false, nil
}

// check checks what the front checks of a table's size and counts.
func check(t []byte) error {
	le := binary.LittleEndian
	if len(t) < HeaderSize || string(t[:8]) != Magic || le.Uint64(t[56:]) != uint64(len(t)) {
		return ErrFormat
	}
	if n := uint64(le.Uint32(t[48:])); n > uint64(len(t)-HeaderSize)/RecordSize {
		return ErrFormat
	}
	return nil
}

// IdentityOf is the identity of the file a table was built from.
func IdentityOf(t []byte) (ipc.FileID, error) {
	if err := check(t); err != nil {
		return ipc.FileID{}, err
	}
	return identityIn(t), nil
}

// identityIn reads the identity from a table's header.
func identityIn(t []byte) ipc.FileID {
	le := binary.LittleEndian
	return ipc.FileID{Dev: le.Uint64(t[8:]), Ino: le.Uint64(t[16:]), Size: le.Uint64(t[24:]),
		MtimeNs: int64(le.Uint64(t[32:])), CtimeNs: int64(le.Uint64(t[40:]))}
}
