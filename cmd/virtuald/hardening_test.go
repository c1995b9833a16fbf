package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
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
	case "version":
		return run([]string{"virtuald", "-version"}, nil, stdio{saved: [2]int{-1, -1}, null: -1}, nil)
	case "help":
		return run([]string{"virtuald", "-h"}, nil, stdio{saved: [2]int{-1, -1}, null: -1}, nil)
	case "help-shielded": // as main does, with whatever fds 1-2 are
		std, err := shieldStdio()
		return run([]string{"virtuald", "--help"}, nil, std, err)
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

// frame encodes raw reply fields: the replies here are malformed on
// purpose, which no typed encoder of package ipc can make.
func frame(fields ...string) []byte {
	raw := make([][]byte, len(fields))
	for i, f := range fields {
		raw[i] = []byte(f)
	}
	b, err := ipc.Encode(raw...)
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
		"ok, empty fields":        []byte(strings.Repeat("\x00\x00\x00\x00", 9)),
		"bad numbers":             fieldsOf("x", "exact", "1", "192.0.2.1", other, "", "", "unchecked", ""),
		"another address's entry": fieldsOf("1", "exact", "9", "192.0.2.9", other, "", "", "unchecked", ""),
		"default named as prefix": fieldsOf("1", "prefix", "9", "default", other, "", "", "unchecked", ""),
		"key not canonical":       fieldsOf("1", "exact", "9", "192.0.2.001", other, "", "", "unchecked", ""),
		"relative root":           fieldsOf("1", "exact", "1", "192.0.2.1", "relative", "", "", "unchecked", ""),
		"rule none, no refusal":   fieldsOf("1", "none", "0", "", "", "", "", "unchecked", ""),
		"unknown rule":            fieldsOf("1", "nearest", "1", "192.0.2.1", other, "", "", "unchecked", ""),
		"bad user":                fieldsOf("1", "exact", "1", "192.0.2.1", other, "-rf", "", "unchecked", ""),
		"unknown program state":   fieldsOf("1", "exact", "1", "192.0.2.1", other, "", "", "fine", ""),
		"ten fields":              fieldsOf("1", "exact", "1", "192.0.2.1", other, "", "", "unchecked", "", "x"),
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
	// An isolated service may answer before virtuald's line reaches the log.
	if n := w.log.AwaitCount(len(raw), 10*time.Second, "local=192.0.2.1:7400", "via=file", "outcome=exec"); n != len(raw) {
		t.Errorf("%d of %d connections read the file; log ends:\n%s", n, len(raw), w.log.Tail(len(raw)))
	}
}

// With -isolate none the service takes virtuald's place, so a warning of
// missing shared libraries must be in the line before the exec. With the
// daemon up it comes from the daemon's validator (ipc.ProgramCheck): no
// library check of virtuald's own runs on the connection (0.7 ms and
// 4 MB of a dynamically linked service's). The fake daemon says the
// opposite of what the roots hold, so that only its answer can explain
// the log. Without the daemon virtuald still checks for itself.
func TestLibraryWarningFromDaemon(t *testing.T) {
	w := newWorld(t)
	fake := newFakeDaemon(t)
	// fine: a static program. gone: a dynamic one with its loader and
	// without libc (the loader starts, and fails toward the client).
	fine := w.roots.Root("lib-fine", w.bin["whoami"])
	gone := w.roots.Root("lib-gone", "")
	for src, dst := range map[string]string{"/bin/true": whoami, "/lib64/ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("this test copies a dynamic x86-64 program and its loader into a root: %v", err)
		}
		p := filepath.Join(gone, dst)
		testbed.Must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		testbed.Must(t, os.WriteFile(p, data, 0o755))
	}
	conf := w.roots.WriteConf("conf-libs", "192.0.2.1 "+fine, "192.0.2.2 "+gone)
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		"7460 stream tcp nowait root "+w.bin["virtuald"]+" virtuald -isolate none -socket "+fake.path+" "+conf+" "+whoami,
		"7461 stream tcp nowait root "+w.bin["virtuald"]+" virtuald -isolate none -socket "+fake.path+".absent "+conf+" "+whoami))
	w.ns.WaitListening("tcp", 7460)
	w.ns.WaitListening("tcp", 7461)
	answer := func(line int, root string, program ipc.ProgramCheck) {
		frame, err := ipc.Encode(ipc.ResolveReply(&ipc.Answer{Generation: 1, Rule: "exact", Line: line,
			Key: "192.0.2." + strconv.Itoa(line), Root: root, Program: program}, nil)...)
		testbed.Must(t, err)
		fake.reply.Store(&frame)
	}
	logged := func(hostPort string, want ...string) string {
		t.Helper()
		w.ns.Ask(hostPort)
		line, ok := w.log.WaitFor(5*time.Second, append([]string{"local=" + hostPort, "outcome=exec"}, want...)...)
		if !ok {
			t.Fatalf("%s: no log line saying %q; log ends:\n%s", hostPort, want, w.log.Tail(5))
		}
		return line
	}

	const said = "/bin/whoami exists but shared libraries it needs are missing inside the root: libsaid.so.1"
	answer(1, fine, ipc.ProgramCheck{State: ipc.ProgramLibrariesMissing, Reason: said})
	logged("192.0.2.1:7460", "via=daemon", "warning=", "libsaid.so.1")

	answer(2, gone, ipc.ProgramCheck{State: ipc.ProgramReady})
	if line := logged("192.0.2.2:7460", "via=daemon"); strings.Contains(line, "warning=") {
		t.Errorf("the daemon said ready, yet virtuald checked the libraries itself: %s", line)
	}

	// Without a daemon the file answers, and virtuald's own check warns.
	logged("192.0.2.2:7461", "via=file", "shared libraries missing inside the root: libc.so.6")
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

