package main

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/cmdline"
	"github.com/virtuald/virtuald/internal/cpugroup"
	"github.com/virtuald/virtuald/internal/creds"
	"github.com/virtuald/virtuald/internal/enter"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/service"
	"github.com/virtuald/virtuald/internal/socket"
	"github.com/virtuald/virtuald/internal/syslog"
	"golang.org/x/sys/unix"
)

// acceptor is "virtuald -accept": started once with listening sockets, it
// accepts each connection and starts the service for it directly inside
// the resolved root, with the entry's credentials: one fork and one exec
// per connection, where inetd's nowait costs a fork and two execs.
type acceptor struct {
	log        *syslog.Logger
	opts       cmdline.Options
	socketPath string
	confPath   string
	program    string
	argv, env  []string

	answers  answerCache
	health   ipc.SlowMemo
	starts   *fairStarts      // the entries' turns at starting a service
	admit    *admission       // the entries' limits, and the services each runs
	refusals logLimit         // refusals for an entry's limit, logged once a second
	cpu      *cpugroup.Groups // each entry's cpu cgroup, or nil (-cpu-share)
	ungroups logLimit         // services started outside their entry's group, logged once a second

	mu        sync.Mutex
	children  map[int]*child
	unclaimed map[int]unix.WaitStatus // reaped before serve registered them
	favoured  map[int]bool            // services whose start is favoured now (favour.go)
	slots     int                     // connections accepted and not yet finished
	stopping  bool
	idle      chan struct{} // closed when stopping and nothing runs

	// lastActive is when the last connection ended (or accept mode
	// started), for -idle-exit.
	lastActive time.Time
}

// child is one running service.
type child struct {
	start   time.Time
	slot    slot // what admission counted for it
	line    connLog
	refusal string // why it was not executed after all; it exits at once
	group   string // the cpu cgroup it holds (its entry's key), or ""
	root    string // its root and program, for the library check of a
	program string // service that failed as a missing library makes it
}

// listeners returns the listening sockets: the n that systemd passed from
// fd 3 on, or else fd 0, as inetd's "wait" passes it.
func listeners(n int) ([]int, error) {
	fds := []int{0}
	if n > 0 {
		fds = fds[:0]
		for fd := 3; fd < 3+n; fd++ {
			fds = append(fds, fd)
		}
	}
	for _, fd := range fds {
		if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 1 {
			return nil, fmt.Errorf("fd %d is not a listening socket (use inetd's \"wait\", or systemd's Accept=no; inetd keeps a line's nowait or wait until it restarts: SIGHUP is not enough)", fd)
		}
	}
	return fds, nil
}

