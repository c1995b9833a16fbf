package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/virtuald/virtuald/internal/buildinfo"
	"github.com/virtuald/virtuald/internal/cmdline"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/conftable"
	"github.com/virtuald/virtuald/internal/enter"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/service"
	"github.com/virtuald/virtuald/internal/slots"
	"github.com/virtuald/virtuald/internal/socket"
	"github.com/virtuald/virtuald/internal/syslog"
	"golang.org/x/sys/unix"
)

// Exit statuses. Every refusal exits non-zero; 2 means virtuald was not
// started the way it must be (wrong arguments, no socket on fd 0).
const (
	exitRefused = 1
	exitUsage   = 2
)

// daemonTimeout bounds the whole exchange with ipwatchd (connect, request,
// reply). Past it virtuald reads the file itself: a slow daemon costs a
// connection this much, never its answer. The daemon's p99 is 41 ms with
// 1,000 clients asking at once and 4 ms during a status stream of a
// million entries (BENCHMARKS.md); an answer later than this is read from
// the file (from its table, by the front), which costs no more. 100 ms
// was too short for a daemon just started on a loaded host.
const daemonTimeout = 150 * time.Millisecond

// peekTimeout bounds the wait for the datagram of a "dgram wait" service;
// inetd starts virtuald only when one is queued, so it is normally instant.
const peekTimeout = 5 * time.Second

// run is virtuald; std is what shieldStdio did with fds 1 and 2 (shieldErr
// when it could not).
func run(args, env []string, std stdio, shieldErr error) int {
	log := syslog.Open("virtuald", std.stderr())
	defer log.Close()
	if shieldErr != nil {
		log.Log(syslog.Err, shieldErr.Error())
		return exitUsage
	}
	e := readEnvironment(env, os.Getpid())
	if len(args) > 1 && args[1] == reportArg {
		return reportMode(log, args[2:], e.service)
	}
	o, args, err := cmdline.Parse(args)
	switch {
	case err == nil && o.Help:
		return tell(std, log, cmdline.Usage)
	case err == nil && o.Version:
		return tell(std, log, "virtuald "+buildinfo.Version())
	}
	if err != nil || len(args) < 3 || args[1] == "" || args[2] == "" {
		if err != nil {
			log.Log(syslog.Err, err.Error())
		}
		log.Log(syslog.Err, cmdline.Usage)
		return exitUsage
	}
	socketPath := ipc.SocketPath(o.Socket, e.socket)
	if o.Accept {
		// The connections are never fds 1 and 2 here: give the process
		// its stderr back (the journal under systemd).
		if err := std.restore(); err != nil {
			log.Log(syslog.Err, err.Error())
			return exitUsage
		}
		return acceptMode(log, o, socketPath, e.listenFDs, args[1], args[2], args[2:], e.service)
	}
	return perConnection(log, std, o, socketPath, args[1], args[2], args[2:], e)
}

// tell answers a person who asked (-h, -version) on fd 1, unless fd 1
// was a socket (shielded: a client's, if inetd runs such a line), which
// must never get a byte from virtuald: then the answer goes to the log.
func tell(std stdio, log *syslog.Logger, text string) int {
	if std.saved[0] >= 0 {
		log.Log(syslog.Info, text)
		return 0
	}
	if _, err := unix.Write(1, []byte(text+"\n")); err != nil {
		return exitUsage
	}
	return 0
}

// decision is what virtuald resolved for one connection: the checked root
// and credentials, and the log line so far.
type decision struct {
	line   connLog
	target *conf.Target
	entry  *conf.Entry
	via    string // which answered: "daemon", "file"
}

// resolver answers which entry of the conf file serves an address, and
// says which path answered (via) and, when it was the file, why the daemon
// did not (why).
type resolver func(addr netip.Addr) (m conf.Match, via, why string, err error)

// decide resolves the connection's local address to an entry with r. A
// non-nil error is the reason to refuse the connection; the log line is
// filled in either way. check then checks the entry against the system.
func decide(c socket.Conn, confPath string, r resolver) (*decision, error) {
	d := &decision{}
	d.line.add("local", c.Local.String())
	if c.Remote.IsValid() {
		d.line.add("remote", c.Remote.String())
	}
	d.line.add("conf", confPath)
	m, via, why, err := r(c.Local.Addr())
	if m.Entry != nil {
		d.entry = m.Entry
		d.line.add("line", strconv.Itoa(m.Entry.Line))
		d.line.add("rule", m.Rule.String())
		d.line.add("root", m.Entry.Root)
	}
	d.via = via
	d.line.add("via", via)
	if why != "" {
		d.line.add("daemon", why)
	}
	switch {
	case err != nil:
		return d, err
	case m.Err != nil:
		return d, m.Err
	}
	return d, nil
}

