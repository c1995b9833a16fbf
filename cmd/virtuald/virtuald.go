package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/creds"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/service"
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

const usage = "usage: virtuald [-socket PATH] CONF PROGRAM [ARG...] (started by inetd with the connection on fd 0)"

// daemonTimeout bounds the whole exchange with ipwatchd (connect, request,
// reply). Past it virtuald reads the file itself: a slow daemon costs a
// connection this much, never its answer.
const daemonTimeout = 250 * time.Millisecond

// peekTimeout bounds the wait for the datagram of a "dgram wait" service;
// inetd starts virtuald only when one is queued, so it is normally instant.
const peekTimeout = 5 * time.Second

// connLog accumulates the fields of the one log line a connection gets.
type connLog struct {
	b strings.Builder
}

func (l *connLog) add(key, value string) {
	if l.b.Len() > 0 {
		l.b.WriteByte(' ')
	}
	l.b.WriteString(key)
	l.b.WriteByte('=')
	if value == "" || strings.ContainsAny(value, " \"=\\") || !isPrintable(value) {
		l.b.WriteString(strconv.Quote(value))
	} else {
		l.b.WriteString(value)
	}
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func run(args, env []string) int {
	log := syslog.Open("virtuald")
	defer log.Close()
	socketFlag, args, ok := socketOption(args)
	if !ok || len(args) < 3 || args[1] == "" || args[2] == "" {
		log.Log(syslog.Err, usage)
		return exitUsage
	}
	confPath, program, argv := args[1], args[2], args[2:]

	var line connLog
	refuse := func(reason string) int {
		line.add("outcome", "refused")
		line.add("reason", reason)
		log.Log(syslog.Err, line.b.String())
		return exitRefused
	}

	c, err := socket.Inspect(0, peekTimeout)
	if err != nil {
		line.add("conf", confPath)
		refuse(err.Error())
		return exitUsage
	}
	line.add("local", c.Local.String())
	if c.Remote.IsValid() {
		line.add("remote", c.Remote.String())
	}
	line.add("conf", confPath)
	// A refused datagram is consumed, or inetd would start virtuald for
	// it again and again.
	refuseConn := func(reason string) int {
		if !c.Stream {
			var b [1]byte
			unix.Recvfrom(0, b[:], unix.MSG_DONTWAIT)
		}
		return refuse(reason)
	}

	m, via, why, err := resolve(ipc.SocketPath(socketFlag), confPath, c.Local.Addr())
	addVia := func() {
		line.add("via", via)
		if why != "" {
			line.add("daemon", why)
		}
	}
	if err != nil {
		addVia()
		return refuseConn(err.Error())
	}
	if m.Entry != nil {
		line.add("line", strconv.Itoa(m.Entry.Line))
		line.add("rule", m.Rule.String())
		line.add("root", m.Entry.Root)
	}
	addVia()
	if m.Err != nil {
		return refuseConn(m.Err.Error())
	}
	t, err := m.Entry.Resolve()
	if err != nil {
		return refuseConn(fmt.Sprintf("%s:%d: entry %s is invalid: %v", confPath, m.Entry.Line, m.Entry.Key, err))
	}
	if t.Cred != nil {
		line.add("user", t.Cred.Name)
	}
	if err := t.Root.Enter(); err != nil {
		return refuseConn(err.Error())
	}
	if t.Cred != nil {
		if err := creds.Drop(t.Cred); err != nil {
			return refuseConn("dropping credentials: " + err.Error())
		}
	}
	// The root's descriptor stays open (close-on-exec) to resolve the
	// program inside it.
	root := service.In(t.Root.Fd())
	path, err := root.LookPath(program, env)
	if err != nil {
		return refuseConn(err.Error())
	}
	line.add("program", path)
	severity := syslog.Info
	if libs := root.MissingLibraries(path, env); libs != "" {
		line.add("warning", "shared libraries missing inside the root: "+libs)
		severity = syslog.Warning
	}
	line.add("outcome", "exec")
	log.Log(severity, line.b.String())

	// Descriptors inherited from the super-server must not reach the
	// service; marking them close-on-exec (rather than closing them) keeps
	// the Go runtime's own descriptors valid until the exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return refuseConn("close_range: " + err.Error())
	}
	err = root.Exec(path, argv, env)
	line.b.Reset()
	line.add("local", c.Local.String())
	line.add("conf", confPath)
	line.add("root", m.Entry.Root)
	line.add("program", path)
	return refuseConn("exec failed: " + err.Error())
}

