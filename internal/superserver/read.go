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
	data, err := conf.ReadLimit(path, MaxFileSize)
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
	d, err := chroot.OpenTrusted(dir, uint32(os.Geteuid()))
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
