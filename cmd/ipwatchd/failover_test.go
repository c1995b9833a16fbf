package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
)

// Several hosts: a virtual IP that keepalived (VRRP) moves from one host
// to another, each running the same virtuald conf, inetd.conf and ipwatchd
// (README, "Several hosts"). The keepalived.conf is the shipped example,
// dist/examples/keepalived.conf, with its addresses as they are.

const (
	vip             = "192.0.2.50"
	keepalivedConf  = "../../dist/examples/keepalived.conf"
	bindThenExecSh  = `mount --bind "$1" "$2" && shift 2 && exec "$@"`
	failoverTimeout = 30 * time.Second // generous: the figure is logged, not asserted
)

// vipHost is one of the hosts: its world (namespace, log, ipwatchd) and
// the keepalived it runs.
type vipHost struct {
	*world
	name       string
	keepalived *testbed.Process
}

// newVIPHost plugs a host called name into lan at addr, with its own root
// bound onto site (the path the shared conf names) for its inetd, and
// starts ipwatchd, inetd (with the lines inetdConf gives for the host's
// ipwatchd socket) and keepalived there.
func newVIPHost(t *testing.T, lan *testbed.LAN, roots *testbed.Roots, name, addr, conf, site string, inetdConf func(socket string) string) *vipHost {
	t.Helper()
	h := &vipHost{world: &world{t: t, bin: testbed.Binaries(t), roots: roots, conf: conf}, name: name}
	h.ns = testbed.NewNetNS(t)
	lan.Plug(h.ns, addr+"/24")
	// inetd binds the services to the VIP before this host holds it.
	if out, err := h.ns.Exec("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind").CombinedOutput(); err != nil {
		t.Fatalf("ip_nonlocal_bind in %s: %v: %s", name, err, out)
	}
	h.daemonPlaces()
	h.startDaemon()
	// The same path, each host's own content: inetd (and the virtualds
	// it starts) see this host's root at site, as on separate machines.
	own := roots.Root(name, h.bin["whoami"])
	ic := roots.WriteConf("inetd-"+name+".conf", inetdConf(h.socket))
	h.ns.Start(h.log, "/bin/sh", "-c", bindThenExecSh, "sh", own, site, "inetd", "-d", "-R", "1000000", ic)
	h.ns.WaitListening("tcp", 7000)
	h.ns.WaitListening("tcp", 7001)
	h.ns.WaitListening("udp", 7002)
	// keepalived keeps its pid files here, never in the host's /run.
	kdir := t.TempDir()
	h.keepalived = h.ns.Start(h.log, "keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
		"--use-file", keepalivedConf, "--config-id", name,
		"--pid", filepath.Join(kdir, "keepalived.pid"), "--vrrp_pid", filepath.Join(kdir, "vrrp.pid"))
	h.ns.Await("keepalived writes its pid files in "+kdir, 10*time.Second, func() bool {
		_, err1 := os.Stat(filepath.Join(kdir, "keepalived.pid"))
		_, err2 := os.Stat(filepath.Join(kdir, "vrrp.pid"))
		return err1 == nil && err2 == nil
	})
	return h
}

// waitState waits until the host's ipwatchd reports the VIP's entry in
// state.
func (h *vipHost) waitState(state string) {
	h.t.Helper()
	h.ns.Await(h.name+"'s ipwatchd reports "+vip+" "+state, 20*time.Second, func() bool {
		st, err := h.status()
		if err != nil {
			return false
		}
		e := h.entry(st, vip)
		return e != nil && e.State == state
	})
}

// ask connects to addr from client within a short timeout, so that a
// client polling during a move sees the first moment it is served.
func ask(client *testbed.NetNS, network, addr string) string {
	var got string
	client.Do(func() error {
		c, err := net.DialTimeout(network, addr, 300*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp" {
			c.Write([]byte("who?\n"))
		}
		got, _ = bufio.NewReader(c).ReadString('\n')
		return nil
	})
	return got
}

