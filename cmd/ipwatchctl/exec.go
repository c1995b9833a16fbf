package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/creds"
	"github.com/virtuald/virtuald/internal/enter"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/service"
	"golang.org/x/sys/unix"
)

// execIn runs COMMAND inside the virtual host that serves ADDRESS, as
// virtuald would start a service for a connection to it: the same
// resolution (the daemon, then the file), the same checks of the root and
// credentials, the same refusals with the same reasons, and the same way
// in (package enter). The command is the tenant's world, so it gets
// nothing of the operator's but what exec relays: a terminal of its own
// in a new session (pipes when exec has no terminal), and a clean
// environment (execEnv). exec returns when the command ends, with its
// status, after killing what it left in its process group and cutting
// the relay.
func (e *env) execIn(args []string) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	confPath := fs.String("conf", "", "the conf file to resolve in (default: the one file the daemon serves ADDRESS from)")
	isolate := fs.String("isolate", "all", "the isolation of an entry without isolate=, as virtuald's -isolate")
	if err := fs.Parse(args); err != nil || fs.NArg() < 2 {
		fmt.Fprint(e.stderr, "usage: ipwatchctl exec [-conf FILE] [-isolate LIST] ADDRESS [--] COMMAND [ARG...]\n")
		return 2
	}
	def, err := conf.ParseIsolation(*isolate)
	if err != nil {
		return e.fail("-isolate %q: %v", *isolate, err)
	}
	addr, err := netip.ParseAddr(fs.Arg(0))
	if err != nil {
		return e.fail("%q is not an IP address", fs.Arg(0))
	}
	argv := fs.Args()[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 || argv[0] == "" {
		fmt.Fprint(e.stderr, "usage: ipwatchctl exec [-conf FILE] [-isolate LIST] ADDRESS [--] COMMAND [ARG...]\n")
		return 2
	}
	if unix.Geteuid() != 0 {
		return e.fail("exec is for root (it enters a root and takes its entry's credentials)")
	}
	path := *confPath
	if path == "" {
		if path, err = e.servingConf(addr); err != nil {
			return e.fail("%v", err)
		}
	}
	m, _, err := e.lookup(path, addr)
	if err == nil && m.Err != nil {
		err = m.Err
	}
	if err == nil && m.Entry == nil {
		err = fmt.Errorf("%s: no entry serves it", path)
	}
	if err != nil {
		return e.fail("%s: refused: %v", addr, err)
	}
	t, err := m.Entry.Resolve()
	if err != nil {
		return e.fail("%s: refused: %s:%d: entry %s is invalid: %v", addr, path, m.Entry.Line, m.Entry.Key, err)
	}
	defer t.Root.Close()
	environ := execEnv(e.getenv, t.Cred)
	root := service.In(t.Root.Fd())
	prog, err := root.LookPath(argv[0], environ)
	if err != nil {
		return e.fail("%s: %v", addr, err)
	}
	s, err := newSession(e.stdio)
	if err != nil {
		return e.fail("%s: a terminal for the command: %v", addr, err)
	}
	isolation := m.Entry.Options.Isolation(def)
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "isolate" })
	if !explicit {
		isolation = e.servicesIsolation(path, m.Entry, isolation)
	}
	p := &enter.Plan{
		Root: t.Root, Cred: t.Cred, Isolate: isolation, Hostname: m.Entry.Hostname,
		Path: prog, Argv: argv, Env: environ,
		Files: s.child, Session: true, Terminal: s.tty != nil, DieWithParent: true,
	}
	// The thread that starts the command stays with this goroutine until
	// exec returns (enter.Plan.Start).
	child, err := p.Start()
	if err == nil {
		if err = child.Started(); err != nil {
			child.Wait()
		}
	}
	s.closeChild()
	if err != nil {
		s.finish()
		var failed *enter.ExecError
		if errors.As(err, &failed) {
			err = root.Explain(prog, failed.Err, environ)
		}
		return e.fail("%s: exec failed: %v", addr, err)
	}
	pid := child.Pid
	stop := s.forward(pid)
	s.relay()
	status := child.Wait()
	stop()
	// What the command left goes with it: in a pid namespace, with its
	// pid 1, which has ended; else with its process group. Whatever left
	// the group is cut off with the relay.
	unix.Kill(-pid, unix.SIGKILL)
	s.finish()
	return status
}

