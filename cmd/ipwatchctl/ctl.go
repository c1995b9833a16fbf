package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/virtuald/virtuald/internal/buildinfo"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/digest"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/relay"
	"github.com/virtuald/virtuald/internal/service"
	"golang.org/x/sys/unix"
)

const usage = `usage: ipwatchctl [-socket PATH] COMMAND, or ipwatchctl -version

  status [-json] [-all] [-state live|absent|invalid] [-limit N] [ADDRESS|PREFIX]
                           every conf file the daemon serves: its entries by state, the live and
                           invalid ones (up to -limit, 100), unmapped addresses; ADDRESS lists the
                           entry serving it, PREFIX the entries within it; -all streams every entry
  resolve [-conf FILE] IP  what virtuald would do for a connection to IP, and why
  check [-program PATH] [-path DIRS] [-isolate LIST] CONF...
                           validate conf files offline, with the rules virtuald applies:
                           every problem as FILE:LINE: what is wrong; exit 0 when clean, 1 when not;
                           warns about a dev/null that is not the null device and a dev/log that
                           is missing or dead; with -program, checks that the program (a name: in
                           -path, default /bin:/usr/bin as under Debian's inetd), its ELF interpreter
                           and its libraries are inside every root; prints each file's digest (its
                           entries in canonical form), the same on every host whose file means the same
  reload                   make the daemon reload every conf file now, and wait until it has (root only)
  install [-n] [-dev] [-user NAME] [-profile NAME]... ROOT [PROGRAM...]
  install -profile list
                           copy programs into ROOT at the same paths, with their ELF interpreter and
                           every shared library they need (links too), root's and read-only to others;
                           -dev adds dev/null, dev/zero, dev/urandom and dev/ for the log relay; -user
                           writes NAME's passwd and group lines; -profile adds what a service needs
                           besides its programs (list shows the profiles); -n prints what would change
                           (root only)
  adduser [-uid N] [-home DIR] [-shell PATH] [-gecos TEXT] [-password-stdin] ROOT NAME
                           add a user that exists only inside ROOT: its etc/passwd, etc/group and
                           etc/shadow lines (a SHA-512 crypt hash), its home, its own (root only)
  deluser ROOT NAME        remove ROOT's user NAME from those files; its home is kept (root only)
  exec [-conf FILE] [-isolate LIST] ADDRESS [--] COMMAND [ARG...]
                           run COMMAND inside the virtual host of ADDRESS as virtuald would start its
                           service (same resolution, checks, refusals, user; no_new_privs), on a
                           terminal of its own that exec relays, with a clean environment:
                           exec 192.0.2.10 -- /bin/sh (root only)
  version                  print ipwatchctl's version (also -version)
`

// env is what a command may touch, injected so that tests run commands
// in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	stdio          [3]*os.File // the process's fds 0-2, which exec relays to its command
	socket         string      // the daemon's, from -socket or the environment
}

func (e *env) fail(format string, args ...any) int {
	fmt.Fprintf(e.stderr, "ipwatchctl: "+format+"\n", args...)
	return 1
}

func run(args []string, e *env) int {
	fs := flag.NewFlagSet("ipwatchctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", "", "")
	version := fs.Bool("version", false, "")
	stdout, stderr := e.stdout, e.stderr
	if err := fs.Parse(args); err != nil || (fs.NArg() == 0 && !*version) {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if *version {
		return e.version(fs.Args())
	}
	e.socket = ipc.SocketPath(*socket, e.getenv(ipc.SocketEnv))
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		return e.status(rest)
	case "resolve":
		return e.resolve(rest)
	case "check":
		return check(rest, stdout, stderr, e.relaying())
	case "reload":
		return e.reload(rest)
	case "install":
		return e.install(rest)
	case "adduser":
		return e.adduser(rest)
	case "deluser":
		return e.deluser(rest)
	case "exec":
		return e.execIn(rest)
	case "version":
		return e.version(rest)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "ipwatchctl: unknown command %s\n%s", strconv.Quote(cmd), usage)
	return 2
}

// version prints ipwatchctl's version; it takes no arguments.
func (e *env) version(args []string) int {
	if len(args) > 0 {
		fmt.Fprint(e.stderr, "usage: ipwatchctl version\n")
		return 2
	}
	fmt.Fprintln(e.stdout, "ipwatchctl", buildinfo.Version())
	return 0
}

