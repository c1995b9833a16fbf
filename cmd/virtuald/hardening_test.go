package main

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary run a helper instead of the tests.
const helperEnv = "VIRTUALD_TEST_HELPER"

func runHelper(name string) int {
	switch name {
	case "panic-shielded":
		if _, err := shieldStdio(); err != nil {
			return 3
		}
		panic("a bug in virtuald")
	case "panic-unshielded":
		panic("a bug in virtuald")
	}
	return 4
}

// Whatever goes wrong inside virtuald (here a panic, whose trace the Go
// runtime writes to fd 2), nothing reaches fds 1 and 2 once shieldStdio
// ran: under inetd they are the client's socket. Without the shield the
// same panic sends its trace to the client (the control case).
func TestStdioShield(t *testing.T) {
	for _, c := range []struct {
		helper string
		leaks  bool
	}{{"panic-unshielded", true}, {"panic-shielded", false}} {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		client := os.NewFile(uintptr(fds[0]), "client")
		conn := os.NewFile(uintptr(fds[1]), "conn")
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"="+c.helper)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = conn, conn, conn
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		var got bytes.Buffer
		client.SetReadDeadline(time.Now().Add(30 * time.Second))
		got.ReadFrom(client)
		client.Close()
		cmd.Wait()
		switch {
		case c.leaks && !strings.Contains(got.String(), "panic: a bug in virtuald"):
			t.Errorf("%s: the control case did not leak (the test shows nothing): %q", c.helper, got.String())
		case !c.leaks && got.Len() > 0:
			t.Errorf("%s: %d bytes reached the client: %q", c.helper, got.Len(), got.String())
		}
	}
}

// fakeDaemon is a root-owned listener at a socket path that answers every
// question with the reply the test chose: the daemon answers virtuald does
// not believe.
type fakeDaemon struct {
	path  string
	reply atomic.Pointer[[]byte] // the raw bytes sent after reading a request
	ln    *net.UnixListener
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	d := &fakeDaemon{path: filepath.Join(t.TempDir(), "fake.sock")}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	d.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var prefix [4]byte
				if _, err := c.Read(prefix[:]); err != nil {
					return
				}
				body := make([]byte, binary.BigEndian.Uint32(prefix[:]))
				if _, err := c.Read(body); err != nil {
					return
				}
				c.Write(*d.reply.Load())
			}()
		}
	}()
	return d
}

func frame(fields ...string) []byte {
	b, err := ipc.EncodeStrings(fields...)
	if err != nil {
		panic(err)
	}
	return b
}

// A root-owned daemon (trusted by SO_PEERCRED) that answers nonsense:
// every answer is checked completely and, failing, ignored: virtuald reads
// the file, and the client gets its own root's service, never a crash's
// bytes or another root. Before the fix an "ok" without an entry made
// virtuald dereference nil and its panic reached the client.
func TestMalformedDaemonAnswers(t *testing.T) {
	w := newWorld(t)
	fake := newFakeDaemon(t)
	other := w.roots.Dir + "/v4-09" // another tenant's valid root
	answers := map[string][]byte{
		"ok alone":                {},
		"ok, empty fields":        []byte(strings.Repeat("\x00\x00\x00\x00", 8)),
		"bad numbers":             fieldsOf("x", "exact", "1", "192.0.2.1", other, "", "", ""),
		"another address's entry": fieldsOf("1", "exact", "9", "192.0.2.9", other, "", "", ""),
		"default named as prefix": fieldsOf("1", "prefix", "9", "default", other, "", "", ""),
		"key not canonical":       fieldsOf("1", "exact", "9", "192.0.2.001", other, "", "", ""),
		"relative root":           fieldsOf("1", "exact", "1", "192.0.2.1", "relative", "", "", ""),
		"rule none, no refusal":   fieldsOf("1", "none", "0", "", "", "", "", ""),
		"unknown rule":            fieldsOf("1", "nearest", "1", "192.0.2.1", other, "", "", ""),
		"bad user":                fieldsOf("1", "exact", "1", "192.0.2.1", other, "-rf", "", ""),
		"nine fields":             fieldsOf("1", "exact", "1", "192.0.2.1", other, "", "", "", "x"),
	}
	raw := map[string][]byte{
		"oversized frame": {0x7f, 0xff, 0xff, 0xff, 'o', 'k'},
		"short frame":     {0, 0, 0, 100, 0, 0, 0, 2, 'o', 'k'},
		"not a frame":     []byte("HTTP/1.1 200 OK\r\n\r\n"),
		"nothing":         {},
	}
	for name, fields := range answers {
		raw[name] = okFrame(fields)
	}
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		"7400 stream tcp nowait root "+w.bin["virtuald"]+" virtuald -socket "+fake.path+" "+w.conf+" "+whoami))
	w.ns.WaitListening("tcp", 7400)
	e := expectation{addr: "192.0.2.1", root: "v4-01"}
	for name, reply := range raw {
		fake.reply.Store(&reply)
		got, err := w.ns.Ask("192.0.2.1:7400")
		if msg := judge(e, got, err); msg != "" {
			t.Errorf("daemon answers %s: %s", name, msg)
		}
	}
	if n := w.log.Count("local=192.0.2.1:7400", "via=file", "outcome=exec"); n != len(raw) {
		t.Errorf("%d of %d connections read the file; log ends:\n%s", n, len(raw), w.log.Tail(len(raw)))
	}
}

// fieldsOf encodes the fields of an answer (after "ok").
func fieldsOf(f ...string) []byte {
	b := frame(f...)
	return b[4:]
}

// okFrame is a reply frame: "ok", then the given encoded fields.
func okFrame(fields []byte) []byte {
	ok := frame("ok")[4:]
	body := append(append([]byte{}, ok...), fields...)
	out := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(out, body...)
}
