// Package cpugroup gives each entry of accept mode one CPU weight: a cpu
// cgroup per entry, which the entry's services join, so that the
// scheduler weighs a flooded entry's many services together as one, and
// a quiet entry's one service as much as all of them. Without it each
// service is a weight of its own (its session's autogroup, sched(7)),
// and 64 services of a flood outweigh the one of another entry 64 to 1.
//
// The groups are made below virtuald's own cgroup, in the hierarchy that
// holds the cpu controller: on cgroup v1 in a group of its own
// (virtuald.PID), on cgroup v2 where virtuald may (Open says why not).
// Every group has the same weight, the kernel's default. A service joins
// its group before anything of its own runs (package enter: virtuald-init
// writes to the group's cgroup.procs, which it is given open, as its
// first step), so that everything it runs and forks is weighed there.
//
// virtuald itself moves into a group of its own beside the entries'
// ("virtuald", as it must on a delegated v2 group): its work for every
// entry (the accept loop, the resolutions) then weighs as one session
// inside the whole, and a quiet entry's boosted group outweighs it as it
// does the flooded entry's group. Left beside the whole, virtuald's work
// for the flood delayed the quiet entry's steps as much as the flood's
// services did (BENCHMARKS.md, "The quiet entry's wait, step by step").
//
// On cgroup v1, where a group may hold one thread of a process, a start
// itself is its entry's too (StartIn): the thread that forks a service
// moves into the entry's group for the fork, so that the clone of the
// service's namespaces and its exec, most of a start's work, weigh as
// the entry's, and the service is born there. Go forks concurrently
// (since Go 1.21 its fork lock is held by every fork at once), so a
// fork slowed in a flooded group holds back no other entry's start.
package cpugroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// MaxGroups bounds the groups kept at once: past it, the groups that no
// process is in any more are removed (an entry gets its group again at
// its next service).
const MaxGroups = 1024

// Groups is one accept mode's cpu groups, one per entry, made as needed.
type Groups struct {
	dir  string // where the entries' groups are made
	made bool   // dir was made by Open (v1, or v2 at the root): Close removes it
	own  string // where the process was before Open moved it to dir (made), for Close
	v2   bool
	// tasks is virtuald's own group's tasks file, open (v1): where a
	// thread goes back after a start in an entry's group (StartIn).
	tasks int

	mu     sync.Mutex
	groups map[string]*group
	held   int // groups held
}

// group is one entry's cgroup: its directory and its cgroup.procs, open,
// and on v1 its tasks file, open, for a thread to join (StartIn).
type group struct {
	path    string
	procs   int
	tasks   int
	held    int       // Holds not yet Released
	boosted time.Time // until when its weight is above the default (Boost)
}

// Open makes the directory of the entries' groups below the calling
// process's own cgroup, in the hierarchy of the cpu controller, and says
// where (for the log); or why it cannot: then services are weighed as
// they would be without it.
func Open() (*Groups, string, error) {
	h, err := findCPU("/proc/self/mountinfo", "/proc/self/cgroup")
	if err != nil {
		return nil, "", err
	}
	if h.v2 {
		return openV2(h.path, h.root)
	}
	return openV1(h.path)
}

// openV1 makes virtuald.PID in own, the process's group in a cgroup v1
// hierarchy with the cpu controller, and moves the process into it
// (moveIn): a v1 group may hold processes and groups at once, so the
// move is for the weights alone.
func openV1(own string) (*Groups, string, error) {
	removeStale(own)
	g := &Groups{dir: own + "/virtuald." + strconv.Itoa(os.Getpid()), made: true, own: own, groups: map[string]*group{}, tasks: -1}
	if err := g.moveIn(); err != nil {
		return nil, "", fmt.Errorf("cgroup v1: %w", err)
	}
	tasks, err := unix.Open(g.dir+"/virtuald/tasks", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		g.Close()
		return nil, "", fmt.Errorf("cgroup v1: %w", err)
	}
	g.tasks = tasks
	return g, "cgroup v1 " + g.dir, nil
}

