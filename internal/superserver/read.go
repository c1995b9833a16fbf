package superserver

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/conf"
	"golang.org/x/sys/unix"
)

// readFile reads one of root's configuration files under conf.Read's
// rules, at most MaxFileSize bytes. absent says there is nothing at path,
// which is no problem: that super-server is not configured here.
func (f *finder) readFile(path string) (data []byte, absent bool) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, true
	}
	data, err := conf.ReadLimit(filepath.Join(rootsLinks(filepath.Dir(path)), filepath.Base(path)), MaxFileSize)
	if err != nil {
		f.problem(path, reason(err))
		return nil, false
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		f.problem(path+":"+strconv.Itoa(1+bytes.Count(data[:i], []byte{'\n'})), "holds a NUL byte: this is not a text file")
		return nil, false
	}
	return data, false
}

// reason is a read error without the path it names (Problem.From has it).
func reason(err error) string {
	var le *conf.LineError
	if errors.As(err, &le) {
		return le.Msg
	}
	return err.Error()
}

// entry is one name in a directory read by readDir.
type entry struct {
	name   string
	mode   fs.FileMode // the type bits only
	target string      // a symbolic link's target
}

// readDir lists dir, sorted by name (C locale, as xinetd and systemd
// order files), after checking it as conf.Read checks a conf file's
// directory. Symbolic links are listed with their targets, never followed
// here: a caller that follows one reads the target under the same rules.
func (f *finder) readDir(dir string) (entries []entry, absent bool) {
	d, err := chroot.OpenTrusted(rootsLinks(dir), uint32(os.Geteuid()))
	if err != nil {
		var ce *chroot.Error
		if errors.As(err, &ce) && ce.Errno == unix.ENOENT {
			return nil, true
		}
		f.problem(dir, "is not safe to read: "+err.Error())
		return nil, false
	}
	defer d.Close()
	fd, err := unix.Openat(d.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		f.problem(dir, "cannot be listed: "+err.Error())
		return nil, false
	}
	file := os.NewFile(uintptr(fd), dir)
	defer file.Close()
	names, err := file.Readdirnames(maxFiles + 1)
	if err != nil && err != io.EOF { // io.EOF: empty
		f.problem(dir, "cannot be listed: "+err.Error())
		return nil, false
	}
	if len(names) > maxFiles {
		f.problem(dir, "holds more than "+strconv.Itoa(maxFiles)+" files; none is read")
		return nil, false
	}
	slices.Sort(names)
	for _, name := range names {
		var st unix.Stat_t
		if unix.Fstatat(d.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue // gone since the listing
		}
		e := entry{name: name, mode: fs.FileMode(st.Mode & unix.S_IFMT)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.mode = fs.ModeDir
		case unix.S_IFLNK:
			e.mode = fs.ModeSymlink
			buf := make([]byte, unix.PathMax)
			n, err := unix.Readlinkat(d.Fd(), name, buf)
			if err != nil {
				continue
			}
			e.target = string(buf[:n])
			if !filepath.IsAbs(e.target) {
				e.target = filepath.Join(dir, e.target)
			}
		case unix.S_IFREG:
			e.mode = 0
		default:
			e.mode = fs.ModeIrregular
		}
		entries = append(entries, e)
	}
	return entries, false
}

// rootsLinks resolves, in dir and the directories above it, the symbolic
// links that only root can have made: owned by root, in a directory owned
// by root and writable by nobody else, such as a merged /usr's /lib ->
// usr/lib, /bin and /sbin. They are the system's own: a unit read
// through them is root's as surely as through its real path, and without
// this every unit under /lib/systemd/system would be unreadable on a
// stock Debian. Any other link stays in the path, for the reader to
// refuse.
func rootsLinks(dir string) string {
	for range maxLinks {
		resolved, changed := rootsLink(dir)
		if !changed {
			return dir
		}
		dir = resolved
	}
	return dir
}

// maxLinks bounds the links rootsLinks follows, as the kernel's 40.
const maxLinks = 40

// rootsLink resolves the first of root's own links in dir, if any.
func rootsLink(dir string) (string, bool) {
	dir = filepath.Clean(dir)
	if !filepath.IsAbs(dir) {
		return dir, false
	}
	parts := strings.Split(strings.TrimPrefix(dir, "/"), "/")
	cur := "/"
	for i, part := range parts {
		if part == "" {
			continue
		}
		next := filepath.Join(cur, part)
		var st, parent unix.Stat_t
		if unix.Lstat(next, &st) != nil {
			return dir, false
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if st.Uid != 0 || unix.Stat(cur, &parent) != nil || parent.Uid != 0 || parent.Mode&0o022 != 0 {
				return dir, false
			}
			target, err := os.Readlink(next)
			if err != nil {
				return dir, false
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			return filepath.Join(append([]string{target}, parts[i+1:]...)...), true
		}
		cur = next
	}
	return dir, false
}
