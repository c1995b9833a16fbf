package enter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/virtuald/virtuald/internal/conf"
	"golang.org/x/sys/unix"
)

// Capability is one capability an isolated service keeps, and why.
type Capability struct {
	Bit  int
	Name string
	Why  string
}

// Kept is the capability bounding set of every isolated service: what
// the classic services that must run as root need, and nothing else. A
// service running as root keeps these across its exec; everything else
// (CAP_SYS_ADMIN, CAP_MKNOD, CAP_DAC_READ_SEARCH, CAP_SYS_MODULE,
// CAP_SYS_RAWIO, CAP_SYS_PTRACE, CAP_SYS_BOOT, CAP_SYS_TIME,
// CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_SETPCAP, CAP_SETFCAP, ...) is
// gone for good, for it and for whatever it executes.
var Kept = []Capability{
	{unix.CAP_CHOWN, "CAP_CHOWN", "give an uploaded file to the user who logged in"},
	{unix.CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE", "read and write the files of the root's users, as a root service does"},
	{unix.CAP_FOWNER, "CAP_FOWNER", "set modes and times on the users' files"},
	{unix.CAP_FSETID, "CAP_FSETID", "keep set-group-id directories working when it writes in them"},
	{unix.CAP_KILL, "CAP_KILL", "signal the processes it started as another user (its pid namespace holds only its own)"},
	{unix.CAP_SETGID, "CAP_SETGID", "become the user who logged in (PAM, ftpd, popd)"},
	{unix.CAP_SETUID, "CAP_SETUID", "become the user who logged in (PAM, ftpd, popd)"},
	{unix.CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE", "bind a port below 1024 (ftpd's data connections from port 20)"},
	{unix.CAP_SYS_CHROOT, "CAP_SYS_CHROOT", "chroot inside its root (anonymous FTP); a chroot escape leads nowhere, its root is the mount namespace's"},
	{unix.CAP_AUDIT_WRITE, "CAP_AUDIT_WRITE", "PAM writes its login records to the audit log"},
}

func keptMask() uint64 {
	var m uint64
	for _, c := range Kept {
		m |= 1 << c.Bit
	}
	return m
}

// initExe is virtuald-init's binary in a sealed memfd, made once per
// process: a descriptor, so that nothing a tenant or a local user can
// change by a path decides what runs.
var initExe = sync.OnceValues(func() (int, error) {
	if len(initELF) == 0 {
		return -1, fmt.Errorf("this build has no virtuald-init for %s (make generate builds it)", runtime.GOARCH)
	}
	// MFD_EXEC says the memfd is to be executed where vm.memfd_noexec
	// asks (Linux 6.3); older kernels do not know the flag.
	fd, err := unix.MemfdCreate("virtuald-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("virtuald-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	defer unix.Close(fd)
	for b := initELF; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err != nil {
			return -1, fmt.Errorf("writing virtuald-init: %w", err)
		}
		b = b[n:]
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		return -1, fmt.Errorf("sealing virtuald-init: %w", err)
	}
	// A file open for writing cannot be executed (ETXTBSY): keep a
	// read-only descriptor, high enough that the child's descriptors
	// 0-4 never land on it before its exec.
	ro, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopening virtuald-init: %w", err)
	}
	defer unix.Close(ro)
	high, err := unix.FcntlInt(uintptr(ro), unix.F_DUPFD_CLOEXEC, 64)
	if err != nil {
		return -1, fmt.Errorf("virtuald-init: %w", err)
	}
	return high, nil
})

// The descriptors virtuald-init gets besides the service's 0-2.
const (
	initRootFD   = 3
	initErrFD    = 4
	initSyncFD   = 5 // with a user namespace: the socket to the parent, which maps it
	initCgroupFD = 6 // with CgroupProcs: the cgroup.procs to join
)

// stepNames names virtuald-init's steps (init/init.c), for its errors.
var stepNames = []string{
	1: "virtuald-init's arguments", "making the mount tree private",
	"mounting the root over / (move_mount)", "pivot_root into the root", "detaching the host's root",
	"chroot", "sethostname", "trimming the capability bounding set", "no_new_privs",
	"dropping supplementary groups", "setgid", "setuid", "forking the service", "exec",
	"taking the terminal", "close_range", "blocking signals", "waiting for the root's id map",
	"entering a user namespace", "starting virtuald-init in new namespaces",
	"joining its entry's cpu cgroup",
}

const (
	stepExec   = 14
	stepCgroup = 21
)

// initStart is how virtuald-init is to start a plan's service: its
// arguments up to the service's (the report, for an in-place start,
// follows them), the namespaces to clone it into, and the root's
// descriptor it gets (a detached clone of the root's mounts, to be closed
// by the caller, or the checked root itself).
type initStart struct {
	argv  []string
	clone uintptr
	root  int
	tree  bool
	sys   *syscall.SysProcAttr
}

// prepareInit makes p's initStart. rootFD and errFD are the descriptor
// numbers virtuald-init is told of: where a start by fork puts them, or,
// with rootFD -1, the root's own (an exec in place keeps descriptors
// where they are, and virtuald-init makes its ERRFD itself).
func (p *Plan) prepareInit(inPlace bool, rootFD, errFD int) (*initStart, error) {
	if p.Hostname != "" && p.Isolate&conf.IsolateUTS == 0 {
		return nil, &Error{Step: "isolation", Err: fmt.Errorf("hostname=%s needs uts (isolate=%s)", p.Hostname, p.Isolate)}
	}
	var flags strings.Builder
	var clone uintptr
	for _, ns := range []struct {
		bit   conf.Isolation
		clone uintptr
		flag  byte
	}{
		{conf.IsolateMount, unix.CLONE_NEWNS, 'm'},
		{conf.IsolatePID, unix.CLONE_NEWPID, 'p'},
		{conf.IsolateIPC, unix.CLONE_NEWIPC, 0},
		{conf.IsolateUTS, unix.CLONE_NEWUTS, 0},
	} {
		if p.Isolate&ns.bit != 0 {
			clone |= ns.clone
			if ns.flag != 0 {
				flags.WriteByte(ns.flag)
			}
		}
	}
	if p.Hostname != "" {
		flags.WriteByte('h')
	}
	uid, gid := "0", "0"
	if c := p.credentials(); c != nil {
		flags.WriteByte('g')
		gid = strconv.FormatUint(uint64(c.GID), 10)
		if c.SetUID {
			flags.WriteByte('u')
			uid = strconv.FormatUint(uint64(c.UID), 10)
		}
	}
	s := &initStart{clone: clone, root: p.Root.Fd(), sys: &syscall.SysProcAttr{Setsid: p.Session || p.Terminal}}
	// In a pid namespace the service is pid 1's child: it takes the
	// terminal itself, in a session of its own.
	if p.Terminal && p.Isolate&conf.IsolatePID != 0 {
		flags.WriteByte('t')
	} else {
		s.sys.Setctty = p.Terminal
	}
	if p.Isolate&conf.IsolateUser != 0 {
		if inPlace {
			return nil, &Error{Step: "isolation", Err: fmt.Errorf("isolate=%s cannot start in place: its ids are mapped by virtuald-init's parent", p.Isolate)}
		}
		if err := p.mapUsers(&flags); err != nil {
			return nil, err
		}
		s.clone &^= unix.CLONE_NEWNS
	}
	if inPlace {
		flags.WriteByte('w')
	} else if p.CgroupProcs != 0 {
		flags.WriteByte('c')
	}
	if flags.Len() == 0 {
		flags.WriteByte('-')
	}
	if p.Isolate&conf.IsolateMount != 0 {
		tree, err := cloneTree(s.root)
		if err != nil {
			return nil, err
		}
		s.root, s.tree = tree, true
	}
	if rootFD < 0 {
		rootFD = s.root
	}
	cloneArg := "0"
	if inPlace {
		cloneArg = strconv.FormatUint(uint64(s.clone), 16)
	}
	s.argv = append([]string{"virtuald-init", flags.String(), strconv.Itoa(rootFD), strconv.Itoa(errFD),
		strconv.Itoa(initSyncFD), uid, gid, strconv.FormatUint(keptMask(), 16), cloneArg, p.Hostname, p.Path,
		strconv.Itoa(len(p.Argv))}, p.Argv...)
	return s, nil
}

// startIsolated starts virtuald-init in new namespaces.
func (p *Plan) startIsolated() (*Child, error) {
	exe, err := initExe()
	if err != nil {
		return nil, &Error{Step: "isolation", Err: err}
	}
	s, err := p.prepareInit(false, initRootFD, initErrFD)
	if err != nil {
		return nil, err
	}
	if s.tree {
		defer unix.Close(s.root)
	}
	sys := s.sys
	sys.Cloneflags = s.clone
	if p.DieWithParent {
		sys.Pdeathsig = unix.SIGKILL
	}
	var report [2]int
	if err := unix.Pipe2(report[:], unix.O_CLOEXEC); err != nil {
		return nil, &Error{Step: "isolation", Err: err}
	}
	defer unix.Close(report[0])
	files := make([]uintptr, 0, initCgroupFD+1)
	for _, fd := range p.Files[:3] {
		files = append(files, uintptr(fd))
	}
	files = append(files, uintptr(s.root), uintptr(report[1]))
	// The socket to map a user namespace through is made only for one:
	// every other start leaves SYNCFD closed.
	sync := [2]int{-1, -1}
	if p.Isolate&conf.IsolateUser != 0 {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, &Error{Step: "isolation", Err: err}
		}
		defer unix.Close(pair[0])
		sync = [2]int{pair[0], pair[1]}
		files = append(files, uintptr(sync[1]))
	}
	if p.CgroupProcs != 0 {
		if len(files) == initSyncFD {
			files = append(files, ^uintptr(0)) // closed
		}
		files = append(files, uintptr(p.CgroupProcs))
	}
	// The child executes the memfd by this process's descriptor table:
	// through /proc/self, resolved in the child as it starts in its new
	// namespaces, a few starts in a thousand under load failed with
	// EACCES (TestAcceptSystemd with two busy cores), and so did one in
	// a few thousand cloned into a user namespace (TestStartConcurrent
	// under load), which is why virtuald-init enters that one itself.
	exePath := "/proc/" + strconv.Itoa(unix.Getpid()) + "/fd/" + strconv.Itoa(exe)
	pid, err := syscall.ForkExec(exePath, s.argv, &syscall.ProcAttr{Env: p.Env, Files: files, Sys: sys})
	unix.Close(report[1])
	if sync[1] >= 0 {
		unix.Close(sync[1])
	}
	if err != nil {
		return nil, &Error{Step: "isolation", Err: fmt.Errorf("starting virtuald-init in new namespaces (%s): %w", p.Isolate, err)}
	}
	if p.Isolate&conf.IsolateUser != 0 {
		if err := p.mapChild(sync[0], pid, s.root); err != nil {
			unix.Shutdown(sync[0], unix.SHUT_RDWR) // virtuald-init exits without its go
			(&Child{Pid: pid}).Wait()
			return nil, err
		}
	}
	// After the only place where Start itself reaps the child: from here
	// on the caller's pid stays the caller's to reap.
	if p.Spawned != nil {
		p.Spawned(pid)
	}
	// The report is read before Start returns: it comes at once (the
	// steps are a few system calls), and its descriptor is then closed.
	var rec [8]byte
	n, _ := readFull(report[0], rec[:])
	started := error(nil)
	if n == len(rec) {
		started = startError(int(int32(binary.NativeEndian.Uint32(rec[:4]))), unix.Errno(binary.NativeEndian.Uint32(rec[4:])), p.Isolate)
	}
	return &Child{Pid: pid, started: func() error { return started }}, nil
}

// startError is virtuald-init's report of a failed step as an error: an
// *ExecError for the exec, an *Error naming any other step.
func startError(step int, errno unix.Errno, iso conf.Isolation) error {
	if step == stepExec {
		return &ExecError{Err: errno}
	}
	name := "step " + strconv.Itoa(step)
	if step > 0 && step < len(stepNames) {
		name = stepNames[step]
	}
	return &Error{Step: name + " (isolate=" + iso.String() + ")", Err: errno}
}

// Report is where an in-place start (ExecIsolated) reports a start that
// failed, or a service that exited with status 127 (what a missing
// library or program makes it exit with): virtuald-init executes Exe, an
// O_PATH descriptor of the caller's own program, with Args followed by
// the four fields ReadReport reads.
type Report struct {
	Exe  int
	Args []string
}

// Reported is what virtuald-init reported.
type Reported struct {
	Root   int   // the root's descriptor: a detached clone of its mounts, or the root itself
	Status int   // the service's exit status; 127 when it did not start
	Err    error // why it did not start: an *Error for a step, an *ExecError for the exec
}

// ReadReport reads the last four arguments virtuald-init gives a Report
// (the root's descriptor, the step and errno of a failed start, both 0
// after a start, and the status) for a start isolated as iso.
func ReadReport(fields []string, iso conf.Isolation) (Reported, error) {
	var n [4]int
	if len(fields) != len(n) {
		return Reported{}, fmt.Errorf("virtuald-init's report: %d fields, want %d", len(fields), len(n))
	}
	for i, f := range fields {
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return Reported{}, fmt.Errorf("virtuald-init's report: %q is not a number", f)
		}
		n[i] = v
	}
	r := Reported{Root: n[0], Status: n[3]}
	if n[1] != 0 {
		r.Err = startError(n[1], unix.Errno(n[2]), iso)
	}
	return r, nil
}