// tenantTraps makes roots whose tenant put a trap where virtuald reads:
// a FIFO (an open for reading blocks until someone writes), a device and a
// 10 GiB sparse file, each as the program and as the loader's cache that
// the library check reads, and a FIFO where a library is expected. It
// returns their addresses, already on the namespace's lo, and the conf
// lines that map them.
func tenantTraps(t *testing.T, w *world) (addrs, lines []string) {
	t.Helper()
	dynamic, err := os.ReadFile("/bin/true") // a dynamic program: the library check runs
	if err != nil {
		t.Fatal(err)
	}
	fifo := func(p string) error { return unix.Mkfifo(p, 0o755) }
	device := func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o755, int(unix.Mkdev(1, 5))) }
	sparse := func(p string) error {
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			return err
		}
		return os.Truncate(p, 10<<30)
	}
	traps := []struct {
		name    string
		where   string // inside the root
		make    func(string) error
		dynamic bool // the program is a dynamic ELF (the trap is for the library check)
	}{
		{"fifo-program", "bin/whoami", fifo, false},
		{"device-program", "bin/whoami", device, false},
		{"sparse-program", "bin/whoami", sparse, false},
		{"fifo-cache", "etc/ld.so.cache", fifo, true},
		{"device-cache", "etc/ld.so.cache", device, true},
		{"sparse-cache", "etc/ld.so.cache", sparse, true},
		{"fifo-library", "lib/x86_64-linux-gnu/libc.so.6", fifo, true},
	}
	for i, trap := range traps {
		root := w.roots.Root(trap.name, "")
		p := filepath.Join(root, trap.where)
		testbed.Must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if trap.dynamic {
			if err := os.WriteFile(filepath.Join(root, "bin", "whoami"), dynamic, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := trap.make(p); err != nil {
			t.Fatalf("%s: %v", trap.name, err)
		}
		a := fmt.Sprintf("203.0.113.%d", 40+i)
		w.ns.AddAddr(a)
		addrs = append(addrs, a)
		lines = append(lines, a+" "+root)
	}
	return addrs, lines
}

// springTraps connects twice to every trap, 20 ms apart (so that each
// finds a free slot when the ones before it were dealt with), and waits
// for every connection to be closed; it fails the test for a connection
// that gets a byte or is still open after 20 s (virtuald stuck in a trap).
func springTraps(t *testing.T, w *world, addrs []string, port string) {
	t.Helper()
	errs := make(chan string, 2*len(addrs))
	for _, a := range append(addrs, addrs...) {
		time.Sleep(20 * time.Millisecond)
		go func(a string) {
			c, err := w.ns.Dial("tcp", a+":"+port)
			if err != nil {
				errs <- a + ": " + err.Error()
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			var got bytes.Buffer
			_, err = got.ReadFrom(c)
			switch {
			case err != nil:
				errs <- fmt.Sprintf("%s: still open after 20s (%v): virtuald is stuck in the tenant's trap", a, err)
			case got.Len() > 0:
				errs <- fmt.Sprintf("%s: the client got %q", a, got.String())
			default:
				errs <- ""
			}
		}(a)
	}
	for range 2 * len(addrs) {
		if msg := <-errs; msg != "" {
			t.Error(msg)
		}
	}
}

// A tenant owns everything in its root, and can put a FIFO, a device or a
// huge sparse file wherever virtuald looks (the program, the libraries,
// the loader's cache). Before the fix, virtuald opened them blocking: in
// accept mode three such connections with -max-children 3 refused every
// other tenant, and SIGTERM never completed. Now every read inside a root
// is of a regular file, opened without blocking and bounded: the traps are
// refused at once, in both modes, and everyone else is served.
func TestTenantTraps(t *testing.T) {
	w := newWorld(t)
	addrs, lines := tenantTraps(t, w)
	good := w.serve[:4]
	for _, e := range good {
		lines = append(lines, e.addr+" "+filepath.Join(w.roots.Dir, e.root))
	}
	conf := w.roots.WriteConf("conf-traps", lines...)

	t.Run("per connection", func(t *testing.T) {
		w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd-traps.conf",
			"7500 stream tcp nowait root "+w.bin["virtuald"]+" virtuald "+conf+" "+whoami))
		w.ns.WaitListening("tcp", 7500)
		springTraps(t, w, addrs, "7500")
		for _, e := range good {
			got, err := w.ns.Ask(e.addr + ":7500")
			if msg := judge(e, got, err); msg != "" {
				t.Error(msg)
			}
		}
	})

	t.Run("accept mode", func(t *testing.T) {
		cmd, exited := startAccept(t, w, ":7501", "-max-children", "3", conf, whoami)
		springTraps(t, w, addrs, "7501")
		for _, e := range good {
			var got string
			var err error
			// A slot is free again once its refusal is logged; a
			// connection just past the limit is closed without a byte.
			for try := 0; try < 50; try++ {
				if got, err = w.ns.Ask(e.addr + ":7501"); got != "" || err != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if msg := judge(e, got, err); msg != "" {
				t.Error(msg)
			}
		}
		cmd.Process.Signal(unix.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("exit: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("SIGTERM did not complete")
		}
	})
	for _, a := range addrs {
		line, ok := w.log.WaitFor(5*time.Second, "local="+a+":", "outcome=refused")
		if !ok {
			t.Errorf("%s: no refusal logged; log ends:\n%s", a, w.log.Tail(5))
		}
		t.Log(line)
	}
}