// socketOption takes "-socket PATH" or "-socket=PATH" off the front of the
// arguments. Nothing else is an option: the conf path comes next, as in
// the seed's inetd lines.
func socketOption(args []string) (path string, rest []string, ok bool) {
	if len(args) < 2 {
		return "", args, true
	}
	switch a := args[1]; {
	case a == "-socket" || a == "--socket":
		if len(args) < 3 {
			return "", args, false
		}
		return args[2], append([]string{args[0]}, args[3:]...), true
	case strings.HasPrefix(a, "-socket=") || strings.HasPrefix(a, "--socket="):
		_, v, _ := strings.Cut(a, "=")
		return v, append([]string{args[0]}, args[2:]...), true
	}
	return "", args, true
}

// resolve asks ipwatchd, and reads the conf file itself when the daemon is
// absent, slow, not trusted, does not know the file, or holds another
// version of it. via says which answered, "daemon" or "file"; why, when
// the file did, why the daemon did not.
func resolve(socketPath, confPath string, addr netip.Addr) (m conf.Match, via, why string, err error) {
	d := askDaemon(socketPath, confPath, addr)
	if d.match != nil {
		return *d.match, "daemon", "", nil
	}
	data, err := conf.Read(confPath)
	if err != nil {
		return conf.Match{}, "file", d.reason, err
	}
	m, err = conf.Find(confPath, data, addr)
	return m, "file", d.reason, err
}

type daemonAnswer struct {
	match  *conf.Match
	reason string // why there is no match
}

func askDaemon(socketPath, confPath string, addr netip.Addr) daemonAnswer {
	var st unix.Stat_t
	if err := unix.Stat(confPath, &st); err != nil {
		return daemonAnswer{reason: "conf not found"}
	}
	id := ipc.FileID{Dev: st.Dev, Ino: st.Ino, Size: uint64(st.Size), MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}
	req := append([]string{ipc.Version, ipc.OpResolve, confPath, addr.String()}, id.Fields()...)
	reply, err := ipc.Call(socketPath, daemonTimeout, 64<<10, req...)
	switch {
	case errors.Is(err, ipc.ErrAbsent):
		return daemonAnswer{reason: "absent"}
	case errors.Is(err, ipc.ErrUntrusted):
		return daemonAnswer{reason: err.Error()}
	case errors.Is(err, ipc.ErrSlow):
		return daemonAnswer{reason: "slow"}
	case err != nil:
		return daemonAnswer{reason: err.Error()}
	case len(reply) == 0:
		return daemonAnswer{reason: "empty reply"}
	}
	switch string(reply[0]) {
	case ipc.ReplyOK:
	case ipc.ReplyStale:
		return daemonAnswer{reason: "its copy of the conf is stale"}
	case ipc.ReplyUnknown:
		return daemonAnswer{reason: "conf unknown to it"}
	default:
		return daemonAnswer{reason: "it refused the question"}
	}
	a, err := ipc.ParseAnswer(reply[1:])
	if err != nil {
		return daemonAnswer{reason: err.Error()}
	}
	m := conf.Match{Rule: conf.ParseRule(a.Rule)}
	if a.Key != "" {
		m.Entry = &conf.Entry{Line: a.Line, Key: a.Key, Root: a.Root, User: a.User, Group: a.Group}
	}
	if a.Refusal != "" {
		m.Err = errors.New(a.Refusal)
	}
	return daemonAnswer{match: &m}
}