// ExecIsolated replaces the calling process with virtuald-init, which
// starts the service in new namespaces as Start does, and stays as its
// parent (the process a super-server started and waits for): one process
// fewer on a connection than Start and waiting. It returns only when
// virtuald-init could not be executed; a start that fails after that, and
// a service that exits 127, come to r. A user namespace is mapped by a
// parent, so isolate=user needs Start. The service gets this process's
// descriptors 0-2 and session: Files, Session, Terminal and
// DieWithParent are Start's.
func (p *Plan) ExecIsolated(r Report) error {
	if p.Isolate == conf.IsolateNone {
		return &Error{Step: "isolation", Err: errors.New("isolate=none needs Exec")}
	}
	exe, err := initExe()
	if err != nil {
		return &Error{Step: "isolation", Err: err}
	}
	s, err := p.prepareInit(true, -1, initErrFD)
	if err != nil {
		return err
	}
	if s.tree {
		defer unix.Close(s.root)
	}
	// Only the service's descriptors 0-2, the root's, the report's and
	// Keep go through the exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return &Error{Step: "close_range", Err: err}
	}
	argv := s.argv
	keep := append([]int{s.root}, p.Keep...)
	if r.Exe >= 0 {
		argv = append(append(append(argv, strconv.Itoa(r.Exe)), r.Args...), strconv.Itoa(s.root))
		keep = append(keep, r.Exe)
	}
	for _, fd := range keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return &Error{Step: "isolation", Err: err}
		}
	}
	err = syscall.Exec("/proc/self/fd/"+strconv.Itoa(exe), argv, p.Env)
	for _, fd := range keep {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	}
	return &Error{Step: "isolation", Err: fmt.Errorf("executing virtuald-init (isolate=%s): %w", p.Isolate, err)}
}

