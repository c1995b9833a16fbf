// Package enter is the one way into a virtual host. virtuald (per
// connection and in accept mode) and ipwatchctl exec each build a Plan
// from what they resolved (the checked root, the credentials, the
// isolation, the program, its descriptors) and call Exec or Start, so
// that a service sees the same world whichever of them started it.
//
// The order is fixed here, as runc's and nsjail's are in theirs. Without
// isolation (isolate=none, the seed's way) the root is entered with
// chroot through the descriptor that chroot.Open checked (never its path
// again), the supplementary groups, gid and uid are dropped, no_new_privs
// is set (so no set-id program inside a root, which its tenant may have
// planted, gives anything back), every descriptor but the service's own
// is closed, and the program is executed.
//
// With isolation the service is started by clone(2) into new namespaces
// (Plan.Isolate), running virtuald-init (init/init.c), which makes the
// root the root of the new mount namespace with pivot_root, sets the
// host name, trims the capability bounding set to Kept, sets
// no_new_privs, drops to the credentials and executes the program; in a
// pid namespace it stays as its pid 1 and reaps. With a user namespace,
// virtuald-init enters it itself (unshare), then a mount namespace owned
// by it, while this process maps its ids and idmaps the root's mounts
// (mapChild). Everything that can fail fails the start: nothing is
// served with less isolation than asked.
package enter

import (
	"fmt"
	"runtime"
	"strconv"
	"syscall"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/creds"
	"golang.org/x/sys/unix"
)

// Plan is everything a service is started with.
type Plan struct {
	Root     *chroot.Dir    // opened and checked; entered through its descriptor
	Cred     *creds.Cred    // nil: keep the caller's credentials, as the seed did
	Isolate  conf.Isolation // the namespaces; IsolateNone is chroot alone
	Hostname string         // the host name inside (needs IsolateUTS); "" keeps the host's
	Path     string         // the program, as a path inside the root
	Argv     []string
	Env      []string

	// Start only: the service's descriptors 0, 1, 2 (Exec keeps the
	// process's); Session puts it in a session of its own, Terminal also
	// makes Files[0] its controlling terminal; DieWithParent kills it
	// (with its namespace) when the calling thread ends.
	Files         []int
	Session       bool
	Terminal      bool
	DieWithParent bool
	// Spawned, when set, is called with the child's pid as soon as the
	// child runs in its own session (with Session) and is the caller's
	// to reap, before its set-up in the namespaces: accept mode weighs
	// its session for the scheduler from there (cmd/virtuald/favour.go).
	Spawned func(pid int)
	// CgroupProcs, when not 0 (fd 0 is never one), is a descriptor of a
	// cgroup's cgroup.procs that the service joins: with isolation
	// virtuald-init joins it before anything else, without, the service
	// is moved in as soon as it was executed. Accept mode weighs each
	// entry's services together so (package cpugroup).
	CgroupProcs int

	// Exec and ExecIsolated only: descriptors besides 0-2 that go through
	// the exec (a connection's slots: package slots). virtuald-init keeps
	// them outside the namespaces while the service runs and never gives
	// them to the service; without isolation they are the service's.
	Keep []int
}

// credentials are what the service runs as: the entry's, or, without
// user= and group=, the caller's uid and gid with no supplementary groups
// (when the caller may drop them), so that every way in gives the same.
func (p *Plan) credentials() *creds.Cred {
	if p.Cred != nil || unix.Geteuid() != 0 {
		return p.Cred
	}
	return &creds.Cred{GID: uint32(unix.Getgid())}
}

// Exec replaces the calling process with the service, without isolation
// (a process cannot move itself into a new pid namespace: Start does
// that). It returns only when something failed; the process may then be
// half-entered (inside the root, with fewer privileges) and must not
// serve anything else.
func (p *Plan) Exec() error {
	if p.Isolate != conf.IsolateNone {
		return &Error{Step: "exec", Err: fmt.Errorf("isolate=%s needs Start", p.Isolate)}
	}
	if err := p.Root.Enter(); err != nil {
		return err
	}
	// The credentials are dropped on the thread that executes the
	// service, which stays locked: on failure it ends with its goroutine.
	runtime.LockOSThread()
	if err := creds.DropThread(p.credentials()); err != nil {
		return &Error{Step: "dropping credentials", Err: err}
	}
	// Marking the inherited descriptors close-on-exec, rather than closing
	// them, keeps the Go runtime's own valid until the exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return &Error{Step: "close_range", Err: err}
	}
	for _, fd := range p.Keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return &Error{Step: "close_range", Err: err}
		}
	}
	return &ExecError{Err: syscall.Exec(p.Path, p.Argv, p.Env)}
}

