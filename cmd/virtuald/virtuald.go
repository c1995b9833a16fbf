package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/creds"
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

const usage = "usage: virtuald CONF PROGRAM [ARG...] (started by inetd with the connection on fd 0)"

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
	if len(args) < 3 || args[1] == "" || args[2] == "" {
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

	data, err := conf.Read(confPath)
	if err != nil {
		return refuseConn(err.Error())
	}
	m, err := conf.Find(confPath, data, c.Local.Addr())
	if err != nil {
		return refuseConn(err.Error())
	}
	if m.Entry != nil {
		line.add("line", strconv.Itoa(m.Entry.Line))
		line.add("rule", m.Rule.String())
		line.add("root", m.Entry.Root)
	}
	line.add("via", "file")
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
	t.Root.Close()
	if t.Cred != nil {
		if err := creds.Drop(t.Cred); err != nil {
			return refuseConn("dropping credentials: " + err.Error())
		}
	}
	path, err := service.LookPath(program, env)
	if err != nil {
		return refuseConn(err.Error())
	}
	line.add("program", path)
	severity := syslog.Info
	if libs := service.MissingLibraries(path, env); libs != "" {
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
	err = service.Exec(path, argv, env)
	line.b.Reset()
	line.add("local", c.Local.String())
	line.add("conf", confPath)
	line.add("root", m.Entry.Root)
	line.add("program", path)
	return refuseConn("exec failed: " + err.Error())
}