// moveIn makes dir, which Open makes, and moves the process into its
// group "virtuald" (see the package's comment); Close moves it back.
func (g *Groups) moveIn() error {
	if err := unix.Mkdir(g.dir, 0o755); err != nil && err != unix.EEXIST {
		return fmt.Errorf("making %s: %w", g.dir, err)
	}
	self := g.dir + "/virtuald"
	if err := unix.Mkdir(self, 0o755); err != nil && err != unix.EEXIST {
		g.Close()
		return fmt.Errorf("making %s: %w", self, err)
	}
	if err := os.WriteFile(self+"/cgroup.procs", []byte("0"), 0); err != nil {
		g.Close()
		return fmt.Errorf("moving virtuald into %s: %w", self, err)
	}
	return nil
}

// openV2 makes the groups' place in own, the process's cgroup v2 group.
// A v2 group that gives its children a controller may hold no process
// itself, so: at the root (which may), in virtuald.PID below it; in a
// group that holds virtuald alone (a systemd service with Delegate=yes),
// in that group, after virtuald moves itself into its child "virtuald";
// anywhere else (a group virtuald shares with its super-server), not.
func openV2(own string, root bool) (*Groups, string, error) {
	if !hasWord(own+"/cgroup.controllers", "cpu") {
		return nil, "", fmt.Errorf("cgroup v2 %s has no cpu controller (a systemd unit gets it with Delegate=yes)", own)
	}
	g := &Groups{v2: true, groups: map[string]*group{}, tasks: -1}
	if root {
		// The root may hold processes and give its children controllers.
		if err := os.WriteFile(own+"/cgroup.subtree_control", []byte("+cpu"), 0); err != nil {
			return nil, "", fmt.Errorf("cgroup v2: giving %s's groups the cpu controller: %w", own, err)
		}
		removeStale(own)
		g.dir, g.made, g.own = own+"/virtuald."+strconv.Itoa(os.Getpid()), true, own
		if err := g.moveIn(); err != nil {
			return nil, "", fmt.Errorf("cgroup v2: %w", err)
		}
	} else {
		if err := alone(own); err != nil {
			return nil, "", err
		}
		g.dir = own
		leaf := own + "/virtuald"
		if err := unix.Mkdir(leaf, 0o755); err != nil && err != unix.EEXIST {
			return nil, "", fmt.Errorf("cgroup v2: making %s: %w", leaf, err)
		}
		if err := os.WriteFile(leaf+"/cgroup.procs", []byte("0"), 0); err != nil {
			return nil, "", fmt.Errorf("cgroup v2: moving virtuald into %s: %w", leaf, err)
		}
	}
	if err := os.WriteFile(g.dir+"/cgroup.subtree_control", []byte("+cpu"), 0); err != nil {
		g.Close()
		return nil, "", fmt.Errorf("cgroup v2: giving %s's groups the cpu controller: %w", g.dir, err)
	}
	return g, "cgroup v2 " + g.dir, nil
}

// alone says why virtuald cannot make groups in own, a v2 group that is
// not the root, or nil: it must be the only process there.
func alone(own string) error {
	b, err := os.ReadFile(own + "/cgroup.procs")
	if err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, pid := range strings.Fields(string(b)) {
		if pid != self {
			return fmt.Errorf("cgroup v2 %s holds other processes than virtuald (process %s): a group that gives its children the cpu controller may hold none (run accept mode as a systemd service of its own with Delegate=yes)", own, pid)
		}
	}
	return nil
}

// removeStale removes what an accept mode that was killed left in dir:
// the groups of a virtuald.PID whose process is gone, as far as no
// process is in them, and then the directory.
func removeStale(dir string) {
	stale, _ := filepath.Glob(dir + "/virtuald.*")
	for _, d := range stale {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "virtuald."))
		if err != nil || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		entries, _ := filepath.Glob(d + "/entry-*")
		for _, e := range entries {
			unix.Rmdir(e)
		}
		unix.Rmdir(d + "/virtuald")
		unix.Rmdir(d)
	}
}