// cloneTree clones the mount tree of the checked root directory (the
// directory and whatever is mounted below it), detached and private:
// virtuald-init attaches it as the root of the new mount namespace, where
// the directory itself, opened in this one, cannot be mounted from.
func cloneTree(root int) (int, error) {
	tree, err := unix.OpenTree(root, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return -1, &Error{Step: "cloning the root's mounts (open_tree)", Err: err}
	}
	attr := unix.MountAttr{Propagation: unix.MS_PRIVATE}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(tree)
		return -1, &Error{Step: "making the root's mounts private (mount_setattr)", Err: err}
	}
	return tree, nil
}

// mapUsers checks that the service's ids fit a user namespace and asks
// virtuald-init to enter one (mapChild maps it). The mount namespace is
// then virtuald-init's to make, owned by the user namespace.
func (p *Plan) mapUsers(flags *strings.Builder) error {
	if c := p.credentials(); c != nil && (c.UID >= conf.UserRange || c.GID >= conf.UserRange) {
		return &Error{Step: "isolation", Err: fmt.Errorf("uid %d, gid %d: a user namespace maps ids 0 to %d only (isolate=%s)", c.UID, c.GID, conf.UserRange-1, p.Isolate)}
	}
	flags.WriteByte('U')
	return nil
}

// mapChild waits until virtuald-init (pid) is in its new user namespace,
// maps the root's range of ids (conf.UserBase) to ids 0 to
// conf.UserRange-1 inside, idmaps the root's mount tree through it, and
// tells virtuald-init to go on.
func (p *Plan) mapChild(sync, pid, tree int) error {
	var b [1]byte
	if n, _ := readFull(sync, b[:]); n != 1 {
		return nil // virtuald-init failed: its report says why
	}
	ids := fmt.Sprintf("0 %d %d\n", conf.UserBase(p.Root.Path), conf.UserRange)
	for _, m := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/"+m, []byte(ids), 0); err != nil {
			return &Error{Step: "mapping the user namespace's ids", Err: err}
		}
	}
	if err := idmapTree(tree, pid); err != nil {
		return err
	}
	if _, err := unix.Write(sync, b[:]); err != nil {
		return &Error{Step: "isolation", Err: fmt.Errorf("virtuald-init's go: %w", err)}
	}
	return nil
}

// idmapTree maps the ids of the root's (detached, not yet attached) mount
// tree through the user namespace of the child pid, so that a file owned
// by uid N on disk is owned by N inside as well, and what root inside
// writes is owned by root on disk, as without a user namespace.
func idmapTree(tree, pid int) error {
	userns, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &Error{Step: "opening the service's user namespace", Err: err}
	}
	defer unix.Close(userns)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns)}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		if err == unix.EINVAL || err == unix.EPERM {
			err = fmt.Errorf("%w (an idmapped mount needs Linux 5.12 and a file system that supports one, as ext4, xfs, btrfs and tmpfs since 6.3 do, for the root and every mount below it)", err)
		}
		return &Error{Step: "idmapping the root's mounts (mount_setattr)", Err: err}
	}
	return nil
}

func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if m <= 0 || err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}
