// Package install builds a root directory for virtuald, as the Virtual
// Services HOWTO's virtfs script and jailkit's jk_cp did: it copies
// programs of the host into the root at the same paths, with their ELF
// interpreter and every shared library the loader will map for them
// (elfdeps.Resolve), the symbolic links on the way included; optionally
// the device nodes a service expects and its user's passwd and group lines.
//
// A root belongs to a tenant, who may own files inside it and plant
// symbolic links anywhere it can write. So install works only through
// descriptors: the root is opened and checked with virtuald's own rule
// (chroot.Open), and every directory below it is opened relative to the
// one before with openat2(RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH) and
// checked with fstat to be root's and not writable by group or others:
// nobody else can then rename, replace or swap anything in it while
// install works. Files are written to a fresh temporary name in such a
// directory and renamed over their place; a symbolic link, directory or
// device found where install would write is reported, never followed or
// replaced. The host side is trusted: it is root's own file system.
package install

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/elfdeps"
	"github.com/virtuald/virtuald/internal/service"
	"golang.org/x/sys/unix"
)

// Options say what to install besides the programs.
type Options struct {
	DryRun   bool       // report what would change, change nothing
	Dev      bool       // dev/null, dev/zero, dev/urandom, and dev/ for the log relay
	User     string     // a user whose passwd and group lines the root gets ("" for none)
	Profiles []*Profile // what services need besides their programs
	Out      io.Writer  // one line per change
}

// hostPath is where a program given by name is looked up on the host.
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const (
	maxLinks   = 40      // symbolic links followed for one path, as the kernel
	maxScripts = 4       // #! interpreters followed from one program
	maxEtcFile = 1 << 20 // an existing etc/passwd or etc/group read at most
)

// Run installs programs into root and reports how many changes it made
// (or, in a dry run, would make). A root that virtuald would refuse is
// refused; a missing root is created when its parent passes the same
// checks. After installing, every program is checked inside the root as
// `ipwatchctl check -program` checks it.
func Run(root string, programs []string, o Options) (int, error) {
	in := &inst{root: root, dry: o.DryRun, out: o.Out, placed: map[string]bool{}, said: map[string]bool{}}
	if err := in.openRoot(); err != nil {
		return 0, err
	}
	defer in.close()
	host, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(host)
	var paths []string
	for _, pr := range o.Profiles {
		programs = append(programs, pr.Programs...)
		for _, m := range pr.Modules {
			hp, err := findModule(m)
			if err != nil {
				return in.changes, fmt.Errorf("profile %s: %w", pr.Name, err)
			}
			programs = append(programs, hp)
		}
		o.Dev = o.Dev || pr.Dev
	}
	for _, p := range programs {
		hp, err := lookHost(p)
		if err != nil {
			return in.changes, err
		}
		if slices.Contains(paths, hp) {
			continue
		}
		paths = append(paths, hp)
		if err := in.program(service.In(host), hp, 0); err != nil {
			return in.changes, err
		}
	}
	if o.Dev {
		if err := in.devices(); err != nil {
			return in.changes, err
		}
	}
	if o.User != "" {
		if err := in.user(o.User); err != nil {
			return in.changes, err
		}
	}
	for _, pr := range o.Profiles {
		if err := in.profile(pr); err != nil {
			return in.changes, fmt.Errorf("profile %s: %w", pr.Name, err)
		}
	}
	if in.dry && in.changes > 0 {
		return in.changes, nil // the root is not there yet to be checked
	}
	for _, p := range paths {
		if err := checkInstalled(service.In(in.rootFd), p); err != nil {
			return in.changes, fmt.Errorf("installed, but %s cannot start in %s: %v", p, root, err)
		}
	}
	return in.changes, nil
}

// checkInstalled checks a program as `check -program` does, and a file
// that is not executable (a library, or a module its program loads with
// dlopen, such as a PAM or NSS module) as the loader will load it.
func checkInstalled(root service.Root, p string) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err == nil && st.Mode&0o111 == 0 {
		return root.CheckLibrary(p)
	}
	_, err := root.Check(p, nil)
	return err
}

// lookHost finds a program given by name in the host's usual PATH.
func lookHost(p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p), nil
	}
	if strings.Contains(p, "/") {
		return "", fmt.Errorf("%s: give a program as an absolute path or a name", p)
	}
	for _, d := range strings.Split(hostPath, ":") {
		var st unix.Stat_t
		if unix.Stat(d+"/"+p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			return d + "/" + p, nil
		}
	}
	return "", fmt.Errorf("%s is not in %s on this host", p, hostPath)
}

// inst is one run of install.
type inst struct {
	root    string
	rootFd  int // -1 in a dry run, when the root is yet to be made
	dry     bool
	out     io.Writer
	changes int
	placed  map[string]bool // host paths already installed in this run
	said    map[string]bool // changes reported
}

// dir is a checked directory inside the root, or one a dry run would
// make (fd -1); path is its path inside the root.
type dir struct {
	fd   int
	path string
}

func (in *inst) close() {
	if in.rootFd >= 0 {
		unix.Close(in.rootFd)
	}
}

// show is a path inside the root as the host names it.
func (in *inst) show(p string) string { return path.Join(in.root, p) }

// change reports one change, once: a dry run meets the directories it
// would make again on every path through them.
func (in *inst) change(format string, args ...any) {
	if in.dry {
		format = "would " + format
	}
	line := fmt.Sprintf(format, args...)
	if in.said[line] {
		return
	}
	in.said[line] = true
	in.changes++
	fmt.Fprintln(in.out, line)
}

// openRoot opens the root with virtuald's checks, making it first when
// it does not exist, with every missing directory above it: each one in
// a parent that passes the same checks, root's, mode 0755.
func (in *inst) openRoot() error {
	if in.root == "/" {
		// virtuald serves "/" (default /), but install would write the
		// host's own etc/passwd and libraries.
		return errors.New("/ is the host's own root: install builds the root of a virtual host, give its directory")
	}
	var missing []string // from the root up to the first missing directory
	d, err := chroot.Open(in.root)
	var ce *chroot.Error
	if errors.As(err, &ce) && ce.Errno == unix.ENOENT && (ce.Path == in.root || strings.HasPrefix(in.root, ce.Path+"/")) {
		for p := in.root; len(p) >= len(ce.Path); p = path.Dir(p) {
			missing = append(missing, p)
		}
		d, err = chroot.Open(path.Dir(ce.Path))
	}
	if err != nil {
		return fmt.Errorf("%v: virtuald would refuse this root", err)
	}
	if in.dry && len(missing) > 0 {
		for i := len(missing) - 1; i >= 0; i-- {
			in.change("create directory %s", missing[i])
		}
		d.Close()
		in.rootFd = -1
		return nil
	}
	for i := len(missing) - 1; i >= 0; i-- {
		in.change("create directory %s", missing[i])
		err := mkdir(d.Fd(), path.Base(missing[i]))
		d.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", missing[i], err)
		}
		if d, err = chroot.Open(missing[i]); err != nil {
			return fmt.Errorf("%v: virtuald would refuse this root", err)
		}
	}
	in.rootFd, err = unix.Dup(d.Fd())
	d.Close()
	return err
}

// mkdir makes name in parent, root's with mode 0755 whatever the umask.
func mkdir(parent int, name string) error {
	if err := unix.Mkdirat(parent, name, 0o700); err != nil {
		return err
	}
	return unix.Fchmodat(parent, name, 0o755, 0)
}

// program installs the program at hostPath (absolute, on the host), its
// interpreter and its libraries, or a script and its #! interpreter.
func (in *inst) program(host service.Root, hostPath string, depth int) error {
	c, err := elfdeps.Resolve(host, hostPath, "")
	if errors.Is(err, elfdeps.ErrNotELF) {
		if err := in.place(hostPath); err != nil {
			return err
		}
		head, _ := host.ReadFile(hostPath, 256)
		line, _, _ := strings.Cut(strings.TrimPrefix(string(head), "#!"), "\n")
		if f := strings.Fields(line); strings.HasPrefix(string(head), "#!") && len(f) > 0 && depth < maxScripts {
			return in.program(host, f[0], depth+1)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", hostPath, err)
	}
	if c.InterpMissing || len(c.Missing) > 0 || c.Truncated {
		return fmt.Errorf("%s cannot start on this host either (its interpreter or libraries are missing): not installed", hostPath)
	}
	files := []string{}
	if c.Interp != "" {
		files = append(files, c.Interp)
	}
	for _, o := range c.Objects {
		files = append(files, o.Path)
	}
	for _, f := range files {
		if err := in.place(f); err != nil {
			return err
		}
	}
	return nil
}

// place makes hostPath resolve inside the root to a copy of the host's
// file: it walks the path on the host and in the root side by side,
// making the directories and symbolic links the host has on the way (a
// directory the root already has where the host has a link is kept, and
// the host's link followed), and copies the file at the end.
func (in *inst) place(hostPath string) error {
	if in.placed[hostPath] {
		return nil
	}
	in.placed[hostPath] = true
	queue := strings.Split(strings.TrimPrefix(hostPath, "/"), "/")
	host := "/"
	cur, err := in.reopen("/")
	if err != nil {
		return err
	}
	defer func() { cur.close() }()
	links := 0
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			host = path.Dir(host)
			cur.close()
			if cur, err = in.reopen(path.Dir(cur.path)); err != nil {
				return err
			}
			continue
		}
		hp := path.Join(host, name)
		var st unix.Stat_t
		if err := unix.Lstat(hp, &st); err != nil {
			return fmt.Errorf("%s: %w", hp, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			next, err := in.subdir(cur, name)
			if err != nil {
				return err
			}
			cur.close()
			cur, host = next, hp
		case unix.S_IFLNK:
			if links++; links > maxLinks {
				return fmt.Errorf("%s: too many levels of symbolic links", hostPath)
			}
			target, err := os.Readlink(hp)
			if err != nil {
				return err
			}
			kept, err := in.link(cur, name, target)
			if err != nil {
				return err
			}
			if kept.path != "" {
				// The root's own directory stands where the host has
				// a link: go on inside it, and on the host behind the link.
				if host, err = realpath(hp); err != nil {
					return err
				}
				cur.close()
				cur = kept
				continue
			}
			if strings.HasPrefix(target, "/") {
				host = "/"
				cur.close()
				if cur, err = in.reopen("/"); err != nil {
					return err
				}
			}
			queue = append(strings.Split(target, "/"), queue...)
		case unix.S_IFREG:
			if len(queue) > 0 {
				return fmt.Errorf("%s: not a directory", hp)
			}
			return in.file(cur, name, hp, &st)
		default:
			return fmt.Errorf("%s is not a regular file, directory or symbolic link: not installed", hp)
		}
	}
	return fmt.Errorf("%s is a directory, not a program or library", hostPath)
}

func realpath(p string) (string, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
}

func (d dir) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
	}
}

// reopen opens the directory p (a clean path inside the root) from the
// root's descriptor, one checked component at a time.
func (in *inst) reopen(p string) (dir, error) {
	d := dir{fd: -1, path: "/"}
	if in.rootFd >= 0 {
		fd, err := unix.Dup(in.rootFd)
		if err != nil {
			return d, err
		}
		d.fd = fd
	}
	for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if name == "" {
			continue
		}
		next, err := in.subdir(d, name)
		d.close()
		if err != nil {
			return next, err
		}
		d = next
	}
	return d, nil
}

// openHow opens one name in a checked directory: no symbolic link, no
// way out of it.
func openHow(flags uint64) *unix.OpenHow {
	return &unix.OpenHow{Flags: flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH}
}

// subdir opens the directory name in d, making it when it is missing,
// and checks it is root's and not writable by group or others.
func (in *inst) subdir(d dir, name string) (dir, error) {
	p := path.Join(d.path, name)
	next := dir{fd: -1, path: p}
	if d.fd < 0 {
		in.change("create directory %s", in.show(p))
		return next, nil
	}
	fd, err := unix.Openat2(d.fd, name, openHow(unix.O_RDONLY|unix.O_DIRECTORY))
	if err == unix.ENOENT {
		in.change("create directory %s", in.show(p))
		if in.dry {
			return next, nil
		}
		if err := mkdir(d.fd, name); err != nil {
			return next, fmt.Errorf("%s: %w", in.show(p), err)
		}
		fd, err = unix.Openat2(d.fd, name, openHow(unix.O_RDONLY|unix.O_DIRECTORY))
	}
	if err != nil {
		return next, in.inTheWay(d, name, "a directory", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return next, err
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		unix.Close(fd)
		return next, fmt.Errorf("%s is owned by uid %d with mode %04o: install writes only in directories owned by root and not writable by group or others", in.show(p), st.Uid, st.Mode&0o7777)
	}
	next.fd = fd
	return next, nil
}

// inTheWay explains why name in d could not be opened or written as
// want: usually a symbolic link or something else planted there.
func (in *inst) inTheWay(d dir, name, want string, err error) error {
	p := in.show(path.Join(d.path, name))
	var st unix.Stat_t
	if unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, _ := readlinkat(d.fd, name)
			return fmt.Errorf("%s is a symbolic link to %s where install needs %s: refused (it never writes through a link, nor replaces one it would not make)", p, target, want)
		case unix.S_IFDIR:
			return fmt.Errorf("%s is a directory where install needs %s: refused", p, want)
		default:
			return fmt.Errorf("%s is %s where install needs %s: refused", p, Kind(st.Mode), want)
		}
	}
	return fmt.Errorf("%s: %w", p, err)
}

// Kind names the type of a file in words (for messages about what is
// found in a root where something else belongs).
func Kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "not a regular file"
}

func readlinkat(fd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// link makes the symbolic link name -> target in d, as the host has it.
// When the root already has a directory there, it returns that directory
// (checked), for place to go on inside it; a link to anything else, or
// another kind of file, is refused.
func (in *inst) link(d dir, name, target string) (dir, error) {
	p := path.Join(d.path, name)
	if d.fd < 0 {
		in.change("link %s -> %s", in.show(p), target)
		return dir{}, nil
	}
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		in.change("link %s -> %s", in.show(p), target)
		if in.dry {
			return dir{}, nil
		}
		if err := unix.Symlinkat(target, d.fd, name); err != nil {
			return dir{}, fmt.Errorf("%s: %w", in.show(p), err)
		}
		return dir{}, nil
	case err != nil:
		return dir{}, fmt.Errorf("%s: %w", in.show(p), err)
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		if have, err := readlinkat(d.fd, name); err != nil || have != target {
			return dir{}, fmt.Errorf("%s is a symbolic link to %s where the host has one to %s: refused (install never replaces a link it did not make)", in.show(p), have, target)
		}
		return dir{}, nil
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return in.subdir(d, name)
	}
	return dir{}, fmt.Errorf("%s is %s where the host has a symbolic link to %s: refused", in.show(p), Kind(st.Mode), target)
}