// Close removes every group that no process is in any more, and the
// groups' own directory when Open made it (after moving the process back
// to where it was) and it is then empty.
func (g *Groups) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, gr := range g.groups {
		gr.close()
		unix.Rmdir(gr.path)
		delete(g.groups, name)
	}
	if g.tasks >= 0 {
		unix.Close(g.tasks)
		g.tasks = -1
	}
	if g.made {
		os.WriteFile(g.own+"/cgroup.procs", []byte("0"), 0)
		unix.Rmdir(g.dir + "/virtuald")
		unix.Rmdir(g.dir)
	}
}

// Hold returns a descriptor of the cgroup.procs file of the group of
// the entry named name (a conf key), made if need be: a process joins
// the group by writing "0" to it. A service holds its group while it
// runs: the group is not removed until as many Release(name) as
// Hold(name), and the groups held weigh together as many times the
// default as there are (see weighAll).
func (g *Groups) Hold(name string) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if gr := g.groups[name]; gr != nil {
		if gr.held++; gr.held == 1 {
			g.weighAll(1)
		}
		return gr.procs, nil
	}
	if len(g.groups) >= MaxGroups {
		g.prune()
		if len(g.groups) >= MaxGroups {
			return -1, fmt.Errorf("all %d groups in %s hold processes", len(g.groups), g.dir)
		}
	}
	path := g.dir + "/entry-" + strings.ReplaceAll(name, "/", "_")
	if err := unix.Mkdir(path, 0o755); err != nil && err != unix.EEXIST {
		return -1, fmt.Errorf("making %s: %w", path, err)
	}
	gr := &group{path: path, procs: -1, tasks: -1, held: 1}
	var err error
	gr.procs, err = unix.Open(path+"/cgroup.procs", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err == nil && !g.v2 {
		gr.tasks, err = unix.Open(path+"/tasks", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		gr.close()
		unix.Rmdir(path)
		return -1, fmt.Errorf("opening %s: %w", path, err)
	}
	g.groups[name] = gr
	g.weighAll(1)
	return gr.procs, nil
}

func (gr *group) close() {
	for _, fd := range []int{gr.procs, gr.tasks} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// StartIn runs start on the calling goroutine's thread moved, for the
// while, into the group of the entry named name, which the caller holds:
// what the thread does there (the fork of a service: the clone of its
// namespaces, its exec) weighs as the entry's work, and a process it
// starts is born in the group. born says whether it is: on cgroup v1,
// unless the move failed; else the process must join the group itself
// (Hold's cgroup.procs). A thread that cannot go back to virtuald's group
// is not given back to the Go runtime: it ends with its goroutine.
func (g *Groups) StartIn(name string, start func(born bool)) {
	g.mu.Lock()
	gr := g.groups[name]
	held := gr != nil && gr.held > 0
	g.mu.Unlock()
	if !held || gr.tasks < 0 || g.tasks < 0 {
		start(false)
		return
	}
	runtime.LockOSThread()
	tid := []byte(strconv.Itoa(unix.Gettid()))
	if _, err := unix.Write(gr.tasks, tid); err != nil {
		runtime.UnlockOSThread()
		start(false)
		return
	}
	start(true)
	if _, err := unix.Write(g.tasks, tid); err == nil {
		runtime.UnlockOSThread()
	}
}

// weighAll weighs the directory of all the groups, where it has one of
// its own (not in a delegated v2 group, whose weight is its unit's), as
// many times the default as groups are held, and once more for
// virtuald's own, after one more held (change 1) or one fewer (-1): so
// that every entry with services running weighs as much as any session
// of the host does, as it would at the top of the hierarchy, and
// virtuald as much as it did there. g.mu is held.
func (g *Groups) weighAll(change int) {
	g.held += change
	if !g.made {
		return
	}
	file, value := g.weight(float64(g.held + 1))
	os.WriteFile(g.dir+"/"+file, []byte(value), 0)
}

// Release gives back a Hold of name's group.
func (g *Groups) Release(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if gr := g.groups[name]; gr != nil && gr.held > 0 {
		if gr.held--; gr.held == 0 {
			g.weighAll(-1)
		}
	}
}

// The weights of a group: the kernel's default, which every group has
// but while boosted, and the most a boost gives.
func (g *Groups) weight(factor float64) (file, value string) {
	if g.v2 {
		return "cpu.weight", strconv.Itoa(int(min(10000, 100*factor)))
	}
	return "cpu.shares", strconv.Itoa(int(min(262144, 1024*factor)))
}

// Boost weighs name's group factor times the default for d (past any
// boost still running), then the default again: accept mode's favour of
// a quiet entry's start (cmd/virtuald/favour.go).
func (g *Groups) Boost(name string, factor float64, d time.Duration) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	gr := g.groups[name]
	if gr == nil {
		return nil
	}
	until := time.Now().Add(d)
	if until.After(gr.boosted) {
		gr.boosted = until
	}
	file, value := g.weight(factor)
	if err := os.WriteFile(gr.path+"/"+file, []byte(value), 0); err != nil {
		return err
	}
	time.AfterFunc(d, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.groups[name] == gr && !time.Now().Before(gr.boosted) {
			file, value := g.weight(1)
			os.WriteFile(gr.path+"/"+file, []byte(value), 0)
		}
	})
	return nil
}