func acceptMode(log *syslog.Logger, o cmdline.Options, socketPath string, listenFDs int, confPath, program string, argv, env []string) int {
	fds, err := listeners(listenFDs)
	if err != nil {
		log.Log(syslog.Err, "accept mode: "+err.Error())
		return exitUsage
	}
	// Nothing inherited may reach a service, and the listening sockets
	// stay ours: every descriptor from 3 up is closed on exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		log.Log(syslog.Err, "accept mode: close_range: "+err.Error())
		return exitRefused
	}
	// Services inherit no_new_privs from this process (every thread):
	// none can gain privileges through a setuid program inside its root,
	// and starting one needs no thread of its own (enter.Plan.Start).
	if err := creds.NoNewPrivs(); err != nil {
		log.Log(syslog.Err, "accept mode: "+err.Error())
		return exitRefused
	}
	a := &acceptor{
		log: log, opts: o, socketPath: socketPath, confPath: confPath,
		program: program, argv: argv, env: env,
		children: map[int]*child{}, unclaimed: map[int]unix.WaitStatus{}, favoured: map[int]bool{}, idle: make(chan struct{}), admit: newAdmission(o.MaxPerEntry),
		lastActive: time.Now(), starts: newFairStarts(max(1, runtime.NumCPU()/2), runtime.NumCPU()),
	}
	a.answers.init()
	if o.CPUShare == cmdline.CPUShareEntry {
		groups, where, err := cpugroup.Open()
		if err != nil {
			log.Log(syslog.Warning, "accept mode: -cpu-share entry: no cpu cgroup per entry, so each service weighs as much as a whole entry's (-favour helps a quiet entry): "+err.Error())
		} else {
			defer groups.Close()
			a.cpu = groups
			log.Log(syslog.Info, "accept mode: one CPU weight per entry: a cpu cgroup each, in "+where)
		}
	}
	if a.opts.Favour > 0 && a.cpu == nil {
		why, note := favourWorks()
		if why != "" {
			log.Log(syslog.Warning, "accept mode: -favour is off: "+why)
			a.opts.Favour = 0
		} else if note != "" {
			log.Log(syslog.Info, "accept mode: "+note)
		}
	}
	stopReports := make(chan struct{})
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		a.reportCounts(stopReports)
	}()
	defer func() { close(stopReports); <-reported }()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	watchParent(log)
	wake, stop := make([]int, 2), false
	var stopTimer <-chan time.Time
	killed := false
	if err := unix.Pipe2(wake, unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		log.Log(syslog.Err, "accept mode: pipe: "+err.Error())
		return exitRefused
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.acceptLoop(fds, wake[0])
		releaseListeners(log, fds)
	}()
	if o.IdleExit > 0 {
		go a.idleWatch(o.IdleExit)
	}
	log.Log(syslog.Info, "accept mode: serving "+strconv.Itoa(len(fds))+" listening socket(s); max-children="+
		strconv.Itoa(o.MaxChildren)+" max-per-entry="+strconv.Itoa(o.MaxPerEntry))
	for {
		select {
		case s := <-sigs:
			if s == unix.SIGCHLD {
				a.reap()
				continue
			}
			if stop {
				if !killed {
					a.killChildren("a second " + s.String())
					killed, stopTimer = true, time.After(killGrace)
				}
				continue
			}
			stop = true
			stopTimer = time.After(o.StopTimeout)
			unix.Write(wake[1], []byte{0})
			a.mu.Lock()
			a.stopping = true
			// What the stop waits for: every connection in hand, whose
			// service runs or is being started. A started service is in
			// children only once its start was confirmed, which may come
			// after it has answered its client (a CI run counted 0).
			n := a.slots
			a.checkIdle()
			a.mu.Unlock()
			log.Log(syslog.Info, "accept mode: "+s.String()+": no new connections; waiting up to "+o.StopTimeout.String()+" for "+strconv.Itoa(n)+" running service(s)")
		case <-stopTimer:
			if !killed {
				a.killChildren("-stop-timeout " + o.StopTimeout.String() + " passed")
				killed, stopTimer = true, time.After(killGrace)
				continue
			}
			a.mu.Lock()
			n := a.slots
			a.mu.Unlock()
			log.Log(syslog.Warning, "accept mode: stopped with "+strconv.Itoa(n)+" connection(s) unfinished")
			return 0
		case <-a.idle:
			<-done
			log.Log(syslog.Info, "accept mode: stopped")
			return 0
		}
	}
}

// killGrace is how long a stop waits after killing the services: the
// kernel ends them at once, so only a connection still being set up can
// hold the stop that long.
const killGrace = 2 * time.Second

// killChildren ends every running service, with its whole session, so a
// stop completes; why goes to the log.
func (a *acceptor) killChildren(why string) {
	a.mu.Lock()
	n := len(a.children)
	for pid := range a.children { // not reaped while a.mu is held
		unix.Kill(-pid, unix.SIGKILL) // its session's process group (Setsid)
		unix.Kill(pid, unix.SIGKILL)
	}
	a.mu.Unlock()
	a.log.Log(syslog.Warning, "accept mode: "+why+": killing "+strconv.Itoa(n)+" running service(s)")
}

