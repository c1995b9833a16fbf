package main

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// With -cpu-share entry (the default), every service of an entry runs in
// the entry's cpu cgroup (issue 23 item 1), isolated (in a user
// namespace too) from its start, without isolation from its exec: the busy entry's three services share one group, the quiet
// entry's service has its own, whose weight is raised for -favour
// (as much as a session's nice -4 weighs one as three), then the
// default again; the entries with services running weigh together as
// many sessions; the groups go with accept mode.
func TestAcceptCPUShare(t *testing.T) {
	w := newWorld(t)
	for _, a := range []string{"203.0.113.61", "203.0.113.62", "203.0.113.63", "203.0.113.64"} {
		w.ns.AddAddr(a)
	}
	conf := w.roots.WriteConf("conf-cpushare",
		"203.0.113.61 "+holdRoot(t, w, "share-busy"),
		"203.0.113.62 "+holdRoot(t, w, "share-quiet"),
		"203.0.113.63 "+holdRoot(t, w, "share-plain")+" isolate=none",
		"203.0.113.64 "+holdRoot(t, w, "share-user")+" isolate=all,user")
	base := cpuHierarchy(t)
	accept, exited := startAccept(t, w, "0.0.0.0:7308", "-favour", "300ms", conf, whoami)
	if _, ok := w.log.WaitFor(10*time.Second, "accept mode: one CPU weight per entry: a cpu cgroup each, in cgroup v1 "+base+"/virtuald."+strconv.Itoa(accept.Process.Pid)); !ok {
		t.Fatalf("no word of the groups; log ends:\n%s", w.log.Tail(5))
	}
	dir := base + "/virtuald." + strconv.Itoa(accept.Process.Pid)
	var held []net.Conn
	defer closeAll(&held)
	open := func(addr string) int {
		t.Helper()
		before := childrenOf(t, accept.Process.Pid)
		c := dialFrom(t, w, "203.0.113.61", addr)
		held = append(held, c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "root=") {
			t.Fatalf("%s: %q %v", addr, line, err)
		}
		for pid := range childrenOf(t, accept.Process.Pid) {
			if !before[pid] {
				return pid
			}
		}
		t.Fatalf("%s: no new child of virtuald", addr)
		return 0
	}
	shares := func(entry string) string {
		b, err := os.ReadFile(dir + "/entry-" + entry + "/cpu.shares")
		testbed.Must(t, err)
		return strings.TrimSpace(string(b))
	}
	for range 3 {
		if pid := open("203.0.113.61:7308"); cpuGroup(t, pid) != dir+"/entry-203.0.113.61" {
			t.Errorf("the busy entry's service is in %s", cpuGroup(t, pid))
		}
	}
	if s := shares("203.0.113.61"); s != "1024" {
		t.Errorf("the busy entry's group weighs %s, want the default 1024", s)
	}
	if pid := open("203.0.113.62:7308"); cpuGroup(t, pid) != dir+"/entry-203.0.113.62" {
		t.Errorf("the quiet entry's service is in %s", cpuGroup(t, pid))
	}
	// The boost and its end are watched together: it lasts 300 ms.
	if s := shares("203.0.113.62"); s != strconv.Itoa(int(1024*1.25*1.25*1.25*1.25)) {
		t.Errorf("the quiet entry's group weighs %s during its favour", s)
	}
	waitFor(t, func() bool { return shares("203.0.113.62") == "1024" })
	if pid := open("203.0.113.64:7308"); cpuGroup(t, pid) != dir+"/entry-203.0.113.64" {
		t.Errorf("the service in a user namespace is in %s", cpuGroup(t, pid))
	}
	// Without isolation the service is moved in once it was executed.
	plain := open("203.0.113.63:7308")
	waitFor(t, func() bool { return cpuGroup(t, plain) == dir+"/entry-203.0.113.63" })

	// The four entries with services running weigh as four sessions.
	if b, _ := os.ReadFile(dir + "/cpu.shares"); strings.TrimSpace(string(b)) != "4096" {
		t.Errorf("the groups weigh %q together, want 4096", b)
	}

	closeAll(&held)
	accept.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("accept mode did not stop")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", dir, err)
	}
}

// cpuHierarchy is the directory of this process's group in the cgroup v1
// hierarchy of the cpu controller, where the tests run (this host's; a
// cgroup v2 host's would need a delegated group, see package cpugroup).
func cpuHierarchy(t *testing.T) string {
	t.Helper()
	g := cpuGroup(t, os.Getpid())
	if !strings.HasPrefix(g, "/sys/fs/cgroup/cpu") {
		t.Skip("the tests know the cpu controller on cgroup v1 only:", g)
	}
	return g
}

// cpuGroup is the directory of pid's group in the cpu controller's v1
// hierarchy, mounted at /sys/fs/cgroup/cpu (or cpu,cpuacct).
func cpuGroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	testbed.Must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				mnt := "/sys/fs/cgroup/" + parts[1]
				if parts[2] == "/" {
					return mnt
				}
				return mnt + parts[2]
			}
		}
	}
	return "v2:" + string(b)
}