// check opens and checks the decided entry's root and resolves its
// credentials, with the one validator every program shares.
func (d *decision) check(confPath string) error {
	t, err := d.entry.Resolve()
	if err != nil {
		return fmt.Errorf("%s:%d: entry %s is invalid: %v", confPath, d.entry.Line, d.entry.Key, err)
	}
	if t.Cred != nil {
		d.line.add("user", t.Cred.Name)
	}
	d.target = t
	return nil
}

// perConnection is the seed's mode: inetd started virtuald for one
// connection on fd 0; virtuald enters the root and becomes the service.
func perConnection(log *syslog.Logger, std stdio, o cmdline.Options, socketPath, confPath, program string, argv []string, e environment) int {
	env := e.service
	refuse := func(line *connLog, reason string) int {
		line.add("outcome", "refused")
		line.add("reason", reason)
		log.Log(syslog.Err, line.String())
		return exitRefused
	}
	c, err := socket.Inspect(0, peekTimeout)
	if err != nil {
		var line connLog
		line.add("conf", confPath)
		refuse(&line, err.Error())
		return exitUsage
	}
	health := ipc.MarkFor(socketPath)
	ask := askAbout(program, env)
	d, err := decide(c, confPath, func(addr netip.Addr) (conf.Match, string, string, error) {
		return resolve(health, socketPath, confPath, addr, ask, e.front)
	})
	line := &d.line
	if err == nil {
		err = checkWildcard(c, o, line)
	}
	// A refused datagram is consumed, or inetd would start virtuald for
	// it again and again.
	consume := func() {
		if !c.Stream {
			var b [1]byte
			unix.Recvfrom(0, b[:], unix.MSG_DONTWAIT)
		}
	}
	refuseConn := func(reason string) int {
		consume()
		return refuse(line, reason)
	}
	// The entry's limits come before anything is done for the
	// connection; the slots are held until the service ends.
	var held *slots.File
	if err == nil {
		var past string
		if held, past, err = takeSlots(slots.Dir, confPath, d.entry, c.Remote.Addr()); past != "" {
			reason, log := limitRefused(held, d, socketPath, confPath, past)
			if !log {
				consume()
				return exitRefused
			}
			return refuseConn(reason)
		}
	}
	if err == nil {
		err = d.check(confPath)
	}
	if err != nil {
		return refuseConn(err.Error())
	}
	t := d.target
	// From here on /dev/log is the tenant's: the logger keeps the
	// connection it has and never makes a new one by path.
	log.Seal()
	// The root's descriptor stays open (close-on-exec) to resolve the
	// program inside it.
	root := service.In(t.Root.Fd())
	path, err := root.LookPath(program, env)
	if err != nil {
		return refuseConn(err.Error())
	}
	line.add("program", path)
	p := &enter.Plan{
		Root: t.Root, Cred: t.Cred, Isolate: d.entry.Options.Isolation(o.Isolate), Hostname: d.entry.Hostname,
		Path: path, Argv: argv, Env: env, Files: std.serviceFiles(), DieWithParent: true,
	}
	if held != nil {
		p.Keep = []int{held.Fd()}
	}
	line.add("isolate", p.Isolate.String())
	rc := reportContext{c.Local.String(), confPath, d.entry.Root, path, p.Isolate}
	if p.Isolate&conf.IsolateUser != 0 {
		// A user namespace is mapped by virtuald-init's parent: virtuald
		// starts it and stays.
		ended := func(status int) {
			if status == exitLoaderFailed {
				warnMissingLibraries(log, root, env, status, rc)
			}
		}
		return startIsolated(log, std, p, root, line, refuseConn, ended)
	}
	if p.Isolate != conf.IsolateNone {
		// virtuald-init takes virtuald's place and starts the service in
		// its namespaces; what goes wrong after that, and the library
		// check (a warning, 0.7 ms and megabytes for a dynamically linked
		// service) for a service that failed the way a missing library
		// makes it fail, come back to virtuald by reportMode.
		line.add("outcome", "exec")
		log.Log(syslog.Info, line.String())
		err := execInPlace(std, p, rc)
		line = rc.line()
		return refuseConn("exec failed: " + explain(root, path, err, env))
	}
	// The service replaces virtuald here: nobody would see it fail, so
	// the warning goes in the line before the exec.
	severity := syslog.Info
	var checked func([]string, time.Time)
	if _, ok := frontReasons[e.front]; ok && ask != nil {
		// The front read no daemon's check: what this one read, it
		// may trust while those files stay as they are.
		checked = func(files []string, start time.Time) {
			conftable.RecordReady(socketPath, d.entry.Root, path, t.Root.Fd(), files, start)
		}
	}
	if w := ask.libraryWarning(root, path, env, checked); w != "" {
		line.add("warning", w)
		severity = syslog.Warning
	}
	line.add("outcome", "exec")
	log.Log(severity, line.String())
	if err := std.restore(); err != nil {
		std.reshield()
		return refuseConn(err.Error())
	}
	err = p.Exec()
	std.reshield()
	line = rc.line()
	return refuseConn("exec failed: " + explain(root, path, err, env))
}

