package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// servicesWorld is a host whose super-servers start virtuald for one conf
// file three ways: a line of the real inetd.conf that inetd runs, a
// xinetd.d file and a systemd socket unit. Each also holds lines that are
// not virtuald's, and a line disabled the way Debian's update-inetd does.
type servicesWorld struct {
	*world
	etc      string // the host's /etc for the test: inetd.conf, xinetd.conf, xinetd.d/, systemd/
	inetd    string
	xinetdD  string
	units    string
	fingerd  string // the xinetd.d file
	inetdArg []string
}

func newServicesWorld(t *testing.T) *servicesWorld {
	w := &servicesWorld{world: newWorld(t, 3)}
	w.etc = filepath.Join(w.roots.Dir, "etc")
	w.xinetdD = filepath.Join(w.etc, "xinetd.d")
	w.units = filepath.Join(w.etc, "systemd", "system")
	for _, d := range []string{w.etc, w.xinetdD, filepath.Join(w.etc, "systemd"), w.units} {
		testbed.Must(t, os.MkdirAll(d, 0o755))
		testbed.Must(t, os.Chmod(d, 0o755))
	}
	virtuald := func(args ...string) string {
		return strings.Join(append([]string{w.bin["virtuald"], "virtuald", "-socket", w.socket, w.conf}, args...), " ")
	}
	w.inetd = filepath.Join(w.etc, "inetd.conf")
	writeFile(t, w.inetd,
		"# /etc/inetd.conf: see inetd(8) for further informations.",
		"echo\tstream\ttcp\tnowait\troot\tinternal",
		fmt.Sprintf("%d\tstream\ttcp\tnowait\troot\t%s", port, virtuald("/bin/whoami")),
		fmt.Sprintf("%d\tstream\ttcp6\tnowait\troot\t%s", port, virtuald("/bin/whoami")),
		"#<off># ftp\tstream\ttcp\tnowait\troot\t"+virtuald("/usr/sbin/in.ftpd", "-l"),
	)
	writeFile(t, filepath.Join(w.etc, "xinetd.conf"),
		"defaults",
		"{",
		"}",
		"includedir "+w.xinetdD,
	)
	writeFile(t, filepath.Join(w.xinetdD, "daytime"),
		"service daytime",
		"{",
		"\tdisable\t\t= yes",
		"\ttype\t\t= INTERNAL",
		"\tid\t\t= daytime-stream",
		"\tsocket_type\t= stream",
		"\tprotocol\t= tcp",
		"\tuser\t\t= root",
		"\twait\t\t= no",
		"}",
	)
	w.fingerd = filepath.Join(w.xinetdD, "finger")
	writeFile(t, w.fingerd, xinetdFinger(w, "no")...)
	writeFile(t, filepath.Join(w.units, "virtuald-who.socket"),
		"[Socket]",
		"ListenStream=7021",
		"Accept=no",
	)
	writeFile(t, filepath.Join(w.units, "virtuald-who.service"),
		"[Service]",
		fmt.Sprintf("ExecStart=%s -accept -socket %s %s /bin/whoami", w.bin["virtuald"], w.socket, w.conf),
	)
	w.inetdArg = []string{"-inetd-conf", w.inetd, "-xinetd-conf", filepath.Join(w.etc, "xinetd.conf"), "-systemd-units", w.units}
	return w
}

// xinetdFinger is a xinetd.d file that starts virtuald for finger.
func xinetdFinger(w *servicesWorld, disable string) []string {
	return []string{
		"# default: on",
		"service finger",
		"{",
		"\tdisable\t\t= " + disable,
		"\tsocket_type\t= stream",
		"\twait\t\t= no",
		"\tuser\t\t= root",
		"\tserver\t\t= " + w.bin["virtuald"],
		"\tserver_args\t= -socket " + w.socket + " " + w.conf + " /usr/sbin/in.fingerd",
		"}",
	}
}

func writeFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	testbed.Must(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	testbed.Must(t, os.Chmod(path, 0o644))
}

// startDaemon runs ipwatchd with only the super-servers' files: no -conf.
func (w *servicesWorld) startDaemon(args ...string) {
	w.t.Helper()
	args = append([]string{"-socket", w.socket, "-bpf", "on", "-bpf-pin-dir", w.pinDir}, append(w.inetdArg, args...)...)
	w.daemon = w.ns.Start(w.log, w.bin["ipwatchd"], args...)
	w.ns.Await("ipwatchd answers", 10*time.Second, func() bool {
		_, err := w.status()
		return err == nil
	})
}

