// Package service finds the real service program inside a root, starts it,
// and explains in words a person can act on why it could not.
//
// Every path is resolved inside the root, relative to the root's
// descriptor with openat2(RESOLVE_IN_ROOT): exactly as the service will see
// it after the chroot, symbolic links included, whether virtuald has
// already entered the root (per-connection mode) or starts the service
// into it (accept mode).
package service

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"github.com/virtuald/virtuald/internal/elfdeps"
	"golang.org/x/sys/unix"
)

// DefaultPath is what execvp(3), and so virtuald, searches when PATH is
// unset: under Debian's inetd, which gives services no PATH.
const DefaultPath = "/bin:/usr/bin"

// Root is a root directory, seen from inside.
type Root struct{ fd int }

// In returns the root whose directory descriptor is fd (owned by the caller).
func In(fd int) Root { return Root{fd: fd} }

// open opens p inside the root. flags is O_PATH or O_RDONLY; openat2,
// stricter than openat, refuses O_NOCTTY beside O_PATH.
func (r Root) open(p string, flags uint64) (int, error) {
	if flags != unix.O_PATH {
		flags |= unix.O_NOCTTY
	}
	return unix.Openat2(r.fd, p, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// errNotRegular refuses to read what is not a regular file.
var errNotRegular = errors.New("not a regular file")

// openRegular opens p inside the root for reading, only if it is a regular
// file, and returns its size. The tenant owns everything in its root: a
// FIFO where a program or library is expected would block a blocking open
// (as root, holding a slot of accept mode) until someone writes to it, and
// a device would be read from. So the open never blocks (O_NONBLOCK), and
// the opened file is checked with fstat before any read; every read is
// bounded by its caller.
func (r Root) openRegular(p string) (fd int, size int64, err error) {
	fd, err = r.open(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return -1, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, 0, errNotRegular
	}
	return fd, st.Size, nil
}

func (r Root) stat(p string, st *unix.Stat_t) error {
	fd, err := r.open(p, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fstat(fd, st)
}

// Exists reports whether p exists inside the root.
func (r Root) Exists(p string) bool {
	var st unix.Stat_t
	return r.stat(p, &st) == nil
}

// ReadFile reads at most limit bytes of p inside the root, which must be a
// regular file, into a buffer of the file's size (the limit is megabytes
// for the loader's cache: allocating it would cost a connection the page
// faults and a garbage collection).
func (r Root) ReadFile(p string, limit int) ([]byte, error) {
	fd, size, err := r.openRegular(p)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, min(size, int64(limit)))
	n, err := fileAt(fd).ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return b[:n], nil
}

// LookPath finds program as execvp(3) would: a name with a slash is used as
// it is, any other name is searched for in the PATH of env. It returns the
// first candidate that is an executable regular file.
func (r Root) LookPath(program string, env []string) (string, error) {
	if program == "" {
		return "", errors.New("the program name is empty")
	}
	if strings.Contains(program, "/") {
		return program, nil
	}
	pathEnv, ok := Getenv(env, "PATH")
	if !ok {
		pathEnv = DefaultPath
	}
	first := ""
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + program
		var st unix.Stat_t
		if r.stat(p, &st) != nil {
			continue
		}
		if first == "" {
			first = p
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			return p, nil
		}
	}
	if first != "" {
		// Exists but is not executable: let Explain say so.
		return first, nil
	}
	return "", fmt.Errorf("%s is not in PATH (%s) inside the root", program, pathEnv)
}

// Explain says why exec of path failed with err.
func (r Root) Explain(path string, err error, env []string) error {
	var errno syscall.Errno
	errors.As(err, &errno)
	var st unix.Stat_t
	if e := r.stat(path, &st); e != nil {
		if errno == syscall.ENOENT {
			return fmt.Errorf("%s does not exist inside the root", path)
		}
		return fmt.Errorf("%s: %v", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("%s is a directory, not a program", path)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is not a regular file", path)
	case errno == syscall.EACCES && st.Mode&0o111 == 0:
		return fmt.Errorf("%s is not executable (mode %04o)", path, st.Mode&0o7777)
	case errno == syscall.EACCES:
		return fmt.Errorf("%s: permission denied (a directory on its path is not searchable, or its file system is mounted noexec)", path)
	case errno == syscall.ENOEXEC:
		return fmt.Errorf("%s is not a program this machine can run (wrong architecture, or a script without #!)", path)
	case errno == syscall.ENOENT:
		if why, _ := r.missingDeps(path, env); why != "" {
			return fmt.Errorf("%s exists but %s", path, why)
		}
	}
	return fmt.Errorf("%s: %v", path, err)
}

// Why a program cannot start inside a root, for callers that sort the
// reasons (ipwatchd's status gives each its own state): Check's errors
// wrap one of these.
var (
	ErrMissing            = errors.New("missing")             // not found, not a regular file, or not executable
	ErrInterpreterMissing = errors.New("interpreter missing") // its ELF or #! interpreter is not inside the root
	ErrLibrariesMissing   = errors.New("libraries missing")   // a shared library of its closure is not inside the root
)

// notReady is a Check error: a reason for a person, and its kind.
type notReady struct {
	kind error
	why  string
}

func (e *notReady) Error() string { return e.why }
func (e *notReady) Unwrap() error { return e.kind }

// Check reports whether program can start inside the root: found, a
// regular executable file, with its interpreter and shared libraries
// present. It returns the program's path inside the root; its error wraps
// ErrMissing, ErrInterpreterMissing or ErrLibrariesMissing.
func (r Root) Check(program string, env []string) (string, error) {
	path, err := r.LookPath(program, env)
	if err != nil {
		return "", &notReady{ErrMissing, err.Error()}
	}
	var st unix.Stat_t
	switch err := r.stat(path, &st); {
	case err != nil:
		return path, &notReady{ErrMissing, path + " does not exist inside the root"}
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return path, &notReady{ErrMissing, path + " is not a regular file"}
	case st.Mode&0o111 == 0:
		return path, &notReady{ErrMissing, fmt.Sprintf("%s is not executable (mode %04o)", path, st.Mode&0o7777)}
	}
	if why, kind := r.missingDeps(path, env); why != "" {
		return path, &notReady{kind, path + " exists but " + why}
	}
	return path, nil
}

// CheckLibrary reports whether the shared object at path inside the root
// (a library, or a module a program loads itself with dlopen: a PAM or
// NSS module) can be loaded there: every library of its closure present.
func (r Root) CheckLibrary(path string) error {
	var st unix.Stat_t
	switch err := r.stat(path, &st); {
	case err != nil:
		return fmt.Errorf("%s does not exist inside the root", path)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is not a regular file", path)
	}
	if why, _ := r.missingDeps(path, nil); why != "" {
		return fmt.Errorf("%s exists but %s", path, why)
	}
	return nil
}

// MissingLibraries returns the shared libraries of the ELF program at path
// that the dynamic loader will not find inside the root, anywhere in its
// closure, each with the object that needs it when that is not the
// program ("" when none are missing or path is not a dynamic ELF
// program). The loader would report them on the service's stderr, which
// under inetd is the client's socket, and virtuald's log would say
// nothing. Most of its cost is reading the root's ld.so.cache, which the
// program's own libraries need as much as the rest of the closure.
func (r Root) MissingLibraries(path string, env []string) string {
	_, missing := r.Loaded(path, env)
	return missing
}

// Loaded is MissingLibraries with what it read when nothing is missing:
// the files the loader opens to start the program at path (the program,
// its ELF interpreter, each library, the root's /etc/ld.so.cache when
// there is one), or nil when it cannot say (not ELF, too many objects).
func (r Root) Loaded(path string, env []string) (files []string, missing string) {
	ld, _ := Getenv(env, "LD_LIBRARY_PATH")
	c, err := elfdeps.Resolve(r, path, ld)
	if err != nil {
		return nil, ""
	}
	if missing = lacking(c, path); missing != "" || c.InterpMissing || c.Truncated {
		return nil, missing
	}
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			files = append(files, p)
		}
	}
	add(path)
	add(c.Interp)
	for _, o := range c.Objects {
		add(o.Path)
	}
	if r.Exists("/etc/ld.so.cache") {
		add("/etc/ld.so.cache")
	}
	return files, ""
}

