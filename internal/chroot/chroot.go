// Package chroot opens a root directory without races and enters it.
//
// Open walks the path one component at a time from "/", opening each with
// openat2(RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|RESOLVE_BENEATH) relative
// to the one before and checking the opened directory with fstat: it must be
// a directory owned by root and not writable by group or others (the OpenSSH
// ChrootDirectory rule). Because every component checked so far can only be
// changed by root, nobody else can swap a later component between the check
// and the use, and the descriptor Open returns is the directory that was
// checked. Enter then uses that descriptor, never the path again.
package chroot

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir is an opened and checked root directory.
type Dir struct {
	Path string
	fd   int
}

// Error says which component of a root failed which rule.
type Error struct {
	Path    string // the component, e.g. "/virtual" of "/virtual/a"
	Problem string
	Errno   unix.Errno // the system error, when there was one
}

func (e *Error) Error() string { return e.Path + " " + e.Problem }

// Open opens path, which must be absolute and clean, checking every
// component. The caller must Close the returned Dir.
func Open(path string) (*Dir, error) {
	return walk(path, rootOnly)
}

// OpenTrusted opens the directory path as Open does, under a rule for a
// directory whose contents decide what is trusted (the conf files'
// directory): every component owned by root or by owner, not writable by
// group or others, no symbolic links. A sticky directory writable by
// others (/tmp) is allowed on the way when the next component is owned by
// root or owner, since then nobody else can rename or replace it.
func OpenTrusted(path string, owner uint32) (*Dir, error) {
	return walk(path, trustedBy(owner))
}

// rule checks one opened component; parent is the status of the one
// before it (nil for "/").
type rule func(st, parent *unix.Stat_t, path string) error

func rootOnly(st, _ *unix.Stat_t, path string) error {
	switch {
	case st.Uid != 0:
		return &Error{Path: path, Problem: fmt.Sprintf("is owned by uid %d, not by root", st.Uid)}
	case st.Mode&0o022 != 0:
		return &Error{Path: path, Problem: fmt.Sprintf("is writable by group or others (mode %04o)", st.Mode&0o7777)}
	}
	return nil
}

func trustedBy(owner uint32) rule {
	return func(st, parent *unix.Stat_t, path string) error {
		switch {
		case st.Uid != 0 && st.Uid != owner:
			return &Error{Path: path, Problem: fmt.Sprintf("is owned by uid %d, not by root or uid %d", st.Uid, owner)}
		case parent != nil && parent.Mode&0o022 != 0 && parent.Mode&unix.S_ISVTX == 0:
			return &Error{Path: filepath.Dir(path), Problem: fmt.Sprintf("is writable by group or others (mode %04o) and not sticky", parent.Mode&0o7777)}
		}
		return nil
	}
}

// lastWritable is the rule's final check: the directory returned must not
// be writable by others at all, sticky or not.
func lastWritable(st *unix.Stat_t, path string) error {
	if st.Mode&0o022 != 0 {
		return &Error{Path: path, Problem: fmt.Sprintf("is writable by group or others (mode %04o)", st.Mode&0o7777)}
	}
	return nil
}

func walk(path string, ok rule) (*Dir, error) {
	// One walk, on every connection's path: the chain's room made once.
	w := walker{ok: ok, chain: make([]opened, 0, strings.Count(path, "/")+1)}
	if err := w.to(path); err != nil {
		w.close()
		return nil, err
	}
	last := w.chain[len(w.chain)-1]
	w.chain = w.chain[:len(w.chain)-1]
	w.close()
	return &Dir{Path: path, fd: last.fd}, nil
}

// walker walks paths one component at a time under a rule, and keeps the
// directories of the last path it walked open and checked (chain), so
// that a path that shares some with it opens only the rest.
type walker struct {
	ok    rule
	chain []opened // "/" first, then each component of the last path
}

type opened struct {
	path string
	fd   int
	st   unix.Stat_t
}

