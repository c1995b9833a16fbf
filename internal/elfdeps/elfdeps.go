// Package elfdeps reads what an ELF executable needs at exec time (its
// program interpreter and the shared libraries it names) and finds which of
// them are missing under a root directory. A program copied into a chroot
// without its dynamic loader or libraries is the most common chroot
// mistake, and execve reports it only as "No such file or directory".
//
// It reads only headers, bounded in size, and imports little, because
// virtuald uses it on its per-connection path.
package elfdeps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Info is what the dynamic loader will look for.
type Info struct {
	Interp  string   // PT_INTERP, "" for a static executable
	Needed  []string // DT_NEEDED, in order
	RunPath []string // DT_RUNPATH, or DT_RPATH when there is no RUNPATH
	// RPath is set when RunPath came from DT_RPATH: the loader then also
	// searches it for the libraries of the objects this one loads.
	RPath bool
	// Class and Machine (EI_CLASS, e_machine): the loader skips a
	// library of another architecture and searches on, so a 32-bit copy
	// in a multilib directory does not count as found.
	Class   byte
	Machine uint16
}

const (
	maxPhdrs    = 256
	maxDynamic  = 1 << 16
	maxStrtab   = 1 << 20
	ptLoad      = 1
	ptDynamic   = 2
	ptInterp    = 3
	dtNull      = 0
	dtNeeded    = 1
	dtStrtab    = 5
	dtStrsz     = 10
	dtRpath     = 15
	dtRunpath   = 29
	elfClass32  = 1
	elfClass64  = 2
	elfData2LSB = 1
	elfData2MSB = 2
)

// ErrNotELF is returned for a file that is not an ELF executable.
var ErrNotELF = errors.New("not an ELF file")

type phdr struct {
	typ                uint32
	off, vaddr, filesz uint64
}

// Read parses the headers of the ELF file r.
func Read(r io.ReaderAt) (*Info, error) {
	var ident [64]byte
	n, _ := r.ReadAt(ident[:], 0)
	if n < 52 || !bytes.Equal(ident[:4], []byte("\x7fELF")) {
		return nil, ErrNotELF
	}
	var bo binary.ByteOrder
	switch ident[5] {
	case elfData2LSB:
		bo = binary.LittleEndian
	case elfData2MSB:
		bo = binary.BigEndian
	default:
		return nil, ErrNotELF
	}
	is64 := ident[4] == elfClass64
	if !is64 && ident[4] != elfClass32 {
		return nil, ErrNotELF
	}
	var phoff uint64
	var phentsize, phnum int
	if is64 {
		if n < 64 {
			return nil, ErrNotELF
		}
		phoff = bo.Uint64(ident[32:])
		phentsize, phnum = int(bo.Uint16(ident[54:])), int(bo.Uint16(ident[56:]))
	} else {
		phoff = uint64(bo.Uint32(ident[28:]))
		phentsize, phnum = int(bo.Uint16(ident[42:])), int(bo.Uint16(ident[44:]))
	}
	want := 32
	if is64 {
		want = 56
	}
	if phnum > maxPhdrs || phentsize < want {
		return nil, fmt.Errorf("malformed ELF program headers")
	}
	raw := make([]byte, phnum*phentsize)
	if _, err := r.ReadAt(raw, int64(phoff)); err != nil {
		return nil, fmt.Errorf("reading ELF program headers: %w", err)
	}
	var phs []phdr
	for i := 0; i < phnum; i++ {
		b := raw[i*phentsize:]
		var p phdr
		p.typ = bo.Uint32(b)
		if is64 {
			p.off, p.vaddr, p.filesz = bo.Uint64(b[8:]), bo.Uint64(b[16:]), bo.Uint64(b[32:])
		} else {
			p.off, p.vaddr, p.filesz = uint64(bo.Uint32(b[4:])), uint64(bo.Uint32(b[8:])), uint64(bo.Uint32(b[16:]))
		}
		phs = append(phs, p)
	}
	info := &Info{Class: ident[4], Machine: bo.Uint16(ident[18:])}
	for _, p := range phs {
		switch p.typ {
		case ptInterp:
			s, err := readString(r, p.off, p.filesz, 4096)
			if err != nil {
				return nil, err
			}
			info.Interp = s
		case ptDynamic:
			if err := readDynamic(r, bo, is64, p, phs, info); err != nil {
				return nil, err
			}
		}
	}
	return info, nil
}

func readString(r io.ReaderAt, off, size, limit uint64) (string, error) {
	if size > limit {
		size = limit
	}
	b := make([]byte, size)
	if _, err := r.ReadAt(b, int64(off)); err != nil && err != io.EOF {
		return "", fmt.Errorf("reading ELF string: %w", err)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b), nil
}

func readDynamic(r io.ReaderAt, bo binary.ByteOrder, is64 bool, dyn phdr, phs []phdr, info *Info) error {
	size := dyn.filesz
	if size > maxDynamic {
		size = maxDynamic
	}
	raw := make([]byte, size)
	if _, err := r.ReadAt(raw, int64(dyn.off)); err != nil && err != io.EOF {
		return fmt.Errorf("reading ELF dynamic section: %w", err)
	}
	entSize := 8
	if is64 {
		entSize = 16
	}
	var strtab, strsz uint64
	var needed, rpath, runpath []uint64
	for i := 0; i+entSize <= len(raw); i += entSize {
		var tag, val uint64
		if is64 {
			tag, val = bo.Uint64(raw[i:]), bo.Uint64(raw[i+8:])
		} else {
			tag, val = uint64(bo.Uint32(raw[i:])), uint64(bo.Uint32(raw[i+4:]))
		}
		switch tag {
		case dtNull:
			i = len(raw)
		case dtNeeded:
			needed = append(needed, val)
		case dtStrtab:
			strtab = val
		case dtStrsz:
			strsz = val
		case dtRpath:
			rpath = append(rpath, val)
		case dtRunpath:
			runpath = append(runpath, val)
		}
	}
	if len(needed) == 0 && len(rpath) == 0 && len(runpath) == 0 {
		return nil
	}
	// DT_STRTAB is a virtual address: find the file offset of the PT_LOAD
	// segment that holds it.
	off, ok := uint64(0), false
	for _, p := range phs {
		if p.typ == ptLoad && strtab >= p.vaddr && strtab < p.vaddr+p.filesz {
			off, ok = p.off+strtab-p.vaddr, true
			break
		}
	}
	if !ok || strsz == 0 {
		return fmt.Errorf("malformed ELF dynamic string table")
	}
	if strsz > maxStrtab {
		strsz = maxStrtab
	}
	tab := make([]byte, strsz)
	if _, err := r.ReadAt(tab, int64(off)); err != nil && err != io.EOF {
		return fmt.Errorf("reading ELF string table: %w", err)
	}
	str := func(i uint64) string {
		if i >= uint64(len(tab)) {
			return ""
		}
		s := tab[i:]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		return string(s)
	}
	for _, i := range needed {
		info.Needed = append(info.Needed, str(i))
	}
	paths := runpath
	if len(paths) == 0 {
		paths, info.RPath = rpath, len(rpath) > 0
	}
	for _, i := range paths {
		for _, d := range strings.Split(str(i), ":") {
			if d != "" {
				info.RunPath = append(info.RunPath, d)
			}
		}
	}
	return nil
}