// lacking lists c's missing libraries, each with the object that needs it
// when that is not the program at path.
func lacking(c *elfdeps.Closure, path string) string {
	libs := make([]string, len(c.Missing))
	for i, m := range c.Missing {
		libs[i] = m.Name
		if m.NeededBy != path {
			libs[i] += " (needed by " + m.NeededBy + ")"
		}
	}
	return strings.Join(libs, ", ")
}

// missingDeps explains an ENOENT from execve for a file that exists, or
// what will keep the loader from starting it: its #! interpreter, or its
// ELF interpreter, is missing inside the root, or a library anywhere in
// its closure is (each named with the object that needs it, since the
// one missing is often not one the program names itself). kind is
// ErrInterpreterMissing or ErrLibrariesMissing, by the first that is.
func (r Root) missingDeps(path string, env []string) (why string, kind error) {
	if head, err := r.ReadFile(path, 256); err == nil && strings.HasPrefix(string(head), "#!") {
		line, _, _ := strings.Cut(string(head[2:]), "\n")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			return "", nil
		}
		interp := fields[0]
		if !r.Exists(interp) {
			return fmt.Sprintf("its script interpreter %s is missing inside the root", interp), ErrInterpreterMissing
		}
		// The interpreter's own libraries, once: an interpreter that is
		// a script again is the kernel's business (it follows four).
		if head, err := r.ReadFile(interp, 2); err == nil && string(head) == "#!" {
			return "", nil
		}
		if why, kind := r.missingDeps(interp, env); why != "" {
			return "its script interpreter " + interp + " cannot start: " + why, kind
		}
		return "", nil
	}
	ld, _ := Getenv(env, "LD_LIBRARY_PATH")
	c, err := elfdeps.Resolve(r, path, ld)
	if err != nil {
		return "", nil
	}
	var parts []string
	kind = ErrLibrariesMissing
	if c.InterpMissing {
		kind = ErrInterpreterMissing
		parts = append(parts, "its ELF interpreter "+c.Interp+" is missing inside the root")
	}
	if len(c.Missing) > 0 {
		parts = append(parts, "shared libraries it needs are missing inside the root: "+lacking(c, path))
	}
	if c.Truncated {
		parts = append(parts, fmt.Sprintf("it needs more than %d shared objects (the rest was not checked)", elfdeps.MaxObjects))
	}
	if len(parts) == 0 {
		return "", nil
	}
	return strings.Join(parts, "; ") + " (ipwatchctl install ROOT " + path + " copies what it needs)", kind
}

// Open opens p inside the root for reading, only if it is a regular file
// (elfdeps.FS).
func (r Root) Open(p string) (elfdeps.File, error) {
	fd, _, err := r.openRegular(p)
	if err != nil {
		return nil, err
	}
	return fileAt(fd), nil
}

// fileAt reads a descriptor with pread. It stands in for os.File, whose
// first use sets up the runtime's poller (an epoll descriptor, an eventfd
// and a thread) for nothing on virtuald's per-connection path.
type fileAt int

func (f fileAt) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Pread(int(f), b[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (f fileAt) Close() error { return unix.Close(int(f)) }

// Getenv returns the value of key in env (the last, when it is set twice)
// and whether it is set.
func Getenv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
