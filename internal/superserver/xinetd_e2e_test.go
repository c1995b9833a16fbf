package superserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunMain(m)) }

// A real xinetd, in a private network namespace, reads the same files
// Find reads: the one service Find says starts virtuald is the one xinetd
// starts virtuald for, on the port and transport Find says, with the conf
// file and program Find says; the disabled service is not served and the
// INTERNAL one is served by xinetd itself, and neither is a Service. It
// shows that Find reads xinetd's format as xinetd does.
func TestXinetdServes(t *testing.T) {
	testbed.RequirePrivileges(t)
	xinetd := testbed.RequireTool(t, "xinetd")
	bin := testbed.Binaries(t)
	ns := testbed.NewNetNS(t)
	roots := testbed.NewRoots(t)
	log := testbed.NewSyslog(t, t.TempDir())
	sites := map[string]string{"192.0.2.1": "site-a", "192.0.2.2": "site-b"}
	var lines []string
	for addr, name := range sites {
		ns.AddAddr(addr)
		lines = append(lines, addr+" "+roots.Root(name, bin["whoami"]))
	}
	conf := roots.WriteConf("conf", lines...)

	// xinetd's files, root's and not writable by others as Find wants
	// them: under the roots' directory, not /tmp.
	etc := filepath.Join(roots.Dir, "etc")
	dir := filepath.Join(etc, "xinetd.d")
	testbed.Must(t, os.MkdirAll(dir, 0o755))
	for _, d := range []string{etc, dir} {
		testbed.Must(t, os.Chmod(d, 0o755))
	}
	xconf := filepath.Join(etc, "xinetd.conf")
	write(t, xconf, "defaults\n{\n\tinstances\t= 60\n}\n\nincludedir "+dir+"\n")
	// A service that runs virtuald, with extra lines. UNLISTED: the ports
	// are not in /etc/services, so xinetd takes them from port =.
	sock := filepath.Join(t.TempDir(), "ipwatchd.sock") // no daemon: virtuald reads the file
	virtuald := func(name, port, extra string) string {
		return "service " + name + "\n{\n" + extra +
			"\ttype\t\t= UNLISTED\n\tsocket_type\t= stream\n\tport\t\t= " + port +
			"\n\twait\t\t= no\n\tuser\t\t= root\n\tserver\t\t= " + bin["virtuald"] +
			"\n\tserver_args\t= -socket " + sock + " " + conf + " /bin/whoami\n}\n"
	}
	write(t, filepath.Join(dir, "who"), "# default: on\n# description: whoami in every address's own root\n"+
		virtuald("who", "7000", "\tprotocol\t= tcp\n"))
	write(t, filepath.Join(dir, "who-off"), virtuald("who-off", "7002", "\tdisable\t\t= yes\n"))
	write(t, filepath.Join(dir, "echo"), `service echo
{
	type		= INTERNAL UNLISTED
	id		= echo-stream
	socket_type	= stream
	protocol	= tcp
	port		= 7001
	wait		= no
	user		= root
}
`)

	found, problems := Find(Sources{XinetdConf: xconf})
	want := []Service{{
		From: filepath.Join(dir, "who") + ":3", SuperServer: "xinetd", Name: "who",
		Conf: conf, Program: "/bin/whoami", Args: []string{"/bin/whoami"},
		Transport: "tcp", Port: 7000, Path: systemdPath,
	}}
	if !reflect.DeepEqual(found, want) || len(problems) != 0 {
		t.Fatalf("Find: %+v, problems %+v; want %+v and no problem", found, problems, want)
	}
	s := found[0]

	ns.Start(log, xinetd, "-dontfork", "-pidfile", filepath.Join(t.TempDir(), "xinetd.pid"), "-f", xconf)
	ns.WaitListening(s.Transport, int(s.Port))
	ns.WaitListening("tcp", 7001)
	if _, ok := log.WaitFor(5*time.Second, "xinetd[", "Started working: 2 available services"); !ok {
		t.Errorf("xinetd does not say it serves two services (who, echo); log ends:\n%s", log.Tail(10))
	}

	// Find's service, as xinetd serves it: virtuald per connection
	// (without -accept it refuses a listening socket, so an answer shows
	// Accept=false), the conf and program Find says, each address from
	// its own root.
	for addr, name := range sites {
		got, err := ns.Ask(net.JoinHostPort(addr, strconv.Itoa(int(s.Port))))
		if err != nil || !strings.HasPrefix(got, "root="+name+" uid=0 gid=0 ") {
			t.Errorf("%s: %q, %v; want root=%s as root", addr, got, err, name)
		}
		line, ok := log.WaitFor(5*time.Second, "local="+addr+":"+strconv.Itoa(int(s.Port))+" ", "outcome=exec")
		for _, f := range []string{" conf=" + s.Conf + " ", " program=" + s.Program + " ", " via=file "} {
			if !ok || !strings.Contains(line, f) {
				t.Errorf("%s: virtuald's log line lacks %q: %q; log ends:\n%s", addr, f, line, log.Tail(10))
			}
		}
	}

	// The INTERNAL echo: xinetd serves it itself.
	c, err := ns.Dial("tcp", "192.0.2.1:7001")
	testbed.Must(t, err)
	defer c.Close()
	fmt.Fprintln(c, "ping")
	if got, err := bufio.NewReader(c).ReadString('\n'); got != "ping\n" {
		t.Errorf("xinetd's echo: %q, %v", got, err)
	}
	// The disabled service: xinetd binds every socket it serves before it
	// serves a connection, and this one is not among them.
	if out, err := ns.Exec("ss", "-Hltn", "sport = :7002").Output(); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("the disabled service listens: %q, %v", out, err)
	}
}
