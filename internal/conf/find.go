package conf

import (
	"bytes"
	"net/netip"

	"golang.org/x/sys/unix"
)

// streamBuf is FindFile's read buffer: larger than MaxLine, so any line
// that can be read fits in it, and small, since every page a process
// started per connection touches costs it a page fault.
const streamBuf = 64 << 10

// FindFile answers what Find(path, data, addr) would for the conf file at
// path as Read would read it, without holding the file in memory when an
// exact entry serves addr: it streams the file through a small buffer,
// checking every byte for NUL and every line for addr's own key, and
// reads the whole file for the other rules only when no line has it. It
// is virtuald's path to the file, per connection: reading a large file
// into fresh memory costs a new process more in page faults than
// scanning it.
func FindFile(path string, addr netip.Addr) (Match, error) {
	addr = addr.Unmap().WithZone("")
	var e *Entry
	_, err := withConf(path, MaxFileSize, func(fd int, st *unix.Stat_t) (err error) {
		e, err = streamExact(fd, addr)
		return err
	})
	switch {
	case err != nil:
		return Match{}, err
	case e != nil:
		f := &File{Path: path}
		return f.match(e, RuleExact), nil
	}
	// No line has addr's key, or the file holds a NUL byte: Find on the
	// whole text answers, and names the NUL's line as every other reader
	// of the file does.
	data, err := Read(path)
	if err != nil {
		return Match{}, err
	}
	// All of Find again, not only its rules: the file may have changed
	// since the stream, and this read must stand on its own.
	return Find(path, data, addr)
}

// streamExact reads fd to its end and returns the first entry whose key
// is addr, or nil when there is none or the file holds a NUL byte
// anywhere (it stops there).
func streamExact(fd int, addr netip.Addr) (found *Entry, err error) {
	var textBuf [64]byte
	text := addr.AppendTo(textBuf[:0])
	buf := make([]byte, streamBuf)
	n, no := 0, 0
	skipping := false // inside a line too long to be read: drop it
	for eof := false; !eof; {
		m, err := readSome(fd, buf[n:])
		if err != nil {
			return nil, err
		}
		eof = m == 0
		if bytes.IndexByte(buf[n:n+m], 0) >= 0 {
			return nil, nil
		}
		n += m
		if found != nil {
			n = 0 // only the NUL check goes on
			continue
		}
		data := buf[:n]
		if skipping { // the rest of a line too long to be read
			i := bytes.IndexByte(data, '\n')
			switch {
			case i >= 0:
				data, skipping = data[i+1:], false
				no++
			case eof:
				data = nil
			}
		}
		if !skipping {
			found, data = exactIn(data, eof, &no, text, addr)
		}
		n = copy(buf, data)
		if n == len(buf) { // no line break in the whole buffer
			skipping, n = true, 0
		}
	}
	return found, nil
}

func readSome(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// Find answers what Parse(path, data).Lookup(addr) would, without building
// the whole index: it reads every line's key (a line whose key cannot be
// read changes the answer) but parses the rest of the winning line only.
// virtuald uses it when it reads the file itself, once per connection.
func Find(path string, data []byte, addr netip.Addr) (Match, error) {
	if err := checkText(path, data); err != nil {
		return Match{}, err
	}
	addr = addr.Unmap().WithZone("")
	if e := findExact(data, addr); e != nil {
		f := &File{Path: path}
		return f.match(e, RuleExact), nil
	}
	return findCatchAll(path, data, addr), nil
}

// findCatchAll is Find for an address that no line names: the longest
// prefix holding it, else default, else none, subject to every line (one
// that cannot be read, or may join two, suspends them).
func findCatchAll(path string, data []byte, addr netip.Addr) Match {
	f := &File{Path: path}
	var prefix, dflt *Entry
	l := lines{data: data}
	for l.next() {
		k, err := l.key()
		if err != nil {
			continue
		}
		var win **Entry
		switch k.Kind {
		case KeyPrefix:
			if k.Prefix.Contains(addr) && (prefix == nil || k.Prefix.Bits() > prefix.Prefix.Bits()) {
				win = &prefix
			}
		case KeyDefault:
			if dflt == nil {
				win = &dflt
			}
		}
		if win != nil {
			e := k
			l.rest(&e)
			*win = &e
		}
	}
	f.suspect, f.suspectWhy = l.suspect, l.suspectWhy
	switch {
	case prefix != nil:
		return f.match(prefix, RulePrefix)
	case dflt != nil:
		return f.match(dflt, RuleDefault)
	}
	return f.Lookup(addr)
}

// findExact returns the first entry whose key is addr itself, or nil. It
// is Find's first pass: an exact entry wins whatever else the file holds
// (nothing suspends it), so when there is one nothing else needs parsing.
// The second pass, the whole file's rules, runs only when this one finds
// nothing: the property tests check that Find agrees with Parse+Lookup.
func findExact(data []byte, addr netip.Addr) *Entry {
	var buf [64]byte
	no := 0
	e, _ := exactIn(data, true, &no, addr.AppendTo(buf[:0]), addr)
	return e
}

// exactIn returns the entry of the first line of data whose key is addr
// (text is addr's canonical text), or nil and what is left of data: a
// last line without its line break, unless whole says data ends there.
// *no is the number of the line before data's first, and becomes that of
// the last line read. Only a line whose key could be addr's is parsed
// (exactEntry): one that begins with addr's text, or with a blank, or
// holds a colon (an IPv6 or IPv4-mapped key). The colons are found by
// one vectorized search for all the lines, not one a line: a file of
// IPv4 entries costs a search for its line breaks and a comparison a line.
func exactIn(data []byte, whole bool, no *int, text []byte, addr netip.Addr) (*Entry, []byte) {
	colon := bytes.IndexByte(data, ':') // in data; -1: none left
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !whole {
				return nil, data
			}
			i = len(data)
		}
		line := data[:i]
		*no++
		if colon >= 0 && colon < i || len(line) > 0 && (isBlank(line[0]) || bytes.HasPrefix(line, text)) {
			if e := exactEntry(line, *no, text, addr); e != nil {
				return e, nil
			}
		}
		if i == len(data) {
			break
		}
		data = data[i+1:]
		if colon >= 0 {
			if colon -= i + 1; colon < 0 {
				colon = bytes.IndexByte(data, ':')
			}
		}
	}
	return nil, nil
}

// exactEntry returns the entry of line (number no) when its key is addr
// (text is addr's canonical text), or nil. A line is rejected by
// comparing bytes: an IPv4 address has one text form a key can take
// without a colon (netip accepts no leading zeros), so only keys holding a
// colon (IPv6, or IPv4-mapped) are parsed.
func exactEntry(line []byte, no int, text []byte, addr netip.Addr) *Entry {
	if len(line) > MaxLine {
		return nil // unreadable: never anyone's exact entry
	}
	i := 0
	for i < len(line) && isBlank(line[i]) {
		i++
	}
	j := i
	for j < len(line) && !isBlank(line[j]) {
		j++
	}
	key := line[i:j]
	if len(key) == 0 || key[0] == '#' {
		return nil
	}
	if !bytes.Equal(key, text) {
		if bytes.IndexByte(key, ':') < 0 || bytes.IndexByte(key, '/') >= 0 {
			return nil
		}
		if a, err := netip.ParseAddr(string(key)); err != nil || a.Unmap() != addr {
			return nil
		}
	}
	l := lines{no: no, fields: splitFields(line, nil)}
	e, err := l.key()
	if err != nil || e.Kind != KeyAddr || e.Prefix.Addr() != addr {
		return nil
	}
	l.rest(&e)
	return &e
}
