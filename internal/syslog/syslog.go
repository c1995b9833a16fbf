// Package syslog writes messages to the local syslog socket, /dev/log, as
// "<PRI>TAG[PID]: MESSAGE". It exists because virtuald runs once per
// connection and log/syslog would bring the whole net package into its
// start-up.
//
// Messages carry no timestamp: journald, rsyslog's imuxsock and busybox
// syslogd stamp local messages on arrival, and formatting local time would
// read a time zone file on every connection, after the chroot, from inside
// a customer's root.
package syslog

import (
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Severity is a syslog severity.
type Severity int

// The severities virtuald uses.
const (
	Err     Severity = 3
	Warning Severity = 4
	Info    Severity = 6
)

const (
	facilityDaemon = 3 << 3
	maxMessage     = 4096
	socketPath     = "/dev/log"
)

// Logger sends to syslog under one tag, and copies each message to a
// terminal on stderr when there is one (a person running the program by
// hand); it never writes to stderr otherwise, because under inetd stderr is
// the client's socket.
type Logger struct {
	mu     sync.Mutex // accept mode logs from several goroutines
	tag    string
	path   string
	fd     int // -1 when syslog is not reachable
	sealed bool
	echoFd int // a terminal to copy messages to, -1 for none
	prefix string
}

// Open connects to /dev/log. A missing syslog daemon is not an error: the
// messages are then lost, as with syslog(3). Each message is also copied to
// stderr when it is a terminal (a person running the program by hand);
// virtuald keeps its real stderr apart from fd 2 (see its stdio.go) and
// names it here.
func Open(tag string, stderr int) *Logger { return open(tag, socketPath, stderr) }

func open(tag, path string, stderr int) *Logger {
	l := &Logger{tag: tag, path: path, fd: -1, echoFd: -1, prefix: tag + "[" + strconv.Itoa(os.Getpid()) + "]: "}
	if _, err := unix.IoctlGetTermios(stderr, unix.TCGETS); err == nil {
		l.echoFd = stderr
	}
	l.connect()
	return l
}

// Seal forbids connecting again by path: after a chroot, /dev/log is the
// tenant's, and a reconnect would hand it the host's log lines (and take
// whatever it answers as syslog). Messages that the connection made before
// can no longer carry are dropped.
func (l *Logger) Seal() {
	l.mu.Lock()
	l.sealed = true
	l.mu.Unlock()
}

func (l *Logger) connect() {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	// A wedged syslog daemon must not hold up the service for long.
	tv := unix.Timeval{Sec: 1}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: l.path}); err != nil {
		unix.Close(fd)
		return
	}
	l.fd = fd
}

// Log sends one message. Control characters are replaced so that a message
// is always one line, whatever text from a conf file or a client it holds.
func (l *Logger) Log(sev Severity, msg string) {
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "..."
	}
	b := make([]byte, 0, len(msg)+64)
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(facilityDaemon|int(sev)), 10)
	b = append(b, '>')
	b = append(b, l.prefix...)
	start := len(b)
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c == 0x7f {
			c = '?'
		}
		b = append(b, c)
	}
	l.send(b)
	l.mu.Lock()
	if l.echoFd >= 0 {
		unix.Write(l.echoFd, append(append([]byte(l.prefix), b[start:]...), '\n'))
	}
	l.mu.Unlock()
}

// send writes one datagram. A write that a signal interrupts is retried:
// with a send timeout set, the kernel does not restart it, and accept mode
// gets a SIGCHLD for every service that ends. A syslog daemon that was
// restarted since Open is connected to again, once.
func (l *Logger) send(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for try := 0; try < 2; try++ {
		if l.fd < 0 {
			if l.sealed {
				return
			}
			l.connect()
			if l.fd < 0 {
				return
			}
		}
		for {
			_, err := unix.Write(l.fd, b)
			switch err {
			case nil:
				return
			case unix.EINTR:
				continue
			case unix.ECONNREFUSED, unix.ENOTCONN:
				unix.Close(l.fd)
				l.fd = -1
			}
			break
		}
		if l.fd >= 0 {
			return // timed out or failed otherwise: drop the message
		}
	}
}

// Close closes the connection to syslog.
func (l *Logger) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fd >= 0 {
		unix.Close(l.fd)
		l.fd = -1
	}
}