// acceptLoop waits for connections on every listening socket (and for the
// wake pipe that says stop) and hands each to serve. It never changes the
// listening sockets' flags: inetd or systemd share them.
func (a *acceptor) acceptLoop(fds []int, wake int) {
	pfds := make([]unix.PollFd, 0, len(fds)+1)
	for _, fd := range fds {
		pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	pfds = append(pfds, unix.PollFd{Fd: int32(wake), Events: unix.POLLIN})
	for {
		if _, err := unix.Poll(pfds, -1); err != nil && err != unix.EINTR {
			a.log.Log(syslog.Err, "accept mode: poll: "+err.Error())
			return
		}
		if pfds[len(pfds)-1].Revents != 0 {
			return
		}
		for _, p := range pfds[:len(fds)] {
			if p.Revents == 0 {
				continue
			}
			conn, peer, err := unix.Accept4(int(p.Fd), unix.SOCK_CLOEXEC)
			if err != nil {
				if err != unix.EINTR && err != unix.EAGAIN && err != unix.ECONNABORTED {
					a.log.Log(syslog.Err, "accept mode: accept: "+err.Error())
					time.Sleep(10 * time.Millisecond) // EMFILE and friends: do not spin
				}
				continue
			}
			if a.quickRefuse(conn, peer) {
				continue
			}
			a.mu.Lock()
			full := a.slots >= a.opts.MaxChildren
			if !full {
				a.slots++
			}
			a.mu.Unlock()
			if full {
				a.refuse(conn, nil, "too many connections at once (-max-children "+strconv.Itoa(a.opts.MaxChildren)+")")
				continue
			}
			go a.serve(conn)
		}
	}
}

// quickRefuse refuses, in the accept loop, a connection to an entry that
// is at one of its limits, known from the last full resolution of the
// connection's local address (admission.quick): a refusal in a flood then
// costs an accept, a getsockname and a close, with no goroutine, no
// resolution and no slot. It reports whether it refused; a connection it
// cannot tell about goes the full way (serve).
func (a *acceptor) quickRefuse(conn int, peer unix.Sockaddr) bool {
	if !a.admit.limited() {
		return false
	}
	sa, err := unix.Getsockname(conn)
	if err != nil {
		return false
	}
	local, remote, now := socket.AddrPort(sa), socket.AddrPort(peer), time.Now()
	m, reason, total, ok := a.admit.quick(local.Addr(), remote.Addr(), now)
	if !ok {
		return false
	}
	a.logRefusal(conn, m.entry, total, now, reason, func(line *connLog) {
		line.add("local", local.String())
		if remote.IsValid() {
			line.add("remote", remote.String())
		}
		line.add("conf", a.confPath)
		line.add("line", strconv.Itoa(m.line))
		line.add("root", m.root)
		line.add("via", "limits") // the entry of the last resolution, within memoTTL
	})
	return true
}

// logRefusal refuses a connection for one of entry's limits (total is
// the entry's count of refusals): it logs the first in a second, with how
// many were not logged since (logLimit), and closes the others quietly.
// fill writes the line's first fields.
func (a *acceptor) logRefusal(conn int, entry string, total uint64, now time.Time, reason string, fill func(*connLog)) {
	n := a.refusals.count(entry, now)
	if n < 0 {
		unix.Close(conn)
		return
	}
	if n > 0 {
		reason += "; " + strconv.Itoa(n) + " more refused in the last second, not logged"
	}
	var line connLog
	fill(&line)
	line.add("refused", strconv.FormatUint(total, 10))
	a.refuse(conn, &line, reason)
}

// refuse closes the connection at once, without a byte, and logs why.
func (a *acceptor) refuse(conn int, line *connLog, reason string) {
	unix.Close(conn)
	if line == nil {
		line = &connLog{}
		line.add("conf", a.confPath)
	}
	line.add("outcome", "refused")
	line.add("reason", reason)
	a.log.Log(syslog.Err, line.String())
}

func (a *acceptor) release() {
	a.mu.Lock()
	a.slots--
	a.lastActive = time.Now()
	a.checkIdle()
	a.mu.Unlock()
}

// checkIdle closes idle when stopping with nothing left; a.mu is held.
func (a *acceptor) checkIdle() {
	if a.stopping && a.slots == 0 {
		select {
		case <-a.idle:
		default:
			close(a.idle)
		}
	}
}

// slot is a running service's place in admission's counts: its entry
// (conf path and key) and its client's address.
type slot struct {
	entry  string
	source netip.Addr
}

// serve resolves one connection and starts its service, with the same
// resolution, checks and log line as the per-connection mode. The entry's
// limits are applied as soon as the entry is known, before any work on it
// (opening its root, reading inside it, forking): so one tenant can hold
// at most -max-per-entry (or its max=) of the -max-children slots,
// whatever its root holds, and a connection past a limit costs a close.
func (a *acceptor) serve(conn int) {
	c, err := socket.Inspect(conn, 0)
	if err != nil {
		a.refuse(conn, nil, err.Error())
		a.release()
		return
	}
	d, err := decide(c, a.confPath, a.resolve)
	if err != nil {
		a.refuse(conn, &d.line, err.Error())
		a.release()
		return
	}
	s := slot{entry: a.confPath + "\x00" + d.entry.Key, source: c.Remote.Addr()}
	now := time.Now()
	a.admit.remember(c.Local.Addr(), memo{entry: s.entry, line: d.entry.Line, root: d.entry.Root, limits: d.entry.Limits, at: now})
	if reason, total := a.admit.take(s.entry, s.source, d.entry.Limits, now); reason != "" {
		a.logRefusal(conn, s.entry, total, now, reason, func(line *connLog) { *line = d.line })
		a.release()
		return
	}
	a.starts.do(s.entry, func() { a.start(conn, d, s) })
}

// start checks the entry's root and starts its service, in the entry's
// turn (fairStarts); admission has counted it in s.
func (a *acceptor) start(conn int, d *decision, s slot) {
	fail := func(reason string) {
		a.refuse(conn, &d.line, reason)
		a.admit.release(s.entry, s.source)
		a.release()
	}
	if err := d.check(a.confPath); err != nil {
		fail(err.Error())
		return
	}
	t := d.target
	defer t.Root.Close()
	root := service.In(t.Root.Fd())
	path, err := root.LookPath(a.program, a.env)
	if err != nil {
		fail(err.Error())
		return
	}
	d.line.add("program", path)
	started := false
	p := &enter.Plan{
		Root: t.Root, Cred: t.Cred, Isolate: d.entry.Options.Isolation(a.opts.Isolate), Hostname: d.entry.Hostname,
		Path: path, Argv: a.argv, Env: a.env, Files: []int{conn, conn, conn}, Session: true,
	}
	if a.cpu != nil {
		procs, err := a.cpu.Hold(d.entry.Key)
		if err != nil {
			if n := a.ungroups.count(s.entry, time.Now()); n >= 0 {
				a.log.Log(syslog.Warning, "accept mode: a service of "+d.entry.Key+" weighs apart from its entry's: no cpu cgroup for it: "+err.Error())
			}
		} else {
			// Held until the service ends (finish), or here when
			// none starts.
			p.CgroupProcs = procs
			defer func() {
				if !started {
					a.cpu.Release(d.entry.Key)
				}
			}()
		}
	}
	if a.opts.Favour > 0 {
		if nice := a.admit.favour(s.entry); nice < 0 && p.CgroupProcs != 0 {
			a.cpu.Boost(d.entry.Key, math.Pow(1.25, float64(-nice)), a.opts.Favour)
		} else if nice < 0 && a.cpu == nil {
			p.Spawned = func(pid int) { a.favour(pid, nice) }
		}
	}
	d.line.add("isolate", p.Isolate.String())
	grouped := p.CgroupProcs != 0
	var ch *enter.Child
	startPlan := func(born bool) {
		if born {
			p.CgroupProcs = 0 // nothing to join: it is in its group
		}
		ch, err = p.Start()
	}
	if grouped {
		a.cpu.StartIn(d.entry.Key, startPlan)
	} else {
		startPlan(false)
	}
	if err != nil {
		fail("exec failed: " + explain(root, path, err, a.env))
		return
	}
	unix.Close(conn)
	started = true
	running := &child{start: time.Now(), slot: s, line: d.line, root: d.entry.Root, program: path}
	if grouped {
		running.group = d.entry.Key
	}
	if err := ch.Started(); err != nil {
		running.refusal = "exec failed: " + explain(root, path, err, a.env)
	}
	a.mu.Lock()
	ws, ended := a.unclaimed[ch.Pid]
	if ended {
		delete(a.unclaimed, ch.Pid)
	} else {
		a.children[ch.Pid] = running
	}
	a.mu.Unlock()
	if ended {
		a.finish(ch.Pid, running, ws)
	}
}

// reap collects every exited service and logs its line: the fields of the
// decision, the pid, the exit status and how long it ran. A service that
// ended before serve registered it waits in unclaimed for serve.
func (a *acceptor) reap() {
	for {
		// Under a.mu, so that a pid that children or favoured hold names
		// the child while a.mu is held (favour, killChildren act on it):
		// it is reaped, and its number free for reuse, only here.
		a.mu.Lock()
		pid := exitedChild()
		if pid <= 0 {
			a.mu.Unlock()
			return
		}
		a.unfavour(pid)
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got != pid || err != nil {
			a.mu.Unlock()
			return
		}
		ch := a.children[pid]
		delete(a.children, pid)
		if ch == nil {
			a.unclaimed[pid] = ws
		}
		a.mu.Unlock()
		if ch != nil {
			a.finish(pid, ch, ws)
		}
	}
}

// finish logs the end of a service (or, when it never started, why) and
// gives back its slots.
func (a *acceptor) finish(pid int, ch *child, ws unix.WaitStatus) {
	a.admit.release(ch.slot.entry, ch.slot.source)
	if ch.group != "" {
		a.cpu.Release(ch.group)
	}
	defer a.release()
	if ch.refusal != "" {
		ch.line.add("outcome", "refused")
		ch.line.add("reason", ch.refusal)
		a.log.Log(syslog.Err, ch.line.String())
		return
	}
	ch.line.add("pid", strconv.Itoa(pid))
	switch {
	case ws.Exited():
		ch.line.add("outcome", "exited")
		ch.line.add("status", strconv.Itoa(ws.ExitStatus()))
		if ws.ExitStatus() == exitLoaderFailed {
			a.libraryWarning(ch)
		}
	case ws.Signaled():
		ch.line.add("outcome", "killed")
		ch.line.add("signal", ws.Signal().String())
	}
	ch.line.add("duration", time.Since(ch.start).Round(time.Microsecond).String())
	sev := syslog.Info
	if !ws.Exited() || ws.ExitStatus() != 0 {
		sev = syslog.Warning
	}
	a.log.Log(sev, ch.line.String())
}

// libraryWarning adds to the line of a service that exited as the loader
// does when a shared library is missing which libraries its root lacks:
// the check runs for such a service only, not for every connection.
func (a *acceptor) libraryWarning(ch *child) {
	d, err := chroot.Open(ch.root)
	if err != nil {
		return
	}
	defer d.Close()
	if libs := service.In(d.Fd()).MissingLibraries(ch.program, a.env); libs != "" {
		ch.line.add("warning", "shared libraries missing inside the root: "+libs)
	}
}
