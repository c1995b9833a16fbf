package conf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/virtuald/virtuald/internal/chroot"
	"golang.org/x/sys/unix"
)

// Load reads and parses the conf file at path (see Read). A nil *File
// comes with a non-nil error; a non-nil *File may still carry line errors
// in File.Errors.
func Load(path string) (*File, error) {
	data, err := Read(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Read opens, checks and reads the conf file at path. The file must be a
// regular file owned by root (or by the caller's effective uid) and not
// writable by group or others: whoever can write it chooses every root.
func Read(path string) ([]byte, error) {
	data, _, err := ReadStat(path)
	return data, err
}

// ReadStat is Read that also returns the file's status, taken from the
// descriptor it read and unchanged across the read, so that the status
// identifies the content returned (see Racy for when it cannot).
func ReadStat(path string) ([]byte, unix.Stat_t, error) {
	return readLimit(path, MaxFileSize)
}

// ReadLimit is Read for another of root's configuration files (a
// super-server's, which names conf files and programs) under the same
// rules, at most limit bytes of it.
func ReadLimit(path string, limit int) ([]byte, error) {
	data, _, err := readLimit(path, limit)
	return data, err
}

func readLimit(path string, limit int) ([]byte, unix.Stat_t, error) {
	var data []byte
	st, err := withConf(path, limit, func(fd int, st *unix.Stat_t) (err error) {
		data, err = readAll(fd, int(st.Size), limit)
		return err
	})
	return data, st, err
}

// withConf opens the conf file at path and calls use with its descriptor
// and status, again (from the start of the file) while the file's status
// changed across the call, three times at most.
//
// Whoever can rename a file in the conf file's directory chooses its
// content as surely as its owner, so every directory from / down must pass
// the rule of chroot.OpenTrusted, and the file is opened relative to the
// checked directory without following a symbolic link. The file must be a
// regular file owned by root (or by the caller's effective uid), not
// writable by group or others, and at most limit bytes.
func withConf(path string, limit int, use func(fd int, st *unix.Stat_t) error) (unix.Stat_t, error) {
	var st unix.Stat_t
	euid := uint32(os.Geteuid())
	abs, err := filepath.Abs(path)
	if err != nil {
		return st, &LineError{File: path, Msg: "cannot open: " + err.Error()}
	}
	dir, err := chroot.OpenTrusted(filepath.Dir(abs), euid)
	if err != nil {
		return st, &LineError{File: path, Msg: "its directory is not safe: " + err.Error()}
	}
	fd, err := unix.Openat(dir.Fd(), filepath.Base(abs), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	dir.Close()
	if err == unix.ELOOP {
		return st, &LineError{File: path, Msg: "is a symbolic link"}
	}
	if err != nil {
		return st, &LineError{File: path, Msg: "cannot open: " + errText(err)}
	}
	defer unix.Close(fd)
	for try := 0; try < 3; try++ {
		if err := unix.Fstat(fd, &st); err != nil {
			return st, &LineError{File: path, Msg: "cannot stat: " + errText(err)}
		}
		if err := checkFileMode(&st, euid); err != nil {
			return st, &LineError{File: path, Msg: err.Error()}
		}
		if st.Size > int64(limit) {
			return st, &LineError{File: path, Msg: fmt.Sprintf("is %d bytes; the limit is %d", st.Size, limit)}
		}
		if err := use(fd, &st); err != nil {
			var le *LineError
			if errors.As(err, &le) {
				return st, err
			}
			return st, &LineError{File: path, Msg: "cannot read: " + errText(err)}
		}
		var after unix.Stat_t
		if unix.Fstat(fd, &after) == nil && after.Size == st.Size && after.Mtim == st.Mtim && after.Ctim == st.Ctim {
			return st, nil
		}
		if _, err := unix.Seek(fd, 0, 0); err != nil {
			break
		}
	}
	return st, &LineError{File: path, Msg: "kept changing while being read"}
}

// Timestamp granularities Racy assumes. Linux stamps files from a clock
// that moves once per timer tick (10 ms at HZ=100, the coarsest), and many
// file systems keep whole seconds (ext4 with small inodes) or two (FAT);
// a status whose times have no nanoseconds is taken to be of the latter.
const (
	racyFine   = 50 * time.Millisecond
	racyCoarse = 2 * time.Second
)

// Racy reports whether a read of the file with status st that began at
// start may hold other content than the file has now with that very same
// status: a write within the same timestamp granularity as the last change
// leaves size, mtime and ctime as they were (git calls such an index entry
// racy). A caller that keys content by status must not vouch for a racy
// read; it reads the file again once RacyUntil has passed.
func Racy(st *unix.Stat_t, start time.Time) bool {
	return start.Before(RacyUntil(st))
}

// RacyUntil is when a read of the file with status st stops being racy.
func RacyUntil(st *unix.Stat_t) time.Time {
	window := racyFine
	if st.Ctim.Nsec == 0 && st.Mtim.Nsec == 0 {
		window = racyCoarse
	}
	return time.Unix(st.Ctim.Unix()).Add(window)
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

// readAll reads at most limit bytes; sizeHint is fstat's size, which may
// be stale, so the read goes on until EOF.
func readAll(fd, sizeHint, limit int) ([]byte, error) {
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
		if len(buf) > limit {
			return nil, fmt.Errorf("file grew past %d bytes", limit)
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
