package elfdeps

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestReadDynamic(t *testing.T) {
	path, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if info.Interp == "" || !slices.Contains(info.Needed, "libc.so.6") {
		t.Fatalf("got %+v, want an interpreter and libc.so.6", info)
	}
}

func TestReadStatic(t *testing.T) {
	self, err := os.Executable() // the test binary: static when built with CGO_ENABLED=0
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(self)
	defer f.Close()
	if _, err := Read(f); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader([]byte("#!/bin/sh\necho hi\n"))); err != ErrNotELF {
		t.Fatalf("script: %v, want ErrNotELF", err)
	}
}

type fakeFS map[string]string

func (f fakeFS) Exists(p string) bool { _, ok := f[p]; return ok }
func (f fakeFS) ReadFile(p string, limit int) ([]byte, error) {
	if s, ok := f[p]; ok {
		return []byte(s), nil
	}
	return nil, os.ErrNotExist
}
func (f fakeFS) Open(p string) (File, error) {
	if s, ok := f[p]; ok {
		return nopCloser{strings.NewReader(s)}, nil
	}
	return nil, os.ErrNotExist
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

// makeCache writes an ld.so.cache in glibc's format, listing pairs of
// names and paths.
func makeCache(pairs ...string) string {
	const header, entry = 48, 24
	n := len(pairs) / 2
	b := make([]byte, header+n*entry)
	copy(b, "glibc-ld.so.cache1.1")
	binary.LittleEndian.PutUint32(b[20:], uint32(n))
	b[28] = 2 // little-endian
	for i := 0; i < n; i++ {
		e := b[header+i*entry:]
		binary.LittleEndian.PutUint32(e, 0x303)
		binary.LittleEndian.PutUint32(e[4:], uint32(len(b)))
		b = append(b, pairs[2*i]+"\x00"...)
		binary.LittleEndian.PutUint32(b[header+i*entry+8:], uint32(len(b)))
		b = append(b, pairs[2*i+1]+"\x00"...)
	}
	return string(b)
}

// The loader's search, as Resolve runs it for each object: the default
// directories, RUNPATH with $ORIGIN, LD_LIBRARY_PATH and ld.so.cache each
// find a library; a library none of them holds is missing.
func TestSearch(t *testing.T) {
	info := &Info{Interp: "/lib64/ld.so", Needed: []string{"liba.so", "libb.so", "libc.so", "libd.so", "libe.so"}, RunPath: []string{"$ORIGIN/../lib"}}
	fs := fakeFS{
		"/lib/x86_64-linux-gnu/liba.so": "",
		"/opt/app/lib/libb.so":          "", // through $ORIGIN
		"/custom/libc.so":               "", // through LD_LIBRARY_PATH
		"/weird/dir/libd.so":            "", // through ld.so.cache
		"/etc/ld.so.cache":              "old format junk first" + makeCache("libx.so", "/x/libx.so", "libd.so", "/weird/dir/libd.so"),
	}
	s := newSearch(fs, "/custom")
	before := info.searchDirs("/opt/app/bin/prog", nil, s)
	var libs []string
	for _, lib := range info.Needed {
		if _, found := s.find(lib, before, fs.Exists); !found {
			libs = append(libs, lib)
		}
	}
	if fs.Exists(info.Interp) || !slices.Equal(libs, []string{"libe.so"}) {
		t.Fatalf("got %q, want libe.so alone missing (and the interpreter)", libs)
	}
}

// FuzzRead checks that no file, however malformed, makes Read panic or
// read without bound: customers control the programs inside their roots.
func FuzzRead(f *testing.F) {
	if path, err := exec.LookPath("true"); err == nil {
		if b, err := os.ReadFile(path); err == nil && len(b) > 8192 {
			f.Add(b[:8192])
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Read(bytes.NewReader(data))
		if err == nil && len(info.Needed) > maxDynamic/8 {
			t.Fatalf("more needed libraries than a bounded dynamic section holds: %d", len(info.Needed))
		}
	})
}