// to walks to path; when it succeeds, the chain ends with path's
// directory; when it fails, with the last directory that passed.
func (w *walker) to(path string) error {
	if !strings.HasPrefix(path, "/") {
		return &Error{Path: path, Problem: "is not an absolute path"}
	}
	prefixes := make([]string, 0, strings.Count(path, "/")) // "/a", "/a/b", ... of path
	for end := 0; end < len(path) && path != "/"; {
		start := end + 1
		if end = strings.IndexByte(path[start:], '/'); end < 0 {
			end = len(path)
		} else {
			end += start
		}
		if name := path[start:end]; name == "" || name == "." || name == ".." {
			return &Error{Path: path, Problem: "is not a clean path"}
		}
		prefixes = append(prefixes, path[:end])
	}
	if len(w.chain) == 0 {
		fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return openError("/", err)
		}
		o := opened{path: "/", fd: fd}
		if err := check(fd, "/", w.ok, nil, &o.st); err != nil {
			unix.Close(fd)
			return err
		}
		w.chain = append(w.chain, o)
	}
	shared := 0
	for shared < len(prefixes) && shared+1 < len(w.chain) && w.chain[shared+1].path == prefixes[shared] {
		shared++
	}
	w.truncate(shared + 1)
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH,
	}
	for _, prefix := range prefixes[shared:] {
		parent := &w.chain[len(w.chain)-1]
		name := prefix[len(parent.path):]
		if parent.path != "/" {
			name = name[1:]
		}
		fd, err := unix.Openat2(parent.fd, name, &how)
		if err != nil {
			return explain(parent.fd, name, prefix, err)
		}
		o := opened{path: prefix, fd: fd}
		if err := check(fd, prefix, w.ok, &parent.st, &o.st); err != nil {
			unix.Close(fd)
			return err
		}
		w.chain = append(w.chain, o)
	}
	return lastWritable(&w.chain[len(w.chain)-1].st, path)
}

// truncate closes the chain's directories past the first n.
func (w *walker) truncate(n int) {
	for _, o := range w.chain[n:] {
		unix.Close(o.fd)
	}
	w.chain = w.chain[:n]
}

func (w *walker) close() { w.truncate(0) }

// Checker checks many directories in a row as Open would, for a report
// (ipwatchd's pass over a conf file's roots): it keeps the directories of
// the last path it checked open, so that a path sharing them costs only
// its other components (a root of /virtual/a after /virtual/b: an open
// and a stat, not three of each). What it says of a shared directory is
// as of when it was first opened in the pass; a root is entered only
// through Open, which checks every component again.
type Checker struct{ w walker }

// Check says whether path passes Open's rule, as Open says it.
func (c *Checker) Check(path string) error {
	c.w.ok = rootOnly
	return c.w.to(path)
}

// Close closes the directories the checker keeps.
func (c *Checker) Close() { c.w.close() }

// check applies the rule to one opened component, leaving its status in st.
func check(fd int, path string, ok rule, parent, st *unix.Stat_t) error {
	if err := unix.Fstat(fd, st); err != nil {
		return &Error{Path: path, Problem: "cannot be checked: " + err.Error()}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return &Error{Path: path, Problem: "is not a directory"}
	}
	return ok(st, parent, path)
}

// explain turns an openat2 failure into words: the kernel says ELOOP for a
// symbolic link and ENOTDIR for a file, which people do not read as such.
func explain(dirfd int, name, path string, err error) error {
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			return &Error{Path: path, Problem: "is a symbolic link", Errno: errnoOf(err)}
		case unix.S_IFDIR:
		default:
			return &Error{Path: path, Problem: "is not a directory", Errno: errnoOf(err)}
		}
	}
	return openError(path, err)
}

func openError(path string, err error) error {
	errno := errnoOf(err)
	switch errno {
	case unix.ENOENT:
		return &Error{Path: path, Problem: "does not exist", Errno: errno}
	case unix.ENOSYS:
		return &Error{Path: path, Problem: "cannot be opened safely: this kernel has no openat2 (Linux 5.6 or later is needed)", Errno: errno}
	}
	return &Error{Path: path, Problem: "cannot be opened: " + err.Error(), Errno: errno}
}

func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	errors.As(err, &errno)
	return errno
}

// Fd is the directory's descriptor (O_PATH, close-on-exec), for resolving
// paths inside the root.
func (d *Dir) Fd() int { return d.fd }

// Close releases the directory.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Enter makes the opened directory the process's root and working
// directory. It needs CAP_SYS_CHROOT.
func (d *Dir) Enter() error {
	if err := unix.Fchdir(d.fd); err != nil {
		return fmt.Errorf("fchdir to %s: %w", d.Path, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot to %s: %w", d.Path, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir to / inside %s: %w", d.Path, err)
	}
	return nil
}
