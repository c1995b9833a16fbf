package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/creds"
	"github.com/virtuald/virtuald/internal/service"
	"golang.org/x/sys/unix"
)

// execIn enters the virtual host that serves ADDRESS and executes COMMAND
// there, as virtuald would start a service for a connection to it: the
// same resolution (the daemon, then the file), the same checks of the
// root and credentials, the same refusals with the same reasons, the root
// entered through the descriptor that was checked, the entry's user with
// no supplementary groups, and no_new_privs. The terminal (fds 0-2) is
// kept, so that an operator gets a shell there; every other descriptor
// is closed. It returns only on failure.
func (e *env) execIn(args []string) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	confPath := fs.String("conf", "", "the conf file to resolve in (default: the one file the daemon serves ADDRESS from)")
	if err := fs.Parse(args); err != nil || fs.NArg() < 2 {
		fmt.Fprint(e.stderr, "usage: ipwatchctl exec [-conf FILE] ADDRESS [--] COMMAND [ARG...]\n")
		return 2
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
		fmt.Fprint(e.stderr, "usage: ipwatchctl exec [-conf FILE] ADDRESS [--] COMMAND [ARG...]\n")
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
	// From here on, virtuald's own steps (cmd/virtuald's perConnection).
	t, err := m.Entry.Resolve()
	if err != nil {
		return e.fail("%s: refused: %s:%d: entry %s is invalid: %v", addr, path, m.Entry.Line, m.Entry.Key, err)
	}
	if err := t.Root.Enter(); err != nil {
		return e.fail("%s: refused: %v", addr, err)
	}
	if t.Cred != nil {
		err = creds.Drop(t.Cred)
	} else {
		// virtuald keeps its credentials without user=; an operator's
		// command gets no way up beyond root inside the root either.
		err = creds.NoNewPrivs()
	}
	if err != nil {
		return e.fail("%s: refused: dropping credentials: %v", addr, err)
	}
	env := os.Environ()
	root := service.In(t.Root.Fd())
	prog, err := root.LookPath(argv[0], env)
	if err != nil {
		return e.fail("%s: %v", addr, err)
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return e.fail("close_range: %v", err)
	}
	err = syscall.Exec(prog, argv, env)
	return e.fail("%s: exec failed: %v", addr, root.Explain(prog, err, env))
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
