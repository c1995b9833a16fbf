package cpugroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// findCPU finds the cpu controller's hierarchy and the process's group in
// it, from mountinfo and /proc/self/cgroup as each kind of host has them.
func TestFindCPU(t *testing.T) {
	const (
		v1cpu     = "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:8 - cgroup cgroup rw,cpu\n"
		v1cpuacct = "31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpuacct\n"
		v1both    = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:8 - cgroup cgroup rw,cpu,cpuacct\n"
		unified   = "35 25 0:30 / /sys/fs/cgroup/unified rw,relatime shared:12 - cgroup2 cgroup2 rw\n"
		v2        = "35 25 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:12 - cgroup2 cgroup2 rw,nsdelegate\n"
		nested    = "40 25 0:26 /system.slice /mnt/cpu\\040groups rw - cgroup cgroup rw,cpu\n"
	)
	for _, c := range []struct {
		name, mountinfo, cgroup string
		want                    hierarchy
		err                     string
	}{
		{name: "v1 hybrid", mountinfo: v1cpuacct + v1cpu + unified, cgroup: "2:cpuacct:/\n1:cpu:/a/b\n0::/\n", want: hierarchy{path: "/sys/fs/cgroup/cpu/a/b"}},
		{name: "v1 root", mountinfo: v1cpu, cgroup: "1:cpu:/\n", want: hierarchy{path: "/sys/fs/cgroup/cpu", root: true}},
		{name: "v1 cpu,cpuacct", mountinfo: v1both, cgroup: "3:cpu,cpuacct:/system.slice/inetd.service\n", want: hierarchy{path: "/sys/fs/cgroup/cpu,cpuacct/system.slice/inetd.service"}},
		{name: "cpuacct is not cpu", mountinfo: v1cpuacct, cgroup: "2:cpuacct:/\n", err: "no cgroup file system with the cpu controller is mounted"},
		{name: "v2", mountinfo: v2, cgroup: "0::/system.slice/virtuald.service\n", want: hierarchy{path: "/sys/fs/cgroup/system.slice/virtuald.service", v2: true}},
		{name: "v2 root", mountinfo: v2, cgroup: "0::/\n", want: hierarchy{path: "/sys/fs/cgroup", v2: true, root: true}},
		{name: "a mount of part of the hierarchy", mountinfo: nested, cgroup: "1:cpu:/system.slice/inetd.service\n", want: hierarchy{path: "/mnt/cpu groups/inetd.service"}},
		{name: "a group the mount does not show", mountinfo: nested, cgroup: "1:cpu:/user.slice\n", err: "no cgroup file system"},
		{name: "a prefix that is not a parent", mountinfo: nested, cgroup: "1:cpu:/system.slice2\n", err: "no cgroup file system"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			mi, cg := filepath.Join(dir, "mountinfo"), filepath.Join(dir, "cgroup")
			os.WriteFile(mi, []byte(c.mountinfo), 0o644)
			os.WriteFile(cg, []byte(c.cgroup), 0o644)
			got, err := findCPU(mi, cg)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("%+v %v, want error %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("%+v %v, want %+v", got, err, c.want)
			}
		})
	}
}

// On this host's hierarchy: what a killed accept mode left is removed, an
// entry's group is made once, held groups
// are never pruned, a process written to its cgroup.procs is in it, a
// boost weighs it more for its time only, and Close removes everything
// that no process is in.
func TestGroups(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("VIRTUALD_REQUIRE_PRIVILEGES") != "" {
			t.Fatal("needs root: cgroups")
		}
		t.Skip("needs root: cgroups")
	}
	// What a killed accept mode left: a process that is gone (this
	// test's child, reaped) and one of its groups.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	h, err := findCPU("/proc/self/mountinfo", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	stale := h.path + "/virtuald." + strconv.Itoa(gone.Process.Pid)
	if err := os.MkdirAll(stale+"/entry-default", 0o755); err != nil {
		t.Fatal(err)
	}
	// The process's own group, as /proc/self/cgroup names it.
	self := func() string {
		own, err := ownGroups("/proc/self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		if h.v2 {
			return own[""]
		}
		return own["cpu"]
	}
	before := self()
	g, where, err := Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("Open left %s, whose process is gone: %v", stale, err)
	}
	defer g.Close()
	if !strings.HasSuffix(where, "/virtuald."+strconv.Itoa(os.Getpid())) {
		t.Errorf("groups in %q", where)
	}
	if s := self(); !strings.HasSuffix(s, "/virtuald."+strconv.Itoa(os.Getpid())+"/virtuald") {
		t.Errorf("Open left the process in %q", s)
	}
	a, err := g.Hold("10.20.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := g.Hold("10.20.0.0/24"); err != nil || again != a {
		t.Errorf("a second Hold: %d %v, want %d", again, err, a)
	}
	path := g.dir + "/entry-10.20.0.0_24"
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.prune()
	g.mu.Unlock()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a held group was pruned: %v", err)
	}

	// A start in the entry's group (cgroup v1): the thread that starts
	// is there while it does, the process is born there, and the thread
	// goes back.
	groupOf := func(file string) string {
		own, err := ownGroups(file)
		if err != nil {
			t.Fatal(err)
		}
		return own["cpu"]
	}
	var tid int
	g.StartIn("10.20.0.0/24", func(born bool) {
		if born != !h.v2 {
			t.Errorf("born in its group: %v on cgroup v2: %v", born, h.v2)
		}
		if !born {
			return
		}
		tid = unix.Gettid()
		if s := groupOf("/proc/self/task/" + strconv.Itoa(tid) + "/cgroup"); !strings.HasSuffix(s, "/entry-10.20.0.0_24") {
			t.Errorf("the starting thread is in %q", s)
		}
		child := exec.Command("sleep", "10")
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		defer child.Wait()
		defer child.Process.Kill()
		if s := groupOf("/proc/" + strconv.Itoa(child.Process.Pid) + "/cgroup"); !strings.HasSuffix(s, "/entry-10.20.0.0_24") {
			t.Errorf("the process started is in %q", s)
		}
	})
	if tid != 0 {
		if s := groupOf("/proc/self/task/" + strconv.Itoa(tid) + "/cgroup"); !strings.HasSuffix(s, "/virtuald") {
			t.Errorf("the thread that started stays in %q", s)
		}
	}

	file, _ := g.weight(1)
	weight := func() string {
		b, _ := os.ReadFile(path + "/" + file)
		return strings.TrimSpace(string(b))
	}
	_, def := g.weight(1)
	_, boosted := g.weight(4)
	if err := g.Boost("10.20.0.0/24", 4, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if w := weight(); w != boosted {
		t.Errorf("boosted weight %s, want %s", w, boosted)
	}
	for deadline := time.Now().Add(10 * time.Second); weight() != def; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the boost never ended: %s", weight())
		}
	}

	g.Release("10.20.0.0/24")
	g.Release("10.20.0.0/24")
	g.mu.Lock()
	g.prune()
	g.mu.Unlock()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a released, empty group stays: %v", err)
	}
	if _, err := g.Hold("default"); err != nil {
		t.Fatal(err)
	}
	g.Close()
	if _, err := os.Stat(g.dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s: %v", g.dir, err)
	}
	if s := self(); s != before {
		t.Errorf("Close left the process in %q, want %q", s, before)
	}
}

// Starts of two entries at once, from many goroutines, each start's
// process born in its entry's group, and after them every thread of the
// process back in virtuald's own group (cgroup v1, where a thread moves
// alone).
func TestStartInConcurrent(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("VIRTUALD_REQUIRE_PRIVILEGES") != "" {
			t.Fatal("needs root: cgroups")
		}
		t.Skip("needs root: cgroups")
	}
	g, _, err := Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer g.Close()
	if g.v2 {
		t.Skip("cgroup v2: a start's process joins its group itself (package enter)")
	}
	names := []string{"10.30.0.1", "10.30.0.2"}
	var wg sync.WaitGroup
	const starters, starts = 8, 10
	errs := make(chan string, starters*starts) // one a start at most
	for i := range starters {
		name := names[i%2]
		if _, err := g.Hold(name); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer g.Release(name)
			for range starts {
				g.StartIn(name, func(born bool) {
					// Alive until it is killed: an exited one is in
					// no group.
					child := exec.Command("sleep", "10")
					if err := child.Start(); err != nil {
						errs <- err.Error()
						return
					}
					b, _ := os.ReadFile("/proc/" + strconv.Itoa(child.Process.Pid) + "/cgroup")
					if !born || !strings.Contains(string(b), "/entry-"+name+"\n") {
						errs <- name + "'s process is in " + string(b)
					}
					child.Process.Kill()
					child.Wait()
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	tasks, err := filepath.Glob("/proc/self/task/*/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		own, err := ownGroups(task)
		if err != nil {
			continue // the thread ended
		}
		if !strings.HasSuffix(own["cpu"], "/virtuald") {
			t.Errorf("thread %s is in %q", filepath.Base(filepath.Dir(task)), own["cpu"])
		}
	}
}

// On cgroup v2 a group that gives its children the cpu controller may
// hold no process: virtuald makes its groups in its own only when it is
// alone there, and says which process is not.
func TestAlone(t *testing.T) {
	dir := t.TempDir()
	self := strconv.Itoa(os.Getpid())
	for _, c := range []struct{ procs, err string }{
		{self + "\n", ""},
		{"1\n" + self + "\n", "holds other processes than virtuald (process 1)"},
	} {
		os.WriteFile(dir+"/cgroup.procs", []byte(c.procs), 0o644)
		err := alone(dir)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q: %v, want %q", c.procs, err, c.err)
		}
	}
}

// Where cgroup v2 has no cpu controller (a host whose cpu controller is
// bound to a v1 hierarchy, as this one's), Open's v2 way says so.
func TestV2WithoutCPU(t *testing.T) {
	const unified = "/sys/fs/cgroup/unified"
	b, err := os.ReadFile(unified + "/cgroup.controllers")
	if err != nil || strings.Contains(string(b), "cpu") {
		t.Skip("no cgroup v2 hierarchy without the cpu controller here")
	}
	if _, _, err := openV2(unified, true); err == nil || !strings.Contains(err.Error(), "has no cpu controller") {
		t.Errorf("openV2 without the controller: %v", err)
	}
}