// await waits until the status satisfies ok, and returns it.
func (w *servicesWorld) await(what string, ok func(st *admin.Status, c *admin.ConfStatus) bool) *admin.Status {
	w.t.Helper()
	var last *admin.Status
	w.ns.Await(what, 10*time.Second, func() bool {
		st, err := w.status()
		if err != nil {
			return false
		}
		last = st
		for i := range st.Confs {
			if st.Confs[i].Path == w.conf {
				return ok(st, &st.Confs[i])
			}
		}
		return false
	})
	return last
}

func programState(e *admin.EntryStatus, program string) string {
	if e == nil {
		return "no entry"
	}
	for _, p := range e.Programs {
		if p.Program == program {
			return p.State
		}
	}
	return "not listed"
}

// ipwatchd finds the services that start virtuald in inetd.conf, xinetd's
// files and systemd's socket units, loads their conf file at start (no
// virtuald asked about it), checks each service's program inside every
// root, counts each entry's connections on its services' ports only, and
// keeps the counts while an address is away. A change to a super-server's
// file is seen without a signal.
func TestServicesFound(t *testing.T) {
	w := newServicesWorld(t)
	// site-2 lacks the program; site-3 has a dynamic one without its
	// loader.
	testbed.Must(t, os.Remove(filepath.Join(w.roots.Dir, "site-2", "bin", "whoami")))
	site3 := filepath.Join(w.roots.Dir, "site-3", "bin", "whoami")
	testbed.Must(t, os.Remove(site3))
	data, err := os.ReadFile("/bin/true")
	testbed.Must(t, err)
	testbed.Must(t, os.WriteFile(site3, data, 0o755))
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.inetd)
	w.ns.WaitListening("tcp", port)

	w.startDaemon()
	st := w.await("the programs checked", func(_ *admin.Status, c *admin.ConfStatus) bool {
		return c.Generation > 0 && !c.ProgramsCheckedAt.IsZero()
	})
	c := confOf(st, w.conf)
	if st.Queries.OK+st.Queries.Stale+st.Queries.Racy+st.Queries.Unknown != 0 {
		t.Errorf("the conf was loaded before any virtuald asked, yet the daemon was asked: %+v", st.Queries)
	}
	var found []string
	for _, sv := range c.Services {
		found = append(found, fmt.Sprintf("%s %s %s/%d accept=%v %s", sv.SuperServer, sv.Name, sv.Transport, sv.Port, sv.Accept, sv.Program))
	}
	slices.Sort(found)
	want := []string{
		fmt.Sprintf("inetd %d tcp/%d accept=false /bin/whoami", port, port),
		fmt.Sprintf("inetd %d tcp/%d accept=false /bin/whoami", port, port),
		"systemd virtuald-who.socket tcp/7021 accept=true /bin/whoami",
		"xinetd finger tcp/79 accept=false /usr/sbin/in.fingerd",
	}
	if !slices.Equal(found, want) {
		t.Errorf("services found:\n%s\nwant:\n%s", strings.Join(found, "\n"), strings.Join(want, "\n"))
	}
	if len(st.ServiceProblems) != 0 {
		t.Errorf("service problems: %+v", st.ServiceProblems)
	}
	for _, tt := range []struct {
		addr, program, state string
	}{
		{w.addrs[0], "/bin/whoami", admin.ProgramReady},
		{w.addrs[0], "/usr/sbin/in.fingerd", admin.ProgramMissing},
		{w.addrs[1], "/bin/whoami", admin.ProgramMissing},
		{w.addrs[2], "/bin/whoami", admin.ProgramInterpreterMissing},
	} {
		if got := programState(w.entry(st, tt.addr), tt.program); got != tt.state {
			t.Errorf("%s: %s is %s, want %s", tt.addr, tt.program, got, tt.state)
		}
		// virtuald's question gets the same, so that it needs no check of
		// its own before the exec.
		if got := w.programAnswer(tt.addr, tt.program, "/usr/bin:/bin"); got.State != tt.state {
			t.Errorf("%s: the answer says %s is %+v, want %s", tt.addr, tt.program, got, tt.state)
		}
	}
	if got := w.programAnswer(w.addrs[0], "/usr/sbin/in.ftpd", ""); got.State != admin.ProgramUnchecked {
		t.Errorf("a program no service starts is %+v in the answer, want unchecked", got)
	}
	if c.ProgramsNotReady != 3 {
		t.Errorf("%d entries with a program not ready, want 3", c.ProgramsNotReady)
	}
	if !slices.ContainsFunc(c.Problems, func(p string) bool {
		return strings.Contains(p, w.conf+":2: "+w.addrs[1]+": /bin/whoami") && strings.Contains(p, "does not exist inside the root")
	}) {
		t.Errorf("the problems do not name site-2's missing program: %q", c.Problems)
	}

	// Three connections to the service, one to inetd's own echo on the
	// same address: only the service's count as the entry's.
	for range 3 {
		if got, err := w.ns.Ask(hostPort(w.addrs[0])); err != nil || !strings.HasPrefix(got, "root=site-1 ") {
			t.Fatalf("a connection through inetd: %q, %v", got, err)
		}
	}
	if conn, err := w.ns.Dial("tcp", w.addrs[0]+":7"); err == nil {
		conn.Close()
	} else {
		t.Fatal(err)
	}
	counted := func(st *admin.Status) (total, onPort uint64) {
		e := w.entry(st, w.addrs[0])
		if e == nil {
			return 0, 0
		}
		for _, p := range e.Ports {
			if p.Port == port {
				onPort = p.Connections
			}
		}
		return e.Connections, onPort
	}
	st = w.await("the connections counted", func(st *admin.Status, _ *admin.ConfStatus) bool {
		_, n := counted(st)
		return n == 3
	})
	if total, _ := counted(st); total != 3 {
		t.Errorf("%s: %d connections, want 3 (the echo connection is not the service's)", w.addrs[0], total)
	}
	if c := confOf(st, w.conf); !strings.Contains(c.ConnectionsCounted, fmt.Sprintf("on ports 79 (finger), %d, 7021 (virtuald-who.socket)", port)) {
		t.Errorf("the header does not say what is counted: %q", c.ConnectionsCounted)
	}

	// The address goes away: the entry is absent and keeps its count.
	if out, err := w.ns.Exec("ip", "addr", "del", w.addrs[0]+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	st = w.await("the entry absent", func(st *admin.Status, _ *admin.ConfStatus) bool {
		e := w.entry(st, w.addrs[0])
		return e != nil && e.State == admin.StateAbsent
	})
	if total, _ := counted(st); total != 3 {
		t.Errorf("while its address is away the entry shows %d connections, want 3", total)
	}

	// xinetd's finger is turned off: seen without a signal.
	writeFile(t, w.fingerd, xinetdFinger(w, "yes")...)
	w.await("finger's service gone", func(_ *admin.Status, c *admin.ConfStatus) bool {
		return len(c.Services) == 3
	})
	// site-2 gets its program; the next check (SIGHUP) sees it.
	copyFile(t, w.bin["whoami"], filepath.Join(w.roots.Dir, "site-2", "bin", "whoami"))
	testbed.Must(t, w.daemon.Process.Signal(unix.SIGHUP))
	w.await("site-2's program ready", func(st *admin.Status, _ *admin.ConfStatus) bool {
		return programState(w.entry(st, w.addrs[1]), "/bin/whoami") == admin.ProgramReady
	})
}

// programAnswer is what the daemon's answer to virtuald's question about
// addr says of program, looked up in PATH path.
func (w *servicesWorld) programAnswer(addr, program, path string) ipc.ProgramCheck {
	w.t.Helper()
	var st unix.Stat_t
	testbed.Must(w.t, unix.Stat(w.conf, &st))
	a, err := ipc.Client{Socket: w.socket, Timeout: 5 * time.Second}.Resolve(ipc.ResolveRequest{
		Conf: w.conf, Addr: netip.MustParseAddr(addr), ID: ipc.FileIDOf(&st), Program: program, Path: path, Lookup: true})
	if err != nil {
		w.t.Fatal(err)
	}
	return a.Program
}

func confOf(st *admin.Status, path string) *admin.ConfStatus {
	for i := range st.Confs {
		if st.Confs[i].Path == path {
			return &st.Confs[i]
		}
	}
	return &admin.ConfStatus{}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	testbed.Must(t, err)
	testbed.Must(t, os.WriteFile(to, data, 0o755))
}
