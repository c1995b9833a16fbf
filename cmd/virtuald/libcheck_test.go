package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
)

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