// execInPlace gives virtuald's place to virtuald-init, which starts the
// service in its namespaces (enter.Plan.ExecIsolated), reporting back to
// this program (reportMode). It returns only when that failed.
func execInPlace(std stdio, p *enter.Plan, rc reportContext) error {
	exe, err := unix.Open("/proc/self/exe", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(exe)
	if err := std.restore(); err != nil {
		std.reshield()
		return err
	}
	err = p.ExecIsolated(enter.Report{Exe: exe, Args: rc.args()})
	std.reshield()
	return err
}

// explain words an error of enter for the log: an exec failure as the
// root's contents explain it, anything else as it is.
func explain(root service.Root, path string, err error, env []string) string {
	var failed *enter.ExecError
	if errors.As(err, &failed) {
		return root.Explain(path, failed.Err, env).Error()
	}
	return err.Error()
}

// startIsolated starts the service in its namespaces (enter.Plan.Start)
// and stays as its parent, which the super-server sees: it passes on the
// signals it gets, and exits as the service did, once the service and
// every process it left have ended.
func startIsolated(log *syslog.Logger, std stdio, p *enter.Plan, root service.Root, line *connLog, refuse func(string) int, ended func(status int)) int {
	child, err := p.Start()
	if err == nil {
		if err = child.Started(); err != nil {
			child.Wait()
		}
	}
	if err != nil {
		return refuse("exec failed: " + explain(root, p.Path, err, p.Env))
	}
	line.add("outcome", "exec")
	log.Log(syslog.Info, line.String())
	std.release()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	go func() {
		for s := range sigs {
			unix.Kill(child.Pid, s.(unix.Signal))
		}
	}()
	status := child.Wait()
	ended(status)
	return status
}

// reportArg marks virtuald executed again by virtuald-init to report an
// isolated start (enter.Report): no super-server passes it.
const reportArg = "-virtuald-init-report"

// reportContext is what the log says of a connection virtuald-init
// reports on: virtuald passes it through virtuald-init as arguments.
type reportContext struct {
	local, conf, root, program string
	isolate                    conf.Isolation
}

func (r reportContext) args() []string {
	return []string{"virtuald", reportArg, r.local, r.conf, r.root, r.program, r.isolate.String()}
}

func (r reportContext) line() *connLog {
	var l connLog
	l.add("local", r.local)
	l.add("conf", r.conf)
	l.add("root", r.root)
	l.add("program", r.program)
	return &l
}

// reportMode is virtuald executed again by virtuald-init after an
// in-place start (enter.Plan.ExecIsolated) failed, or its service exited
// 127: it logs why, as virtuald would have, with the root's descriptor
// virtuald-init kept. fields are what follows reportArg.
func reportMode(log *syslog.Logger, fields, env []string) int {
	if len(fields) != 5+4 {
		log.Log(syslog.Err, "virtuald-init's report: "+strconv.Itoa(len(fields))+" arguments")
		return exitUsage
	}
	iso, err := conf.ParseIsolation(fields[4])
	if err != nil {
		log.Log(syslog.Err, "virtuald-init's report: "+err.Error())
		return exitUsage
	}
	rc := reportContext{fields[0], fields[1], fields[2], fields[3], iso}
	r, err := enter.ReadReport(fields[5:], iso)
	if err != nil {
		log.Log(syslog.Err, err.Error())
		return exitUsage
	}
	root := service.In(r.Root)
	if r.Err != nil {
		l := rc.line()
		l.add("outcome", "refused")
		l.add("reason", "exec failed: "+explain(root, rc.program, r.Err, env))
		log.Log(syslog.Err, l.String())
		return exitRefused
	}
	warnMissingLibraries(log, root, env, r.Status, rc)
	return r.Status
}

// warnMissingLibraries logs a warning for a service that exited with
// status when its root lacks a library it needs.
func warnMissingLibraries(log *syslog.Logger, root service.Root, env []string, status int, rc reportContext) {
	libs := root.MissingLibraries(rc.program, env)
	if libs == "" {
		return
	}
	l := rc.line()
	l.add("outcome", "exited")
	l.add("status", strconv.Itoa(status))
	l.add("warning", "shared libraries missing inside the root: "+libs)
	log.Log(syslog.Warning, l.String())
}

// exitLoaderFailed is the status the dynamic loader exits with when a
// shared library is missing (and a shell when a program is).
const exitLoaderFailed = 127

// checkWildcard refuses a datagram that arrived on a socket bound to a
// wildcard address unless the operator allowed it: the service started
// for it gets the socket of every address, and most read on until idle,
// so it could answer another address's datagrams from this root.
func checkWildcard(c socket.Conn, o cmdline.Options, line *connLog) error {
	if !c.Wildcard {
		return nil
	}
	if o.AllowWildcardDgram {
		line.add("dgram", "wildcard")
		return nil
	}
	return errors.New("the datagram socket is bound to a wildcard address, so its service would get every address's datagrams: " +
		"give inetd one line per address (ADDRESS:SERVICE dgram udp wait ...), or -allow-wildcard-dgram to accept that")
}

// resolve asks ipwatchd, and reads the conf file itself when the daemon is
// absent, slow, not trusted, does not know the file, or holds another
// version of it. via says which answered, "daemon" or "file"; why, when
// the file did, why the daemon did not. The daemon is asked about ask's
// program too, and its answer kept in ask. front is what virtuald's front
// found when it asked before handing the connection over (front.go).
func resolve(health ipc.Health, socketPath, confPath string, addr netip.Addr, ask *programAsk, front string) (m conf.Match, via, why string, err error) {
	var st unix.Stat_t
	if err := unix.Stat(confPath, &st); err != nil {
		return fromFile(confPath, addr, "conf not found")
	}
	if why, ok := frontReasons[front]; ok {
		// The front found no daemon to answer, and no table of this
		// file (or the entry is one it hands over): the next
		// connection's front reads the table instead of this program
		// reading the file.
		conftable.Refresh(socketPath, confPath, ipc.FileIDOf(&st))
		return fromFile(confPath, addr, why)
	}
	r := ipc.ResolveRequest{Conf: confPath, Addr: addr, ID: ipc.FileIDOf(&st), Lookup: front == frontAnswered}
	d := askDaemonWith(health, socketPath, r, ask)
	if d.match != nil {
		return *d.match, "daemon", "", nil
	}
	return fromFile(confPath, addr, d.reason)
}

// fromFile reads the conf file itself; why is why the daemon did not answer.
func fromFile(confPath string, addr netip.Addr, why string) (m conf.Match, via, _ string, err error) {
	m, err = conf.FindFile(confPath, addr)
	return m, "file", why, err
}

type daemonAnswer struct {
	match      *conf.Match
	generation uint64
	reason     string // why there is no match
	slow       bool   // it did not answer in time
}

// askDaemon asks ipwatchd which entry of the conf file with identity id
// serves addr (and, when ask is not nil, what it found of ask's program
// there, kept in ask), unless health holds the daemon to be slow, and
// tells health how the question went.
func askDaemon(health ipc.Health, socketPath, confPath string, id ipc.FileID, addr netip.Addr, ask *programAsk) daemonAnswer {
	return askDaemonWith(health, socketPath, ipc.ResolveRequest{Conf: confPath, Addr: addr, ID: id}, ask)
}

// askDaemonWith is askDaemon with the request r.
func askDaemonWith(health ipc.Health, socketPath string, r ipc.ResolveRequest, ask *programAsk) daemonAnswer {
	at := health.Begin()
	if !at.Ask {
		return daemonAnswer{reason: at.Why}
	}
	d := question(socketPath, r, at.Probe, ask)
	at.Done(d.slow)
	return d
}

// question is askDaemon's exchange; a probe of a daemon held to be slow
// waits less.
func question(socketPath string, r ipc.ResolveRequest, probe bool, ask *programAsk) daemonAnswer {
	daemon := ipc.Client{Socket: socketPath, Timeout: daemonTimeout}
	if probe {
		daemon.Timeout = ipc.ProbeTimeout
	}
	if ask != nil {
		r.Program, r.Path = ask.name, ask.path
	}
	addr := r.Addr
	a, err := daemon.Resolve(r)
	var refused *ipc.RefusedError
	switch {
	case errors.Is(err, ipc.ErrAbsent):
		return daemonAnswer{reason: "absent"}
	case errors.Is(err, ipc.ErrSlow):
		return daemonAnswer{reason: "slow", slow: true}
	case errors.As(err, &refused):
		return daemonAnswer{reason: "it refused the question"}
	case err != nil:
		return daemonAnswer{reason: err.Error()}
	}
	m, err := a.Match(addr)
	if err != nil {
		return daemonAnswer{reason: err.Error()}
	}
	if ask != nil {
		ask.found = a.Program
	}
	return daemonAnswer{match: &m, generation: a.Generation}
}