// servedBy polls addr until the root of host answers, and returns how long
// that took.
func servedBy(t *testing.T, client *testbed.NetNS, network, addr, host string) time.Duration {
	t.Helper()
	start := time.Now()
	var got string
	for time.Since(start) < failoverTimeout {
		if got = ask(client, network, addr); strings.HasPrefix(got, "root="+host+" ") {
			if !strings.Contains(got, "uid=65534 gid=65534 groups=[] nnp=1") {
				t.Fatalf("%s %s: served by %s without the entry's credentials: %q", network, addr, host, got)
			}
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s %s: not served by %s within %v; last answer %q", network, addr, host, failoverTimeout, got)
	return 0
}

// Two hosts on one segment run keepalived with the shipped example and
// serve the VIP per connection, in accept mode and over UDP (per-address
// inetd lines bound before the host holds the address); when the master's
// keepalived stops, the backup serves the VIP from its own root, and each
// ipwatchd follows: live on the new holder, absent on the old.
func TestFailoverKeepalived(t *testing.T) {
	testbed.RequirePrivileges(t)
	testbed.RequireTool(t, "keepalived")
	lan := testbed.NewLAN(t)
	client := testbed.NewNetNS(t)
	lan.Plug(client, "192.0.2.100/24")
	roots := testbed.NewRoots(t)
	site := roots.Root("site", "")
	conf := roots.WriteConf("conf", vip+" "+site+" user=nobody group=nogroup")
	// The same inetd.conf on both hosts but for the socket of each one's
	// ipwatchd: per connection, accept mode and UDP, each bound to the VIP.
	bin := testbed.Binaries(t)
	inetdConf := func(socket string) string {
		var lines []string
		for _, l := range []string{
			"7000 stream tcp nowait root %V virtuald -socket %S %C /bin/whoami",
			"7001 stream tcp wait root %V virtuald -accept -socket %S %C /bin/whoami",
			"7002 dgram udp wait root %V virtuald -socket %S %C /bin/whoami",
		} {
			lines = append(lines, vip+":"+strings.NewReplacer("%V", bin["virtuald"], "%S", socket, "%C", conf).Replace(l))
		}
		return strings.Join(lines, "\n")
	}
	a := newVIPHost(t, lan, roots, "host-a", "192.0.2.11", conf, site, inetdConf)
	b := newVIPHost(t, lan, roots, "host-b", "192.0.2.12", conf, site, inetdConf)

	took := servedBy(t, client, "tcp", vip+":7000", "host-a")
	t.Logf("host-a serves %s %v after keepalived started", vip, took.Round(time.Millisecond))
	servedBy(t, client, "tcp", vip+":7001", "host-a")
	servedBy(t, client, "udp", vip+":7002", "host-a")
	a.waitState(admin.StateLive)
	b.waitState(admin.StateAbsent)

	// A connection open on host-a when the VIP moves: its service holds
	// it (the root's /HOLD) until the client closes.
	testbed.Must(t, os.WriteFile(filepath.Join(roots.Dir, "host-a", "HOLD"), nil, 0o644))
	var held net.Conn
	if err := client.Do(func() (err error) { held, err = net.DialTimeout("tcp", vip+":7000", 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(held)
	if line, err := r.ReadString('\n'); !strings.HasPrefix(line, "root=host-a ") {
		t.Fatalf("the held connection: %q %v", line, err)
	}

	stopped := time.Now()
	a.keepalived.Stop()
	took = servedBy(t, client, "tcp", vip+":7000", "host-b")
	t.Logf("failover: host-b serves %s %v after host-a's keepalived was told to stop (%v after it had stopped)",
		vip, time.Since(stopped).Round(time.Millisecond), took.Round(time.Millisecond))
	servedBy(t, client, "tcp", vip+":7001", "host-b")
	servedBy(t, client, "udp", vip+":7002", "host-b")
	b.waitState(admin.StateLive)
	a.waitState(admin.StateAbsent)
	// The held connection does not move: its next segment reaches host-b,
	// which knows nothing of it and resets it.
	held.SetDeadline(time.Now().Add(10 * time.Second))
	held.Write([]byte("still there?\n"))
	if line, err := r.ReadString('\n'); err == nil || line != "" {
		t.Errorf("a connection open across the move: got %q, %v; want it reset", line, err)
	} else {
		t.Logf("a connection open across the move: %v", err)
	}
	if _, ok := b.log.WaitFor(5*time.Second, "local="+vip+":7001", "via=daemon", "outcome=exited"); !ok {
		t.Errorf("host-b's accept mode did not serve %s:7001 with its ipwatchd's answer; log ends:\n%s", vip, b.log.Tail(5))
	}
}