// Child is a started service. Its pid is the caller's to wait for: the
// service itself, or, in a pid namespace, its pid 1, which ends with it
// and exits with its status.
type Child struct {
	Pid     int
	started func() error
}

// Wait waits for the child to end and returns the status to exit with:
// its own, or 128 plus the signal that ended it, as a shell says (1 when
// it cannot be waited for).
func (c *Child) Wait() int {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(c.Pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 1
		}
		break
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// kill ends a child that must not run on, and reaps it.
func (c *Child) kill() {
	unix.Kill(c.Pid, unix.SIGKILL)
	c.Wait()
}

// Started waits until the service was executed (or failed to be), and
// says why it was not: an *Error for a step of entering, an *ExecError
// for the exec itself. A child that failed has exited (status 127).
func (c *Child) Started() error { return c.started() }

// Start starts the service as a child. What DieWithParent watches is the
// calling goroutine's thread, and without isolation so is the
// no_new_privs the child inherits when the process does not have it
// already (creds.NoNewPrivs sets it on every thread): then the thread
// stays locked to the goroutine and ends with it. Call Start from a
// goroutine that ends once it is done with the child (and, with
// DieWithParent, only after the child has ended).
func (p *Plan) Start() (*Child, error) {
	// A descriptor the caller inherited without close-on-exec would reach
	// the service: only Files may.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return nil, &Error{Step: "close_range", Err: err}
	}
	runtime.LockOSThread()
	tainted := p.DieWithParent
	defer func() {
		if !tainted {
			runtime.UnlockOSThread()
		}
	}()
	if p.Isolate != conf.IsolateNone {
		return p.startIsolated() // virtuald-init sets no_new_privs
	}
	if nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); nnp != 1 {
		tainted = true
		if _, _, errno := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
			return nil, &Error{Step: "no_new_privs", Err: errno}
		}
	}
	sys := &syscall.SysProcAttr{
		// /proc/self/fd/N in the child names the very directory that
		// chroot.Open checked.
		Chroot:  "/proc/self/fd/" + strconv.Itoa(p.Root.Fd()),
		Setsid:  p.Session || p.Terminal,
		Setctty: p.Terminal,
	}
	if p.DieWithParent {
		sys.Pdeathsig = unix.SIGKILL
	}
	if c := p.credentials(); c != nil {
		sys.Credential = &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: []uint32{}}
		if !c.SetUID {
			sys.Credential.Uid = uint32(unix.Getuid())
		}
	}
	files := make([]uintptr, len(p.Files))
	for i, fd := range p.Files {
		files[i] = uintptr(fd)
	}
	pid, err := syscall.ForkExec(p.Path, p.Argv, &syscall.ProcAttr{Dir: "/", Env: p.Env, Files: files, Sys: sys})
	if err != nil {
		return nil, &ExecError{Err: err}
	}
	if p.CgroupProcs != 0 {
		if _, err := unix.Write(p.CgroupProcs, []byte(strconv.Itoa(pid))); err != nil {
			(&Child{Pid: pid}).kill()
			return nil, &Error{Step: stepNames[stepCgroup], Err: err}
		}
	}
	if p.Spawned != nil {
		p.Spawned(pid)
	}
	return &Child{Pid: pid, started: func() error { return nil }}, nil
}

// Error is a step of entering that failed before the exec.
type Error struct {
	Step string
	Err  error
}

func (e *Error) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ExecError is the exec itself failing: the caller explains it with
// service.Root.Explain, which knows what the root holds.
type ExecError struct{ Err error }

func (e *ExecError) Error() string { return e.Err.Error() }
func (e *ExecError) Unwrap() error { return e.Err }
