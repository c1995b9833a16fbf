package conftable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"golang.org/x/sys/unix"
)

// Dir is where the tables for the daemon listening at socketPath live:
// beside its socket, as its slow mark (ipc.SlowMark) is, since both
// stand in for it while it does not answer.
func Dir(socketPath string) string { return socketPath + ".tables" }

// Name is the file name of the table of the conf file named confPath
// (as the command line names it): the FNV-1a hash of the name, so that
// one file per conf is rewritten in place, never one per version.
func Name(confPath string) string { return fmt.Sprintf("%016x.table", fnv(confPath)) }

// MaxTable bounds a table the front maps (conf.MaxFileSize's entries
// take far less).
const MaxTable = 1 << 30

// Refresh writes the table of the conf file at confPath for the daemon
// at socketPath when there is none of the file as it is now. It does
// nothing when another process is writing it, and writes nothing when
// the file changed too recently for its identity to vouch for its
// content (conf.Racy): a later connection writes it. The directory is
// made when missing, and used only when it and every directory above it
// pass conf's rule for the conf files' own directory (root's, not
// writable by others). Refresh never fails a connection: an error only
// means the front has no table and hands the connection to the Go
// program, which reads the file.
//
// id is the file's identity as the caller found it: when the table is of
// that, nothing is read.
func Refresh(socketPath, confPath string, id ipc.FileID) error {
	dir, err := openDir(socketPath)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	name := Name(confPath)
	if has, err := readIdentity(dir, name); err == nil && has == id {
		return nil
	}
	lock, err := tryLock(dir)
	if lock < 0 {
		return err // nil: another connection writes it
	}
	defer unix.Close(lock)
	start := time.Now()
	data, st, err := conf.ReadStat(confPath)
	if err != nil {
		return err
	}
	if conf.Racy(&st, start) {
		return errors.New("the conf changed too recently for a table to be vouched for")
	}
	f, err := conf.Parse(confPath, data)
	if err != nil {
		return err
	}
	return write(dir, name, Build(f, ipc.FileIDOf(&st)))
}

// Read returns the table of confPath for the daemon at socketPath after
// the checks the front makes of the file (readable, root's, a regular
// file of one link not writable by others); its identity is the caller's
// to check.
func Read(socketPath, confPath string) ([]byte, error) {
	fd, st, err := openTable(unix.AT_FDCWD, filepath.Join(Dir(socketPath), Name(confPath)))
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	t := make([]byte, st.Size)
	if n, err := unix.Pread(fd, t, 0); err != nil || n != len(t) {
		return nil, fmt.Errorf("reading the table: %d of %d bytes: %v", n, len(t), err)
	}
	return t, check(t)
}

// openTable opens a table as the front does: no symbolic link, a regular
// file of one link (no hard link of another's), owned by root or this
// process's effective uid (whoever can write it chooses every root),
// writable by neither group nor others, of a size the front maps.
func openTable(dir int, name string) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, st, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, err
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1:
		err = errors.New("not a regular file of one link")
	case st.Uid != 0 && st.Uid != euid:
		err = fmt.Errorf("owned by uid %d", st.Uid)
	case st.Mode&0o022 != 0:
		err = fmt.Errorf("writable by group or others (mode %04o)", st.Mode&0o7777)
	case st.Size < HeaderSize || st.Size > MaxTable:
		err = fmt.Errorf("%d bytes", st.Size)
	}
	if err != nil {
		unix.Close(fd)
		return -1, st, fmt.Errorf("table %s: %w", name, err)
	}
	return fd, st, nil
}

// readIdentity is the identity in the header of the table name in dir.
func readIdentity(dir int, name string) (ipc.FileID, error) {
	fd, st, err := openTable(dir, name)
	if err != nil {
		return ipc.FileID{}, err
	}
	defer unix.Close(fd)
	var h [HeaderSize]byte
	if n, err := unix.Pread(fd, h[:], 0); err != nil || n != len(h) {
		return ipc.FileID{}, ErrFormat
	}
	if string(h[:8]) != Magic || uint64(st.Size) != binary.LittleEndian.Uint64(h[56:]) {
		return ipc.FileID{}, ErrFormat
	}
	return identityIn(h[:]), nil
}

// openDir opens the tables' directory, making it when missing.
func openDir(socketPath string) (int, error) {
	abs, err := filepath.Abs(Dir(socketPath))
	if err != nil {
		return -1, err
	}
	// The socket's directory too: ipwatchd's (/run/ipwatchd) is gone
	// while it is stopped, when the tables are needed.
	sockDir := filepath.Dir(abs)
	top, err := chroot.OpenTrusted(filepath.Dir(sockDir), uint32(os.Geteuid()))
	if err != nil {
		return -1, err
	}
	parent, err := makeDir(top.Fd(), sockDir)
	top.Close()
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	return makeDir(parent, abs)
}

// makeDir opens the directory path, named base in the open directory
// parent, making it when missing, and checks it as OpenTrusted checks
// each component: root's (or this process's euid's), not writable by
// group or others.
func makeDir(parent int, path string) (int, error) {
	base := filepath.Base(path)
	open := func() (int, error) {
		return unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	dir, err := open()
	if err == unix.ENOENT {
		if err = unix.Mkdirat(parent, base, 0o755); err == nil || err == unix.EEXIST {
			dir, err = open()
		}
	}
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	euid := uint32(os.Geteuid())
	if err := unix.Fstat(dir, &st); err != nil || st.Uid != 0 && st.Uid != euid || st.Mode&0o022 != 0 {
		unix.Close(dir)
		return -1, fmt.Errorf("%s is not a directory of root's that only root can write", path)
	}
	return dir, nil
}

// tryLock takes the directory's lock, under which one process at a time
// writes: -1 and nil when another holds it.
func tryLock(dir int) (int, error) {
	lock, err := unix.Openat(dir, ".lock", unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, err
	}
	if err := unix.Flock(lock, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(lock)
		return -1, nil
	}
	return lock, nil
}

// write replaces the table name in dir with t: written whole and synced
// under a name of its own, then renamed, so that a reader sees the old
// table or the new one, never part of one, even after a crash.
func write(dir int, name string, t []byte) error {
	tmp := name + ".new" // the caller holds the lock
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	err = writeAll(fd, t)
	if err == nil {
		err = unix.Fchmod(fd, 0o644) // whatever the umask
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dir, tmp, dir, name)
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
	}
	return err
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