// prune removes the groups that are not held and that no process is in
// (rmdir refuses those); g.mu is held.
func (g *Groups) prune() {
	for name, gr := range g.groups {
		if gr.held == 0 && unix.Rmdir(gr.path) == nil {
			gr.close()
			delete(g.groups, name)
		}
	}
}

// hierarchy is where the calling process's cpu controller is: the
// directory of its own group, and whether it is cgroup v2.
type hierarchy struct {
	path string
	v2   bool
	root bool // the process is in the hierarchy's root group
}

// findCPU finds the mount of the hierarchy with the cpu controller in
// mountinfo and the process's group in it in cgroupFile (/proc/self/...).
// A v1 hierarchy with the cpu controller comes first: where the
// controller is bound to one, v2 cannot have it.
func findCPU(mountinfo, cgroupFile string) (hierarchy, error) {
	own, err := ownGroups(cgroupFile)
	if err != nil {
		return hierarchy{}, err
	}
	f, err := os.Open(mountinfo)
	if err != nil {
		return hierarchy{}, err
	}
	defer f.Close()
	var v2 *hierarchy
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 4096), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(fields) < sep+4 {
			continue
		}
		root, mnt, fstype, opts := unescape(fields[3]), unescape(fields[4]), fields[sep+1], fields[sep+3]
		switch {
		case fstype == "cgroup" && hasOption(opts, "cpu"):
			if p, ok := below(mnt, root, own["cpu"]); ok {
				return hierarchy{path: p, root: own["cpu"] == "/"}, nil
			}
		case fstype == "cgroup2" && v2 == nil:
			if p, ok := below(mnt, root, own[""]); ok {
				v2 = &hierarchy{path: p, v2: true, root: own[""] == "/"}
			}
		}
	}
	if err := s.Err(); err != nil {
		return hierarchy{}, err
	}
	if v2 == nil {
		return hierarchy{}, errors.New("no cgroup file system with the cpu controller is mounted")
	}
	return *v2, nil
}

// ownGroups reads the process's groups from /proc/self/cgroup: by
// controller for v1 ("cpu" names the group of the hierarchy that holds
// it), "" for v2.
func ownGroups(file string) (map[string]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	own := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			own[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	return own, nil
}

// below is the directory of group in a cgroup mount at mnt whose root is
// root, if the mount shows it.
func below(mnt, root, group string) (string, bool) {
	if group == "" || !strings.HasPrefix(group, "/") {
		return "", false
	}
	rel, ok := strings.CutPrefix(group, root)
	if root == "/" {
		rel, ok = group, true
	}
	if !ok || rel != "" && !strings.HasPrefix(rel, "/") {
		return "", false
	}
	return strings.TrimSuffix(mnt+rel, "/"), true
}

func hasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

func hasWord(file, word string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	for _, w := range strings.Fields(string(b)) {
		if w == word {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