// servicesIsolation is the isolation virtuald gives entry of the file at
// path as the daemon knows it: the entry's own isolate=, else the
// weakest -isolate of the services that start virtuald with that file
// (the status of the entry). Without a daemon that holds the same entry,
// it is def.
func (e *env) servicesIsolation(path string, entry *conf.Entry, def conf.Isolation) conf.Isolation {
	a := entry.Prefix.Addr()
	q := admin.StatusQuery{Limit: 1}
	if entry.Kind == conf.KeyAddr {
		q.Match = netip.PrefixFrom(a, a.BitLen())
	} else if entry.Kind == conf.KeyPrefix {
		q.Match = entry.Prefix
	}
	st, err := e.admin().Status(q)
	if err != nil {
		return def
	}
	for _, c := range st.Confs {
		if c.Path != path {
			continue
		}
		for _, en := range c.Entries {
			if en.Key == entry.Key && en.Line == entry.Line {
				if i, err := conf.ParseIsolation(en.Isolate); err == nil {
					return i
				}
			}
		}
	}
	return def
}

// execPath is the PATH a command started by exec gets: Debian's for root.
const execPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execEnv is the whole environment of a command started by exec: TERM and
// LANG as the operator has them (when they are plain words), PATH, and
// HOME, USER and LOGNAME of the user it runs as (the host's passwd entry
// of the uid, as login would set them; HOME is / without one). Nothing
// else of the operator's (tokens, agent sockets, HOME) reaches a root.
func execEnv(getenv func(string) string, c *creds.Cred) []string {
	env := []string{"PATH=" + execPath}
	for _, k := range []string{"TERM", "LANG"} {
		if v := getenv(k); v != "" && plainWord(v) {
			env = append(env, k+"="+v)
		}
	}
	uid := uint32(0)
	if c != nil && c.SetUID {
		uid = c.UID
	}
	name, home := strconv.FormatUint(uint64(uid), 10), "/"
	if u, err := user.LookupId(name); err == nil {
		name, home = u.Username, u.HomeDir
	}
	return append(env, "HOME="+home, "USER="+name, "LOGNAME="+name)
}

// plainWord reports whether v is a short value of the characters TERM and
// LANG are made of (xterm-256color, en_US.UTF-8, de_DE@euro).
func plainWord(v string) bool {
	if len(v) > 64 {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@+", r)) {
			return false
		}
	}
	return true
}

// servingConf finds the one conf file of the daemon's that serves addr.
// Two files may serve it from different roots (one per service): then
// the operator must say which.
func (e *env) servingConf(addr netip.Addr) (string, error) {
	l, err := e.admin().Confs()
	if err != nil {
		return "", fmt.Errorf("%v (give -conf FILE to read a file without the daemon)", e.daemonErr(err))
	}
	var serving []string
	var first conf.Match
	same := true
	for _, c := range l.Confs {
		m, _, err := e.lookup(c.Path, addr)
		if err != nil || m.Entry == nil {
			continue
		}
		if len(serving) == 0 {
			first = m
		} else if m.Entry.Root != first.Entry.Root || m.Entry.User != first.Entry.User || m.Entry.Group != first.Entry.Group {
			same = false
		}
		serving = append(serving, c.Path)
	}
	switch {
	case len(serving) == 0:
		return "", fmt.Errorf("%s: no conf file of ipwatchd's has an entry for it; give -conf FILE", addr)
	case !same:
		return "", fmt.Errorf("%s: conf files serve it from different roots or users (%s); give -conf FILE", addr, strings.Join(serving, ", "))
	}
	return serving[0], nil
}
