package conftable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"golang.org/x/sys/unix"
)

// A check file says that a dynamically linked program found nothing
// missing inside a root when the Go program checked it (the library
// check virtuald runs before it executes a service with isolate=none,
// since the loader would tell only the client), and which files that
// check read: the front serves such a program from the table without a
// check of its own while every one of those files is as it was (the
// same identity: device, inode, size, mtime, ctime). A tenant who
// changes, replaces or removes any of them makes the front hand the
// connection to the Go program, which checks again.
//
// The format, little-endian: "vdcheck1", the number of files (u32), 4
// bytes of zeros, the root and the program (CheckText bytes each, NUL
// padded), then per file its path inside the root (CheckPath bytes, NUL
// padded) and its identity (5 x 8 bytes, as a table's header).
const (
	CheckMagic  = "vdcheck1"
	CheckText   = 1024
	CheckPath   = 216
	CheckRecord = CheckPath + 40
	CheckHeader = 16 + 2*CheckText
	MaxChecked  = 64
)

// CheckName is the file name of the check of program in root: one of
// CheckFiles, so that a host of many roots keeps a bounded number of
// checks (two that share a name replace each other; the front reads the
// root and program a check is of before it trusts it).
func CheckName(root, program string) string {
	return fmt.Sprintf("%03x.check", fnv(root+"\x00"+program)%CheckFiles)
}

// CheckFiles bounds the check files beside the tables: 2.3 KB each for a
// program of a few libraries, 18 KB at most.
const CheckFiles = 4096

// RecordReady writes the check of program inside root (its directory is
// rootFd), which found nothing missing by reading files, in a check that
// began at start. It records nothing when a file changed too recently
// for its identity to vouch that the check read what it names
// (conf.Racy), or when the names do not fit the format; like Refresh,
// it never fails a connection.
func RecordReady(socketPath, root, program string, rootFd int, files []string, start time.Time) error {
	if len(root) >= CheckText || len(program) >= CheckText || len(files) == 0 || len(files) > MaxChecked {
		return errors.New("does not fit a check file")
	}
	b := make([]byte, CheckHeader+CheckRecord*len(files))
	copy(b, CheckMagic)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(files)))
	copy(b[16:], root)
	copy(b[16+CheckText:], program)
	for i, f := range files {
		var st unix.Stat_t
		if len(f) >= CheckPath {
			return errors.New("does not fit a check file")
		}
		if err := statIn(rootFd, f, &st); err != nil {
			return err
		}
		if conf.Racy(&st, start) {
			return fmt.Errorf("%s changed too recently for its check to be vouched for", f)
		}
		r := b[CheckHeader+CheckRecord*i:]
		copy(r, f)
		putIdentity(r[CheckPath:], ipc.FileIDOf(&st))
	}
	dir, err := openDir(socketPath)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	name := CheckName(root, program)
	if old, err := readCheck(dir, name); err == nil && bytes.Equal(old, b) {
		return nil
	}
	lock, err := tryLock(dir)
	if lock < 0 {
		return err // nil: another connection writes it
	}
	defer unix.Close(lock)
	return write(dir, name, b)
}

// statIn is service.Root.Stat on a bare descriptor: this package is
// below service's.
func statIn(rootFd int, p string, st *unix.Stat_t) error {
	fd, err := unix.Openat2(rootFd, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fstat(fd, st)
}

// ReadCheck returns the check of program in root for the daemon at
// socketPath after the front's checks of the file.
func ReadCheck(socketPath, root, program string) ([]byte, error) {
	dir, err := unix.Open(Dir(socketPath), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	return readCheck(dir, CheckName(root, program))
}

func readCheck(dir int, name string) ([]byte, error) {
	fd, st, err := openTable(dir, name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if st.Size > CheckHeader+CheckRecord*MaxChecked {
		return nil, ErrFormat
	}
	b := make([]byte, st.Size)
	if n, err := unix.Pread(fd, b, 0); err != nil || n != len(b) {
		return nil, ErrFormat
	}
	return b, nil
}

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
