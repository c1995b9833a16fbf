// Package service finds and starts the real service program inside the
// current root, and explains in words a person can act on why it could not.
//
// It runs after the chroot, so every path it looks at is inside the root.
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

// defaultPath is what execvp(3) searches when PATH is unset.
const defaultPath = "/bin:/usr/bin"

// LookPath finds program as execvp(3) would: a name with a slash is used as
// it is, any other name is searched for in the PATH of env. It returns the
// first candidate that is an executable regular file.
func LookPath(program string, env []string) (string, error) {
	if program == "" {
		return "", errors.New("the program name is empty")
	}
	if strings.Contains(program, "/") {
		return program, nil
	}
	pathEnv, ok := getenv(env, "PATH")
	if !ok {
		pathEnv = defaultPath
	}
	first := ""
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + program
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
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
		// Exists but is not executable: let Exec explain it.
		return first, nil
	}
	return "", fmt.Errorf("%s is not in PATH (%s) inside the root", program, pathEnv)
}

// Exec replaces the process with the program at path. It returns only when
// the exec failed, with the reason in words.
func Exec(path string, argv, env []string) error {
	err := syscall.Exec(path, argv, env)
	return Explain(path, err, env)
}

// Explain says why exec of path failed with err.
func Explain(path string, err error, env []string) error {
	var errno syscall.Errno
	errors.As(err, &errno)
	var st unix.Stat_t
	if e := unix.Stat(path, &st); e != nil {
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
		if why := missingDeps(path, env); why != "" {
			return fmt.Errorf("%s exists but %s", path, why)
		}
	}
	return fmt.Errorf("%s: %v", path, err)
}

// MissingLibraries returns the shared libraries of the ELF program at path
// that the dynamic loader will not find inside the root ("" when none are
// missing or path is not a dynamic ELF program). The loader would report
// them on the service's stderr, which under inetd is the client's socket,
// and virtuald's log would say nothing.
func MissingLibraries(path string, env []string) string {
	info := readELF(path)
	if info == nil {
		return ""
	}
	ld, _ := getenv(env, "LD_LIBRARY_PATH")
	_, libs := info.Missing(rootFS{}, path, ld)
	return strings.Join(libs, ", ")
}

// missingDeps explains an ENOENT from execve for a file that exists: its
// #! interpreter, or its ELF interpreter, is missing inside the root.
func missingDeps(path string, env []string) string {
	head := make([]byte, 256)
	if b, err := (rootFS{}).ReadFile(path, len(head)); err == nil {
		head = b
	}
	if strings.HasPrefix(string(head), "#!") {
		line, _, _ := strings.Cut(string(head[2:]), "\n")
		fields := strings.Fields(line)
		if len(fields) > 0 {
			return fmt.Sprintf("its script interpreter %s is missing inside the root", fields[0])
		}
		return ""
	}
	info := readELF(path)
	if info == nil {
		return ""
	}
	ld, _ := getenv(env, "LD_LIBRARY_PATH")
	interp, libs := info.Missing(rootFS{}, path, ld)
	var parts []string
	if interp != "" {
		parts = append(parts, "its ELF interpreter "+interp+" is missing inside the root")
	}
	if len(libs) > 0 {
		parts = append(parts, "shared libraries it needs are missing inside the root: "+strings.Join(libs, ", "))
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, "; ") + " (copy them into the root: ldd lists what it needs)"
}

func readELF(path string) *elfdeps.Info {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	info, err := elfdeps.Read(fileAt(fd))
	if err != nil {
		return nil
	}
	return info
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

// rootFS is the file system as this process sees it: after the chroot, the
// root's.
type rootFS struct{}

func (rootFS) Exists(p string) bool {
	var st unix.Stat_t
	return unix.Stat(p, &st) == nil
}

func (rootFS) ReadFile(p string, limit int) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, limit)
	n, err := fileAt(fd).ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return b[:n], nil
}

func getenv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
