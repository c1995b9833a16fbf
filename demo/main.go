// Command demo shows virtuald doing its job, for `make demo`: a private
// network namespace with a few addresses on its lo, a root directory for
// each, ipwatchd (which finds the conf file and the programs in
// inetd.conf), a real inetd running virtuald, one connection to each
// address, a root built by ipwatchctl install whose service logs through
// ipwatchd's relay, what virtuald logged, and ipwatchd's status. It removes
// everything it made when it ends.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/testbed"
)

// demoT gives the testbed what it needs outside a test: cleanups run at
// the end, and a fatal error ends the demo after them.
type demoT struct {
	cleanups []func()
	failed   bool
}

func (d *demoT) Helper()                         {}
func (d *demoT) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (d *demoT) Cleanup(f func())                { d.cleanups = append(d.cleanups, f) }
func (d *demoT) Failed() bool                    { return d.failed }
func (d *demoT) Fatalf(format string, args ...any) {
	d.failed = true
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
	d.done()
	os.Exit(1)
}
func (d *demoT) done() {
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		d.cleanups[i]()
	}
}

func main() {
	binDir := flag.String("bin", "bin", "directory holding virtuald, ipwatchd, ipwatchctl and whoami")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (it makes a network namespace and chroots): sudo make demo")
		os.Exit(1)
	}
	t := &demoT{}
	defer t.done()
	virtuald, _ := filepath.Abs(filepath.Join(*binDir, "virtuald"))
	whoami, _ := filepath.Abs(filepath.Join(*binDir, "whoami"))
	ipwatchd, _ := filepath.Abs(filepath.Join(*binDir, "ipwatchd"))
	ipwatchctl, _ := filepath.Abs(filepath.Join(*binDir, "ipwatchctl"))

	ns := testbed.NewNetNS(t)
	roots := testbed.NewRoots(t)
	logDir, _ := os.MkdirTemp("", "virtuald-demo-log-")
	t.Cleanup(func() { os.RemoveAll(logDir) })
	syslog := testbed.NewSyslog(t, logDir)

	type site struct{ addr, key, root, opts string }
	sites := []site{
		{"192.0.2.10", "192.0.2.10", "customer-a", "user=nobody group=nogroup"},
		{"192.0.2.11", "192.0.2.11", "customer-b", ""},
		{"2001:db8::12", "2001:db8::12", "customer-c", "user=nobody"},
		{"198.51.100.20", "198.51.100.0/24", "pool", ""},
		{"203.0.113.5", "default", "host-default", ""},
		{"192.0.2.13", "192.0.2.13", "broken-world-writable", ""},
		{"192.0.2.15", "192.0.2.15", "customer-e-no-program", "user=nobody"},
	}
	var lines []string
	for _, s := range sites {
		ns.AddAddr(s.addr)
		program := whoami
		if strings.HasSuffix(s.root, "no-program") {
			program = "" // ipwatchd's status says so before a client finds out
		}
		root := roots.Root(s.root, program)
		if strings.HasPrefix(s.root, "broken") {
			testbed.Must(t, os.Chmod(root, 0o777))
		}
		lines = append(lines, strings.TrimSpace(fmt.Sprintf("%-16s %s %s", s.key, root, s.opts)))
	}
	// One more site, its root built from nothing by ipwatchctl install:
	// the host's logger, its loader and libraries, dev/ for the relay.
	built := filepath.Join(roots.Dir, "customer-d")
	ns.AddAddr("192.0.2.14")
	loggerLine := fmt.Sprintf("%-16s %s %s", "192.0.2.14", built, "user=nobody")
	fmt.Printf("== ipwatchctl install -dev -user nobody %s /usr/bin/logger\n", built)
	install := exec.Command(ipwatchctl, "install", "-dev", "-user", "nobody", built, "/usr/bin/logger")
	out, err := install.CombinedOutput()
	fmt.Print(indent(strings.TrimSpace(string(out))) + "\n\n")
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	conf := roots.WriteConf("conf.demo", lines...)
	loggerConf := roots.WriteConf("conf.logger", loggerLine)
	socket := filepath.Join(logDir, "ipwatchd.sock")
	inetdConf := roots.WriteConf("inetd.conf",
		fmt.Sprintf("7000 stream tcp wait root %s virtuald -accept -socket %s %s /bin/whoami", virtuald, socket, conf),
		fmt.Sprintf("7000 stream tcp6 wait root %s virtuald -accept -socket %s %s /bin/whoami", virtuald, socket, conf),
		fmt.Sprintf("7001 stream tcp wait root %s virtuald -accept -socket %s %s /usr/bin/logger -s -t demo hello from inside customer-d", virtuald, socket, loggerConf))

	fmt.Printf("== network namespace %s, addresses on lo:\n", ns.Name)
	for _, s := range sites {
		fmt.Println("   ", s.addr)
	}
	fmt.Printf("\n== %s\n%s\n", conf, indent(strings.Join(lines, "\n")))
	fmt.Printf("\n== %s\n%s\n", loggerConf, indent(loggerLine))
	fmt.Printf("\n== %s (run by Debian's openbsd-inetd inside the namespace)\n%s\n", inetdConf, indent(mustRead(inetdConf)))

	// The kernel's connection counters are pinned per network namespace.
	testbed.MountBPFFS(t)
	pinDir := "/sys/fs/bpf/" + ns.Name
	t.Cleanup(func() { bpf.Remove(pinDir) })
	// No -conf: ipwatchd finds the conf file in inetd.conf's virtuald
	// lines, loads it at start and checks each line's program in every
	// root (status shows both).
	fmt.Printf("\n== ipwatchd -socket %s -inetd-conf %s -bpf-pin-dir %s -relay-syslog (in the namespace)\n", socket, inetdConf, pinDir)
	ns.Start(syslog, ipwatchd, "-socket", socket, "-inetd-conf", inetdConf, "-xinetd-conf", "", "-systemd-units", "", "-bpf-pin-dir", pinDir, "-relay-syslog")
	ns.Await("ipwatchd makes its socket", 5*time.Second, func() bool {
		_, err := os.Stat(socket)
		return err == nil
	})
	ns.Start(syslog, "inetd", "-d", inetdConf)
	ns.WaitListening("tcp", 7000)
	ns.WaitListening("tcp", 7001)

	fmt.Println("\n== one connection to each address; the service in each root says where it runs:")
	for _, s := range sites {
		got, err := ns.Ask(fmtAddr(s.addr) + ":7000")
		switch {
		case err != nil:
			fmt.Printf("    %-15s -> error: %v\n", s.addr, err)
		case got == "":
			fmt.Printf("    %-15s -> refused (connection closed, 0 bytes)\n", s.addr)
		default:
			fmt.Printf("    %-15s -> %s", s.addr, got)
		}
	}

	// The relay serves customer-d's dev/log once the daemon's validator
	// has passed over the roots.
	for i := 0; i < 100; i++ {
		if st, err := os.Lstat(filepath.Join(built, "dev", "log")); err == nil && st.Mode()&os.ModeSocket != 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := ns.Ask("192.0.2.14:7001")
	fmt.Printf("\n== logger inside customer-d, port 7001 (it logs, and echoes to the client with -s):\n    192.0.2.14      -> %q %v\n", got, err)

	time.Sleep(200 * time.Millisecond)
	fmt.Println("\n== what virtuald logged, and what the relay passed on from inside customer-d (syslog):")
	for _, l := range syslog.Lines() {
		if i := strings.Index(l, "virtuald["); i >= 0 {
			fmt.Println("   ", l[i:])
		}
	}
	fmt.Printf("\n== ipwatchctl -socket %s status\n", socket)
	status := ns.Command(nil, ipwatchctl, "-socket", socket, "status")
	status.Stdout, status.Stderr = os.Stdout, os.Stderr
	status.Run()
	fmt.Println("\n== cleaning up: namespace, roots, ipwatchd and inetd removed")
}

func fmtAddr(a string) string {
	if strings.Contains(a, ":") {
		return "[" + a + "]"
	}
	return a
}

func mustRead(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }
