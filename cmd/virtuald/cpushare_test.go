package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// With -cpu-share entry (the default), every service of an entry runs in
// the entry's cpu cgroup (issue 23 item 1): on cgroup v1 from its birth,
// forked by a thread of accept mode that joined the group for the fork
// and went back; on v2 isolated (in a user namespace too) from its
// start, without isolation from its exec. The busy entry's three
// services share one group, the quiet
// entry's service has its own, whose weight is raised for -favour
// (as much as a session's nice -4 weighs one as three), then the
// default again; accept mode's own process is in a group beside them;
// the entries with services running weigh together, with accept mode's
// own, as many sessions; the groups go with accept mode.
func TestAcceptCPUShare(t *testing.T) {
	w := newWorld(t)
	for _, a := range []string{"203.0.113.51", "203.0.113.61", "203.0.113.62", "203.0.113.63", "203.0.113.64"} {
		w.ns.AddAddr(a)
	}
	conf := w.roots.WriteConf("conf-cpushare",
		"203.0.113.61 "+holdRoot(t, w, "share-busy"),
		"203.0.113.62 "+holdRoot(t, w, "share-quiet"),
		"203.0.113.63 "+holdRoot(t, w, "share-plain")+" isolate=none",
		"203.0.113.64 "+holdRoot(t, w, "share-user")+" isolate=all,user")
	accept, exited := startAccept(t, w, "0.0.0.0:7308", "-favour", "300ms", conf, whoami)
	said, ok := w.log.WaitFor(10*time.Second, "accept mode: one CPU weight per entry: a cpu cgroup each, in cgroup v")
	if !ok {
		t.Fatalf("no word of the groups; log ends:\n%s", w.log.Tail(5))
	}
	m := regexp.MustCompile(`in cgroup (v[12]) (\S+/virtuald\.(\d+))`).FindStringSubmatch(said)
	if m == nil || m[3] != strconv.Itoa(accept.Process.Pid) {
		t.Fatalf("the groups are not virtuald's own: %q", said)
	}
	dir, file, unit := m[2], "cpu.shares", 1024.0
	if m[1] == "v2" {
		file, unit = "cpu.weight", 100
	}
	// A service's group, as /proc/PID/cgroup names it, ends as its
	// entry's directory does.
	inEntry := func(pid int, key string) bool {
		return strings.HasSuffix(cpuGroup(t, pid), "/virtuald."+m[3]+"/entry-"+key)
	}
	weight := func(d string) string {
		b, err := os.ReadFile(d + "/" + file)
		testbed.Must(t, err)
		return strings.TrimSpace(string(b))
	}
	times := func(f float64) string { return strconv.Itoa(int(unit * f)) }
	var held []net.Conn
	defer closeAll(&held)
	open := func(addr string) int {
		pid, _ := openService(t, w, accept.Process.Pid, &held, addr)
		return pid
	}
	shares := func(entry string) string { return weight(dir + "/entry-" + entry) }
	for range 3 {
		if pid := open("203.0.113.61:7308"); !inEntry(pid, "203.0.113.61") {
			t.Errorf("the busy entry's service is in %s", cpuGroup(t, pid))
		}
	}
	if s := shares("203.0.113.61"); s != times(1) {
		t.Errorf("the busy entry's group weighs %s, want the default %s", s, times(1))
	}
	if pid := open("203.0.113.62:7308"); !inEntry(pid, "203.0.113.62") {
		t.Errorf("the quiet entry's service is in %s", cpuGroup(t, pid))
	}
	// The boost and its end are watched together: it lasts 300 ms.
	if s := shares("203.0.113.62"); s != times(1.25*1.25*1.25*1.25) {
		t.Errorf("the quiet entry's group weighs %s during its favour", s)
	}
	waitFor(t, func() bool { return shares("203.0.113.62") == times(1) })
	if pid := open("203.0.113.64:7308"); !inEntry(pid, "203.0.113.64") {
		t.Errorf("the service in a user namespace is in %s", cpuGroup(t, pid))
	}
	// Without isolation the service is born in its group on cgroup v1
	// (as every service is there: no step of virtuald-init joins it), and
	// moved in once it was executed on v2.
	plain := open("203.0.113.63:7308")
	if m[1] == "v1" && !inEntry(plain, "203.0.113.63") {
		t.Errorf("the service without isolation is in %s", cpuGroup(t, plain))
	}
	waitFor(t, func() bool { return inEntry(plain, "203.0.113.63") })

	// Accept mode's own process weighs beside them, in a group of its
	// own, so that a favoured start outweighs its work for the others:
	// every thread of it, those that forked a service in its entry's
	// group (cgroup v1) back too.
	tasks, err := filepath.Glob("/proc/" + m[3] + "/task/*")
	testbed.Must(t, err)
	for _, task := range tasks {
		if g := taskGroup(t, task); !strings.HasSuffix(g, "/virtuald."+m[3]+"/virtuald") {
			t.Errorf("accept mode's thread %s is in %s", filepath.Base(task), g)
		}
	}
	// The four entries with services running and accept mode's own
	// process weigh as five sessions.
	if w := weight(dir); w != times(5) {
		t.Errorf("the groups weigh %s together, want %s", w, times(5))
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

// cpuGroup is pid's group in the hierarchy of the cpu controller, as
// /proc/PID/cgroup names it: its v1 line's, or else its v2 line's.
func cpuGroup(t *testing.T, pid int) string {
	t.Helper()
	return taskGroup(t, "/proc/"+strconv.Itoa(pid))
}

// taskGroup is cpuGroup for a process's or a thread's directory in /proc.
func taskGroup(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(dir + "/cgroup")
	testbed.Must(t, err)
	v2 := ""
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			v2 = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				return parts[2]
			}
		}
	}
	return v2
}