// daemonErr says in one sentence why the daemon could not be asked: a
// daemon is called absent only when nothing answers at its socket, never
// when this user may not connect to it.
func (e *env) daemonErr(err error) error {
	switch {
	case errors.Is(err, ipc.ErrAbsent):
		return fmt.Errorf("ipwatchd is not running (nothing answers at %s)", e.socket)
	case errors.Is(err, ipc.ErrDenied):
		who := "root and the socket's group"
		var st unix.Stat_t
		if unix.Stat(e.socket, &st) == nil {
			who = "root and the members of group " + groupName(st.Gid)
		}
		return fmt.Errorf("permission denied connecting to ipwatchd at %s: only %s may ask (ipwatchd -socket-group); try as root", e.socket, who)
	}
	return err
}

// groupName is gid's name in the host's group file, or the number.
func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name
	}
	return id
}
func (e *env) admin() admin.Client { return admin.Client{Socket: e.socket} }

func (e *env) status(args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	var q admin.StatusQuery
	fs.BoolVar(&q.All, "all", false, "list every entry that matches (streamed), not the first -limit")
	fs.StringVar(&q.State, "state", "", "list only the entries in this state: live, absent or invalid")
	fs.IntVar(&q.Limit, "limit", admin.DefaultStatusLimit, "list at most this many entries per conf file")
	if err := fs.Parse(args); err != nil || fs.NArg() > 1 {
		return 2
	}
	if fs.NArg() == 1 {
		m, err := admin.ParseMatch(fs.Arg(0))
		if err != nil {
			return e.fail("%q is not an address or a prefix", fs.Arg(0))
		}
		q.Match = m
	}
	if q.All {
		if err := e.streamStatus(q, *asJSON); err != nil {
			return e.fail("%v", err)
		}
		return 0
	}
	st, err := e.admin().Status(q)
	if err != nil {
		return e.fail("%v", e.daemonErr(err))
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(e.stdout, string(b))
		return 0
	}
	printStatus(e.stdout, st, q)
	return 0
}

// streamStatus prints a status of every entry q matches as the daemon
// streams it: neither side holds more than a batch of entries.
func (e *env) streamStatus(q admin.StatusQuery, asJSON bool) error {
	var out statusStream
	if asJSON {
		out = &jsonStream{w: e.stdout}
	} else {
		out = &tableStream{w: e.stdout}
	}
	if err := e.admin().StreamStatus(q, out.header, out.entries); err != nil {
		return e.daemonErr(err)
	}
	out.end()
	return nil
}

