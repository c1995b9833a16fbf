package elfdeps

import (
	"bytes"
	"encoding/binary"
	"io"
	"path"
	"strings"
)

// FS is the file system a program will run in, seen from inside: the
// root virtuald entered, a root opened by its descriptor
// (service.Root), or the host's own "/" for ipwatchctl install. Paths
// are absolute inside it.
type FS interface {
	Exists(path string) bool
	ReadFile(path string, limit int) ([]byte, error)
	// Open opens a regular file for reading its headers; anything else
	// (a FIFO, a device, a directory) is refused without blocking.
	Open(path string) (File, error)
}

// File is an opened regular file.
type File interface {
	io.ReaderAt
	Close() error
}

// defaultDirs are where glibc's and musl's loaders look last; the
// multiarch directories come first on Debian and Ubuntu. Directories of
// other architectures are harmless: a library of the wrong class or
// machine found there is skipped, as the loader skips it.
var defaultDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
	"/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib",
}

// hwcapsDirs are the glibc-hwcaps subdirectories (glibc 2.33 and later)
// the loader tries in every directory it searches. A copy there is loaded
// only on a CPU of that level, and packages put one there only beside a
// baseline copy in the directory itself; so the directory comes first
// here, and a library found only in a subdirectory counts as found (the
// host that installed it has that level).
var hwcapsDirs = []string{
	"glibc-hwcaps/x86-64-v4", "glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2",
	"glibc-hwcaps/power10", "glibc-hwcaps/power9", "glibc-hwcaps/z16", "glibc-hwcaps/z15", "glibc-hwcaps/z14", "glibc-hwcaps/z13",
}

const (
	maxCache      = 4 << 20 // /etc/ld.so.cache read at most
	maxDirsPerObj = 64      // RPATH/RUNPATH entries of one object that are searched
)

// search finds libraries by name as the loader does, in one file system.
type search struct {
	fs         FS
	ldPath     []string // LD_LIBRARY_PATH
	cache      []byte   // /etc/ld.so.cache, read on first need
	cacheTried bool
}

func newSearch(fs FS, ldLibraryPath string) *search {
	s := &search{fs: fs}
	for _, d := range strings.Split(ldLibraryPath, ":") {
		if d != "" {
			s.ldPath = append(s.ldPath, d)
		}
	}
	return s
}

// expand replaces $ORIGIN in the RPATH or RUNPATH entries of the object
// at objPath, the directory that object was found in (for the program,
// the directory it is named by).
func expand(dirs []string, objPath string) []string {
	origin := path.Dir(objPath)
	out := make([]string, 0, len(dirs))
	for i, d := range dirs {
		if i == maxDirsPerObj {
			break
		}
		out = append(out, strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin))
	}
	return out
}

// find returns the first path where the loader would find name: in
// before (RPATH, LD_LIBRARY_PATH, RUNPATH, in the loader's order), then
// the file system's /etc/ld.so.cache, then the default directories. ok
// says whether a candidate will do (it exists; or it is an ELF object
// of the program's architecture).
func (s *search) find(name string, before []string, ok func(string) bool) (string, bool) {
	if strings.Contains(name, "/") {
		return name, ok(name)
	}
	try := func(dirs []string) (string, bool) {
		for _, d := range dirs {
			if !strings.HasPrefix(d, "/") {
				continue // relative to the service's working directory, unknowable here
			}
			if p := path.Join(d, name); ok(p) {
				return p, true
			}
			for _, h := range hwcapsDirs {
				if p := path.Join(d, h, name); ok(p) {
					return p, true
				}
			}
		}
		return "", false
	}
	if p, found := try(before); found {
		return p, true
	}
	if !s.cacheTried {
		s.cacheTried = true
		s.cache, _ = s.fs.ReadFile("/etc/ld.so.cache", maxCache)
	}
	for _, p := range cachePaths(s.cache, name) {
		if ok(p) {
			return p, true
		}
	}
	return try(defaultDirs)
}

// cachePaths returns the paths the loader's cache (glibc's
// "glibc-ld.so.cache1.1" format, alone or after the old one) lists for
// name, in its order. A malformed cache gives none: the loader then
// searches the default directories, and so does find.
func cachePaths(cache []byte, name string) []string {
	const magic = "glibc-ld.so.cache1.1"
	const header, entry = 48, 24
	start := bytes.Index(cache, []byte(magic))
	if start < 0 || len(cache)-start < header {
		return nil
	}
	c := cache[start:]
	var bo binary.ByteOrder = binary.LittleEndian
	if c[28]&3 == 3 {
		bo = binary.BigEndian
	}
	n := int(bo.Uint32(c[20:]))
	if n < 0 || n > (len(c)-header)/entry {
		return nil
	}
	str := func(off uint32) string {
		if int(off) >= len(c) {
			return ""
		}
		s := c[off:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return string(s)
	}
	var out []string
	for i := 0; i < n; i++ {
		e := c[header+i*entry:]
		if str(bo.Uint32(e[4:])) == name {
			if p := str(bo.Uint32(e[8:])); strings.HasPrefix(p, "/") {
				out = append(out, p)
			}
		}
	}
	return out
}

// searchDirs is where the loader looks, before its cache, for the
// libraries of the object info found at objPath: its DT_RPATH and then
// those of the objects that loaded it (rpaths, innermost first) unless it
// has a DT_RUNPATH; LD_LIBRARY_PATH; its DT_RUNPATH.
func (info *Info) searchDirs(objPath string, rpaths []string, s *search) []string {
	var dirs []string
	if info.RPath || len(info.RunPath) == 0 {
		if info.RPath {
			dirs = append(dirs, expand(info.RunPath, objPath)...)
		}
		dirs = append(dirs, rpaths...)
	}
	dirs = append(dirs, s.ldPath...)
	if !info.RPath {
		dirs = append(dirs, expand(info.RunPath, objPath)...)
	}
	return dirs
}
