// Package creds resolves the user= and group= of a conf entry to numeric
// ids and drops a process to them.
//
// Names are looked up in the host's /etc/passwd and /etc/group (the
// programs are built without cgo, so NSS modules such as LDAP are not
// consulted: give such users by number). Lookups happen before the chroot,
// so the root directory's own passwd file never decides who a service runs as.
package creds

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Cred is the identity a service runs as.
type Cred struct {
	UID, GID uint32
	SetUID   bool   // false when only group= was given: the uid is kept
	Name     string // for logs: "ftp1(2001:2001)" or "(:2001)"
}

// Resolve turns the user and group of an entry (names or numbers, either
// may be empty) into a Cred. It returns nil, nil when both are empty: the
// service then keeps the caller's credentials, as in the seed.
func Resolve(userSpec, groupSpec string) (*Cred, error) {
	if userSpec == "" && groupSpec == "" {
		return nil, nil
	}
	c := &Cred{}
	haveGID := false
	if groupSpec != "" {
		gid, err := lookupGroup(groupSpec)
		if err != nil {
			return nil, err
		}
		c.GID, haveGID = gid, true
	}
	if userSpec != "" {
		uid, primary, err := lookupUser(userSpec)
		if err != nil {
			return nil, err
		}
		c.UID, c.SetUID = uid, true
		if !haveGID {
			if primary < 0 {
				return nil, fmt.Errorf("user %s has no entry in /etc/passwd, so it has no primary group: give group= too", userSpec)
			}
			c.GID = uint32(primary)
		}
	}
	if c.SetUID {
		c.Name = fmt.Sprintf("%s(%d:%d)", userSpec, c.UID, c.GID)
	} else {
		c.Name = fmt.Sprintf("(:%d)", c.GID)
	}
	return c, nil
}

// lookupUser returns the uid and the primary gid (-1 when a numeric user
// has no passwd entry).
func lookupUser(spec string) (uid uint32, primary int64, err error) {
	if n, ok := number(spec); ok {
		u, err := user.LookupId(spec)
		if err != nil {
			return n, -1, nil
		}
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return n, int64(gid), nil
	}
	u, err := user.Lookup(spec)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s does not exist", spec)
	}
	id, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("user %s has a malformed passwd entry", spec)
	}
	return uint32(id), int64(gid), nil
}

func lookupGroup(spec string) (uint32, error) {
	if n, ok := number(spec); ok {
		return n, nil
	}
	g, err := user.LookupGroup(spec)
	if err != nil {
		return 0, fmt.Errorf("group %s does not exist", spec)
	}
	id, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %s has a malformed entry", spec)
	}
	return uint32(id), nil
}

func number(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// DropThread switches the calling thread to c: no supplementary groups,
// then the gid, then the uid (in that order, since after setuid the
// others are no longer permitted), then no_new_privs so that no setuid
// program inside the root can win the privileges back (c nil: only
// that). It is for a thread about to execute a program, locked to its
// goroutine for good: the exec ends every other thread and keeps this
// one's credentials, so changing all of them (syscall's Set* functions
// stop the world and signal every thread, once for each call) would buy
// nothing. Should the exec fail, the thread must end with its goroutine.
func DropThread(c *Cred) error {
	if c != nil {
		if _, _, errno := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); errno != 0 {
			return fmt.Errorf("setgroups: %w", errno)
		}
		gid := uintptr(c.GID)
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESGID, gid, gid, gid); errno != 0 {
			return fmt.Errorf("setgid %d: %w", c.GID, errno)
		}
		if c.SetUID {
			uid := uintptr(c.UID)
			if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uid, uid, uid); errno != 0 {
				return fmt.Errorf("setuid %d: %w", c.UID, errno)
			}
		}
	}
	if _, _, errno := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("no_new_privs: %w", errno)
	}
	return nil
}

// NoNewPrivs sets no_new_privs, which every later exec and child inherits.
// It is a per-thread attribute and exec may run on any of the runtime's
// threads, so it is set on all of them.
func NoNewPrivs() error {
	if _, _, errno := syscall.AllThreadsSyscall6(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("no_new_privs: %w", errno)
	}
	return nil
}