// resolve says what virtuald would do for IP: the daemon's answer for each
// conf file it serves, or for -conf FILE the daemon's answer if it holds
// that file as it is on disk, else the file's own. The root is then checked
// as virtuald checks it. Exit 0 when every file serves IP, 1 otherwise.
func (e *env) resolve(args []string) int {
	fs := flag.NewFlagSet("resolve", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	confPath := fs.String("conf", "", "the conf file to resolve in (default: every file the daemon serves)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprint(e.stderr, "usage: ipwatchctl resolve [-conf FILE] IP\n")
		return 2
	}
	addr, err := netip.ParseAddr(fs.Arg(0))
	if err != nil {
		return e.fail("%q is not an IP address", fs.Arg(0))
	}
	paths := []string{*confPath}
	if *confPath == "" {
		l, err := e.admin().Confs()
		if err != nil {
			return e.fail("%v (give -conf FILE to read a file without the daemon)", e.daemonErr(err))
		}
		paths = paths[:0]
		for _, c := range l.Confs {
			paths = append(paths, c.Path)
		}
		if len(paths) == 0 {
			return e.fail("ipwatchd serves no conf file; give -conf FILE")
		}
	}
	status := 0
	for _, p := range paths {
		m, source, err := e.lookup(p, addr)
		if err != nil {
			fmt.Fprintf(e.stdout, "%s: %s: refused: %v\n", p, addr, err)
			status = 1
			continue
		}
		if m.Entry == nil || m.Err != nil {
			fmt.Fprintf(e.stdout, "%s: %s: refused (%s): %v\n", p, addr, source, m.Err)
			status = 1
			continue
		}
		how := fmt.Sprintf("line %d, %s match of %s", m.Entry.Line, m.Rule, m.Entry.Key)
		if err := m.Entry.Validate(); err != nil {
			fmt.Fprintf(e.stdout, "%s: %s: refused (%s; %s): %v\n", p, addr, how, source, err)
			status = 1
			continue
		}
		user := ""
		if m.Entry.User != "" {
			user += " user=" + m.Entry.User
		}
		if m.Entry.Group != "" {
			user += " group=" + m.Entry.Group
		}
		if user != "" {
			user = " as" + user
		}
		fmt.Fprintf(e.stdout, "%s: %s: served from %s%s (%s; %s)\n", p, addr, m.Entry.Root, user, how, source)
	}
	return status
}

// lookupTimeout bounds a lookup: past it, the file is read instead.
const lookupTimeout = 5 * time.Second

// lookup is virtuald's resolution without the connection: the daemon when
// it holds the file as it is on disk, else the file itself.
func (e *env) lookup(path string, addr netip.Addr) (conf.Match, string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil {
		daemon := ipc.Client{Socket: e.socket, Timeout: lookupTimeout}
		if a, err := daemon.Resolve(ipc.ResolveRequest{Conf: path, Addr: addr, ID: ipc.FileIDOf(&st), Lookup: true}); err == nil {
			if m, err := a.Match(addr); err == nil {
				return m, fmt.Sprintf("answered by ipwatchd, generation %d", a.Generation), nil
			}
		}
	}
	data, err := conf.Read(path)
	if err != nil {
		return conf.Match{}, "", err
	}
	m, err := conf.Find(path, data, addr)
	return m, "read from the file", err
}

// relaying reports whether a daemon answers and relays syslog from
// inside the roots (-relay-syslog); without one, check warns about every
// root without dev/log.
func (e *env) relaying() bool {
	l, err := e.admin().Confs()
	return err == nil && l.RelaySyslog
}

// reload asks the daemon to reload every file and prints what it did.
func (e *env) reload(args []string) int {
	if len(args) > 0 {
		fmt.Fprint(e.stderr, "usage: ipwatchctl reload\n")
		return 2
	}
	l, err := e.admin().Reload()
	if err != nil {
		return e.fail("%v", e.daemonErr(err))
	}
	status := 0
	for _, c := range l.Confs {
		if c.Error != "" {
			fmt.Fprintf(e.stdout, "%s: reload failed, generation %d kept: %s\n", c.Path, c.Generation, c.Error)
			status = 1
			continue
		}
		fmt.Fprintf(e.stdout, "%s: generation %d\n", c.Path, c.Generation)
	}
	return status
}

// check validates each file: the text rules first, then every entry
// against the system (its root, user and group), as virtuald would. It
// warns about what the root's dev/ lacks (devWarnings; relaying: ipwatchd's
// log relay is on), and with -program, checks that the program can start
// inside every root. Problems make the exit status 1; warnings do not.
func check(args []string, out, errOut io.Writer, relaying bool) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(errOut)
	program := fs.String("program", "", "also check that this program, with its ELF interpreter and shared libraries, is inside every root")
	// virtuald looks a program up in the PATH its super-server gives it:
	// none under Debian's inetd, so execvp's default.
	search := fs.String("path", service.DefaultPath, "the PATH virtuald gets from its super-server, where -program without a slash is looked up inside each root")
	isolate := fs.String("isolate", "all", "virtuald's -isolate: the isolation of the entries without isolate=")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprint(errOut, "usage: ipwatchctl check [-program PATH] [-path DIRS] [-isolate LIST] CONF...\n")
		return 2
	}
	def, err := conf.ParseIsolation(*isolate)
	if err != nil {
		fmt.Fprintf(errOut, "ipwatchctl: -isolate %q: %v\n", *isolate, err)
		return 2
	}
	if *program != "" && !strings.Contains(*program, "/") {
		fmt.Fprintf(out, "%s is looked up in PATH=%s inside each root, as virtuald does when its super-server gives it that PATH (Debian's inetd gives none: %s; -path to change)\n", *program, *search, service.DefaultPath)
	}
	status := 0
	ranges := map[uint32]userRange{} // isolate=user: the first root of each uid range
	for _, path := range fs.Args() {
		f, err := conf.Load(path)
		if err != nil {
			fmt.Fprintln(out, err)
			status = 1
			continue
		}
		problems, warnings, invalid := len(f.Errors), 0, 0
		for _, e := range f.Errors {
			fmt.Fprintln(out, e)
		}
		if f.Len() == 0 {
			fmt.Fprintf(out, "%s: no entries: every connection will be refused\n", path)
			problems++
		}
		isolation := map[string]int{}
		for _, e := range f.All() {
			if e.Err != nil {
				invalid++
				continue
			}
			t, err := e.Resolve()
			if err != nil {
				fmt.Fprintf(out, "%s:%d: %s: %v\n", path, e.Line, e.Key, err)
				invalid++
				problems++
				continue
			}
			iso := e.Options.Isolation(def)
			isolation[iso.String()]++
			if w := conf.RootWarning(e, iso); w != "" {
				fmt.Fprintf(out, "%s:%d: %s: warning: %s\n", path, e.Line, e.Key, w)
				warnings++
			}
			if iso&conf.IsolateUser != 0 {
				base := conf.UserBase(e.Root)
				if first, ok := ranges[base]; ok && first.root != e.Root {
					fmt.Fprintf(out, "%s:%d: %s: warning: isolate=user maps root inside %s to uid %d outside, as it does for %s (%s:%d): "+
						"the two roots' services share their ids outside (their processes cannot see each other, but count against one another's limits); rename one root to give it a range of its own\n",
						path, e.Line, e.Key, e.Root, base, first.root, first.file, first.line)
					warnings++
				} else if !ok {
					ranges[base] = userRange{e.Root, path, e.Line}
				}
			}
			root := service.In(t.Root.Fd())
			for _, w := range devWarnings(root, t.Root.Fd(), e.Root, relaying) {
				fmt.Fprintf(out, "%s:%d: %s: warning: %s\n", path, e.Line, e.Key, w)
				warnings++
			}
			if *program != "" {
				prog, err := root.Check(*program, []string{"PATH=" + *search})
				switch {
				case err != nil:
					fmt.Fprintf(out, "%s:%d: %s: %s cannot start in %s: %v\n", path, e.Line, e.Key, *program, e.Root, err)
					problems++
				case e.User != "":
					if why := dropsPrivileges(root, prog); why != "" {
						fmt.Fprintf(out, "%s:%d: %s: warning: %s %s, as services that drop privileges themselves do, but user=%s starts it without root: "+
							"if its connections fail (cannot set groups, logins refused), remove user= and give its users in %s/etc/passwd\n",
							path, e.Line, e.Key, prog, why, e.User, strings.TrimSuffix(e.Root, "/"))
						warnings++
					}
				}
			}
			t.Root.Close()
		}
		// What the file means, for hosts that must serve alike (see
		// conf.File.Digest): comments and layout do not count.
		fmt.Fprintf(out, "%s: digest %s\n", path, digest.Of(f))
		if len(isolation) > 0 {
			counts := make([]string, 0, len(isolation))
			for _, iso := range slices.Sorted(maps.Keys(isolation)) {
				counts = append(counts, fmt.Sprintf("%s %d", iso, isolation[iso]))
			}
			fmt.Fprintf(out, "%s: valid entries by isolation (isolate=, else -isolate %s): %s\n", path, def, strings.Join(counts, ", "))
		}
		fmt.Fprintf(out, "%s: %d entries, %d invalid, %d problems, %d warnings\n", path, f.Len(), invalid, problems, warnings)
		if problems > 0 {
			status = 1
		}
	}
	if *program != "" {
		fmt.Fprint(out, unseen)
	}
	return status
}

