package main

import (
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/virtuald/virtuald/internal/syslog"
	"golang.org/x/sys/unix"
)

// Accept mode holds a listening socket that its super-server made. Under
// inetd's "wait" the super-server takes it back only when virtuald exits,
// and while any process holds it open nobody can bind its port again: an
// accept mode that outlives its inetd keeps the port from the next one.
// So accept mode exits when it has been idle for -idle-exit (inetd's usual
// "wait" contract), ends as on SIGTERM when its parent super-server dies,
// and lets go of the listening sockets as soon as it stops accepting,
// while the running services finish.

// watchParent makes the death of the super-server that started accept mode
// a SIGTERM (PR_SET_PDEATHSIG): stop accepting, give the sockets back,
// let the running services finish, exit. Not under PID 1 (systemd, which
// outlives its services and holds the socket itself). The parent is the
// thread that forked virtuald: every super-server that passes a listening
// socket (inetd, xinetd, tcpserver) is single-threaded. SIGTERM must be
// handled already: if the parent died before the call, it is sent at once.
//
// The kernel keeps the setting per thread, and sends the signal for each
// thread that has it when the parent dies: the thread that sets it stays,
// locked to a goroutine that never ends, so that no other use of threads
// (enter.Plan.Start ends the threads it locks) can take the setting away.
func watchParent(log *syslog.Logger) {
	ppid := os.Getppid()
	if ppid == 1 {
		return
	}
	set := make(chan error)
	go func() {
		runtime.LockOSThread()
		set <- unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0)
		select {}
	}()
	if err := <-set; err != nil {
		log.Log(syslog.Warning, "accept mode: cannot follow the parent's death (prctl: "+err.Error()+"): only SIGTERM or -idle-exit will end it")
		return
	}
	if os.Getppid() != ppid {
		unix.Kill(os.Getpid(), unix.SIGTERM)
	}
}

// releaseListeners puts /dev/null in place of every descriptor of the
// listening sockets, once accept mode stops accepting: the super-server's
// copy is then the only one left, and a super-server started anew can bind
// the port while the running services finish. inetd hands the socket over
// as fds 0, 1 and 2, and the stdio shield keeps copies of 1 and 2, so every
// open descriptor is compared with the sockets (/proc/self/fd), not only
// the ones accepted on. The descriptors are reused rather than closed, so
// that no socket opened later can take their numbers (0 among them).
func releaseListeners(log *syslog.Logger, fds []int) {
	type inode struct{ dev, ino uint64 }
	sockets := map[inode]bool{}
	for _, fd := range fds {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			sockets[inode{st.Dev, st.Ino}] = true
		}
	}
	candidates := append([]int{1, 2}, fds...)
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				candidates = append(candidates, fd)
			}
		}
	}
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		log.Log(syslog.Err, "accept mode: cannot let go of the listening sockets: "+err.Error())
		return
	}
	defer unix.Close(null)
	for _, fd := range candidates {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || !sockets[inode{st.Dev, st.Ino}] {
			continue
		}
		if err := unix.Dup3(null, fd, unix.O_CLOEXEC); err != nil {
			log.Log(syslog.Err, "accept mode: cannot let go of listening socket descriptor "+strconv.Itoa(fd)+": "+err.Error())
		}
	}
}

// idleWatch sends accept mode the SIGTERM that stops it once no
// connection has been in hand for idle: inetd then listens again itself
// and starts a new virtuald for the next connection. A connection
// accepted meanwhile is served before the exit, as on any stop.
func (a *acceptor) idleWatch(idle time.Duration) {
	wait := idle
	for {
		time.Sleep(wait)
		a.mu.Lock()
		busy, stopping, quiet := a.slots > 0, a.stopping, time.Since(a.lastActive)
		a.mu.Unlock()
		switch {
		case stopping:
			return
		case busy:
			wait = idle
		case quiet < idle:
			wait = idle - quiet
		default:
			a.log.Log(syslog.Info, "accept mode: no connection for -idle-exit "+idle.String()+": exiting, the super-server takes the socket back")
			unix.Kill(os.Getpid(), unix.SIGTERM)
			return
		}
	}
}
