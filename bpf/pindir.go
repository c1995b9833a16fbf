package bpf

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pinDir is a pin directory held open. bpffs is often mounted 1777, so a
// local user can make the pin directory, or one on its way, before
// ipwatchd, or swap one for a symbolic link: whoever owns the directory
// can swap the pins in it, and the daemon would count into (and report)
// maps of theirs. So the directory is opened one component at a time and
// checked through its descriptor, and everything Open and Remove do in it
// goes through that descriptor, never through the path again: a rename
// after the check changes nothing.
type pinDir struct {
	path   string // absolute and clean, for messages
	parent int    // the directory holding it, for Remove's rmdir
	fd     int
}

// openPinDir opens the pin directory at path from /, one component at a
// time, following no symbolic link anywhere. With create, it makes the
// missing directories, mode 0700 whatever the umask; without, a missing
// one is an error that matches fs.ErrNotExist.
//
// The pin directory and every directory it makes must be root's with
// mode 0700. A directory above the pin directory that it found may be
// more open (/sys/fs/bpf is 1777 on some systems), but must be root's and
// writable by nobody else unless it is sticky: whoever can rename entries
// in it can swap the pin directory for one of theirs at the next start.
func openPinDir(path string, create bool) (*pinDir, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("bpf pin directory %s: %w", path, err)
	}
	if path == "/" {
		return nil, errors.New("bpf pin directory: / cannot be one")
	}
	above, name := filepath.Split(path)
	parent, err := openAbove(filepath.Clean(above), create)
	if err != nil {
		return nil, err
	}
	fd, err := openComponent(path, parent, name, create, true)
	if err != nil {
		unix.Close(parent)
		return nil, err
	}
	return &pinDir{path: path, parent: parent, fd: fd}, nil
}

// openAbove opens the directory dir holding a pin directory, from /, one
// component at a time: see openPinDir.
func openAbove(dir string, create bool) (int, error) {
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("bpf pin directory: opening /: %w", err)
	}
	if err := checkAbove("/", fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	at := ""
	for _, name := range strings.FieldsFunc(dir, func(r rune) bool { return r == '/' }) {
		at += "/" + name
		next, err := openComponent(at, fd, name, create, false)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// openComponent opens (with create, makes first if missing) the directory
// name in parent, whose path is at, and checks it: see openPinDir.
func openComponent(at string, parent int, name string, create, isPinDir bool) (int, error) {
	made := false
	if create {
		switch err := unix.Mkdirat(parent, name, 0o700); {
		case err == nil:
			made = true
		case !errors.Is(err, unix.EEXIST):
			return -1, fmt.Errorf("bpf pin directory: making %s: %w", at, err)
		}
	}
	fd, err := openDirNoSymlink(at, parent, name)
	if err != nil {
		return -1, err
	}
	if made {
		// The umask may have taken bits from 0700; nobody else can
		// open the directory in between, since it is ours and at most
		// 0700.
		if err := unix.Fchmod(fd, 0o700); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("bpf pin directory: chmod 0700 %s: %w", at, err)
		}
	}
	check := checkAbove
	if made || isPinDir {
		check = checkOwn
	}
	if err := check(at, fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// openDirNoSymlink opens the directory name in parent, refusing a
// symbolic link. (O_NOFOLLOW would not do: with O_DIRECTORY a symbolic
// link fails as "not a directory", and the message would mislead.)
func openDirNoSymlink(at string, parent int, name string) (int, error) {
	fd, err := unix.Openat2(parent, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	switch {
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("bpf pin directory: %s is a symbolic link: ipwatchd follows none on the way to its pins", at)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("bpf pin directory: %s is not a directory", at)
	case err != nil:
		return -1, fmt.Errorf("bpf pin directory: opening %s: %w", at, err)
	}
	return fd, nil
}

// checkOwn requires what ipwatchd makes: a directory of root's with mode
// 0700, so that nobody else can add, rename or remove a pin in it.
func checkOwn(at string, fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("bpf pin directory: stat %s: %w", at, err)
	}
	if st.Uid != 0 {
		return fmt.Errorf("bpf pin directory: %s is owned by uid %d, not root: remove it, ipwatchd makes it with mode 0700", at, st.Uid)
	}
	if mode := st.Mode & 0o7777; mode != 0o700 {
		return fmt.Errorf("bpf pin directory: %s has mode %04o, want 0700: remove it, ipwatchd makes it with mode 0700", at, mode)
	}
	return nil
}

// checkAbove requires of a directory above the pin directory that nobody
// but root can rename what it holds: root's, and not writable by group or
// others unless sticky (then only root renames the root-owned directory
// below it).
func checkAbove(at string, fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("bpf pin directory: stat %s: %w", at, err)
	}
	if st.Uid != 0 {
		return fmt.Errorf("bpf pin directory: %s is owned by uid %d, not root: its owner could swap the pin directory under it", at, st.Uid)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("bpf pin directory: %s has mode %04o, writable by others and not sticky: they could swap the pin directory under it", at, st.Mode&0o7777)
	}
	return nil
}

// at names the entry name of the directory through its descriptor, for
// the calls that take only a path (pinning, loading a pin): the kernel
// resolves /proc/self/fd/N to the directory held open, wherever it is now.
func (d *pinDir) at(name string) string {
	return "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + name
}

// lock serialises Open and Remove on one pin directory across processes
// (a daemon starting while `ipwatchd -bpf off` runs), with flock on the
// directory itself: bpffs holds no regular files to lock. close unlocks.
func (d *pinDir) lock() error {
	if err := unix.Flock(d.fd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", d.path, err)
	}
	return nil
}

// usable fails unless pins can be made in the directory: it is on bpffs,
// and its name through /proc (see at) reaches it.
func (d *pinDir) usable() error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(d.fd, &sfs); err != nil {
		return fmt.Errorf("bpf pin directory %s: %w", d.path, err)
	}
	if sfs.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not on bpffs", d.path)
	}
	var held, named unix.Stat_t
	if err := unix.Fstat(d.fd, &held); err != nil {
		return fmt.Errorf("bpf pin directory %s: %w", d.path, err)
	}
	if err := unix.Stat(d.at("."), &named); err != nil {
		return fmt.Errorf("bpf pin directory %s: ipwatchd names it through /proc: %w", d.path, err)
	}
	if named.Dev != held.Dev || named.Ino != held.Ino {
		return fmt.Errorf("bpf pin directory %s: %s is another directory: ipwatchd needs the /proc of its own pid namespace", d.path, d.at("."))
	}
	return nil
}

func (d *pinDir) close() {
	unix.Close(d.fd)
	unix.Close(d.parent)
}