// userRange is where check first saw a root's isolate=user uid range.
type userRange struct {
	root, file string
	line       int
}

// unseen is what check -program cannot see: what the service finds by
// itself once it runs, which no ELF header names.
const unseen = `check cannot see what the service looks for by itself once it runs: programs it runs
(in.fingerd runs /usr/bin/finger), PAM modules and etc/pam.d, NSS modules and etc/nsswitch.conf,
the root's own etc/passwd, etc/group and etc/shadow, and any file it reads. To list them, trace
one real connection and look for ENOENT:
  strace -f -e trace=file -o /tmp/trace -p "$(pidof inetd)"       # then connect once
or, for a program that runs without a client:
  strace -f -e trace=file ipwatchctl exec ADDRESS -- PROGRAM ARGS...
`

// devWarnings says what the service will miss in the root's dev/: a
// dev/null that is not the null device, and a dev/log that is missing
// (unless ipwatchd's log relay serves one there) or that nobody listens on.
func devWarnings(root service.Root, rootFd int, path string, relaying bool) []string {
	var ws []string
	if w := devNullProblem(rootFd, path); w != "" {
		ws = append(ws, w)
	}
	show := strings.TrimSuffix(path, "/") + "/dev/log"
	if !root.Exists("/dev/log") {
		if !relaying {
			ws = append(ws, show+" is missing: the service inside cannot log to syslog")
		} else if err := relay.Check(rootFd, path); err != nil {
			ws = append(ws, fmt.Sprintf("%s is missing, and ipwatchd's log relay cannot serve it: %v", show, err))
		} else {
			ws = append(ws, show+" is missing: ipwatchd's log relay makes it at its next pass over the roots (ipwatchctl reload: now)")
		}
		return ws
	}
	if w := devLogDead(rootFd, path); w != "" {
		if relaying && relay.Check(rootFd, path) == nil {
			w += " (ipwatchd's log relay replaces a dead socket in the roots it serves)"
		}
		ws = append(ws, w)
	}
	return ws
}