// file copies the host's regular file hostPath to name in d: root's,
// with the host's permission bits less set-id bits and any write bit but
// the owner's (a set-uid copy would be a way up inside every root).
// Unchanged when the root's copy is the same.
func (in *inst) file(d dir, name, hostPath string, hst *unix.Stat_t) error {
	p := path.Join(d.path, name)
	mode := hst.Mode & 0o755
	if d.fd >= 0 {
		same, err := in.same(d, name, hostPath, mode)
		if err != nil || same {
			return err
		}
	}
	verb := "copy"
	if d.fd >= 0 && unix.Fstatat(d.fd, name, new(unix.Stat_t), unix.AT_SYMLINK_NOFOLLOW) == nil {
		verb = "replace"
	}
	in.change("%s %s to %s", verb, hostPath, in.show(p))
	if in.dry {
		return nil
	}
	src, err := os.Open(hostPath)
	if err != nil {
		return err
	}
	defer src.Close()
	return in.write(d, name, mode, func(f *os.File) error {
		_, err := io.Copy(f, src)
		return err
	})
}

// same reports whether name in d is a regular file of root's with mode
// and the content of hostPath. Anything but a regular file there is an
// error: install does not replace links, directories or devices.
func (in *inst) same(d dir, name, hostPath string, mode uint32) (bool, error) {
	var st unix.Stat_t
	switch err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%s: %w", in.show(path.Join(d.path, name)), err)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		// Not opened: opening a device can act on it.
		return false, in.inTheWay(d, name, "a regular file", unix.EEXIST)
	case st.Uid != 0 || st.Gid != 0 || st.Mode&0o7777 != mode:
		return false, nil
	}
	fd, err := unix.Openat2(d.fd, name, openHow(unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY))
	if err != nil {
		return false, in.inTheWay(d, name, "a regular file", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, err
	}
	src, err := os.Open(hostPath)
	if err != nil {
		return false, err
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil || fi.Size() != st.Size {
		return false, err
	}
	return sameContent(f, src)
}

func sameContent(a, b io.Reader) (bool, error) {
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

// write writes name in d through a fresh temporary name in the same
// checked directory, root's with mode, then renames it into place: the
// old file (if any) is replaced whole, and no path is ever opened for
// writing that someone else could have chosen.
func (in *inst) write(d dir, name string, mode uint32, fill func(*os.File) error) error {
	s, err := in.stage(d, name, mode, fill)
	if err != nil {
		return err
	}
	return s.commit()
}

// staged is a file written to its temporary name, not yet in its place.
// A nil *staged is a file with nothing to change.
type staged struct {
	d         dir
	tmp, name string
	show      string
}

// stage is write's first half: the temporary file, filled, synced.
func (in *inst) stage(d dir, name string, mode uint32, fill func(*os.File) error) (*staged, error) {
	tmp := tempName(name)
	fd, err := unix.Openat2(d.fd, tmp, openHow(unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.show(path.Join(d.path, tmp)), err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	err = fill(f)
	if err == nil {
		err = f.Chown(0, 0)
	}
	if err == nil {
		err = f.Chmod(os.FileMode(mode))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	s := &staged{d: d, tmp: tmp, name: name, show: in.show(path.Join(d.path, name))}
	if err != nil {
		s.abort()
		return nil, fmt.Errorf("%s: %w", s.show, err)
	}
	return s, nil
}

// commit renames the staged file into its place.
func (s *staged) commit() error {
	if s == nil {
		return nil
	}
	if err := unix.Renameat(s.d.fd, s.tmp, s.d.fd, s.name); err != nil {
		s.abort()
		return fmt.Errorf("%s: %w", s.show, err)
	}
	return nil
}

// abort removes the staged file.
func (s *staged) abort() {
	if s != nil {
		unix.Unlinkat(s.d.fd, s.tmp, 0)
	}
}

// commitAll commits every staged file, or, when one cannot be put in
// place, aborts the ones not yet committed.
func commitAll(files ...*staged) error {
	for i, s := range files {
		if err := s.commit(); err != nil {
			for _, rest := range files[i+1:] {
				rest.abort()
			}
			return err
		}
	}
	return nil
}

func tempName(name string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return ".ipwatchctl-install." + hex.EncodeToString(b) + "." + name
}
