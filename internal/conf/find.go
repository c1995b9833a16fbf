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
	var nul bool
	_, err := withConf(path, func(fd int, st *unix.Stat_t) (err error) {
		e, nul, err = streamExact(fd, addr)
		return err
	})
	switch {
	case err != nil:
		return Match{}, err
	case nul:
		return Match{}, &LineError{File: path, Msg: "holds a NUL byte: this is not a text conf file"}
	case e != nil:
		f := &File{Path: path}
		return f.match(e, RuleExact), nil
	}
	data, err := Read(path)
	if err != nil {
		return Match{}, err
	}
	// All of Find again, not only its rules: the file may have changed
	// since the stream, and this read must stand on its own.
	return Find(path, data, addr)
}

// streamExact reads fd to its end and returns the first entry whose key
// is addr, and whether the file holds a NUL byte anywhere.
func streamExact(fd int, addr netip.Addr) (found *Entry, nul bool, err error) {
	var textBuf [64]byte
	text := addr.AppendTo(textBuf[:0])
	buf := make([]byte, streamBuf)
	n, no := 0, 0
	skipping := false // inside a line too long to be read: drop it
	for eof := false; !eof; {
		m, err := readSome(fd, buf[n:])
		if err != nil {
			return nil, false, err
		}
		eof = m == 0
		if bytes.IndexByte(buf[n:n+m], 0) >= 0 {
			return nil, true, nil
		}
		n += m
		data := buf[:n]
		for found == nil {
			i := bytes.IndexByte(data, '\n')
			if i < 0 && !(eof && len(data) > 0) {
				break
			}
			line := data
			if i >= 0 {
				line, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			no++
			if skipping {
				skipping = false
				continue
			}
			found = exactEntry(line, no, text, addr)
		}
		if found != nil {
			n = 0 // only the NUL check goes on
			continue
		}
		n = copy(buf, data)
		if n == len(buf) { // no line break in the whole buffer
			skipping, n = true, 0
		}
	}
	return found, false, nil
}

func readSome(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}
