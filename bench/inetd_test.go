package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
)

// wrapper is one way of serving the service, behind one inetd port.
type wrapper struct {
	name    string
	dynamic bool // its service is the dynamically linked one
	entries int
	port    int
	lat     []time.Duration
	wall    time.Duration
	cpuNs   int64
	conns   int
}

// cpuGroup is a cgroup (v1 cpuacct) holding inetd, everything it starts
// and ipwatchd, so that each variant's CPU per connection counts the
// wrapper, the service and the daemon's share alike.
type cpuGroup string

// newCPUGroup makes the cgroup. Call it before starting anything that
// will join it: cleanups run last-in first-out, and a cgroup can only be
// removed once its processes are gone.
func newCPUGroup(b *testing.B) cpuGroup {
	dir, err := os.MkdirTemp("/sys/fs/cgroup/cpuacct", "virtuald-bench-")
	if err != nil {
		b.Fatalf("a cpuacct cgroup is needed to measure CPU per connection: %v", err)
	}
	b.Cleanup(func() { os.Remove(dir) })
	return cpuGroup(dir)
}

func (g cpuGroup) add(b *testing.B, pid int) {
	if err := os.WriteFile(filepath.Join(string(g), "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		b.Fatal(err)
	}
}

func (g cpuGroup) usage() int64 {
	data, _ := os.ReadFile(filepath.Join(string(g), "cpuacct.usage"))
	n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n
}

// writeConfs writes conf files of n entries whose last eight lines map the
// benchmark's addresses to their roots (the seed's and a file scan's worst
// case), in the seed's format so that both programs read the same file.
func writeConfs(b *testing.B, roots *testbed.Roots, addrs, rootPaths []string, n int) string {
	var sb strings.Builder
	for i := 0; i < n-len(addrs); i++ {
		fmt.Fprintf(&sb, "10.%d.%d.%d /virtual/filler%d\n", i>>16&255, i>>8&255, i&255, i)
	}
	for i, a := range addrs {
		fmt.Fprintf(&sb, "%s %s\n", a, rootPaths[i])
	}
	p := filepath.Join(roots.Dir, fmt.Sprintf("conf.%d", n))
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// sizes are the conf files' sizes in entries: the addresses served are on
// the last lines.
var sizes = []int{8, 5000, 50000}

// BenchmarkInetd serves connections through a real inetd in a private
// network namespace, side by side in one run: the service with no
// wrapper, a Go program that only execs it (the floor of any Go wrapper),
// the seed's C program, virtuald per connection with ipwatchd up
// and down (wedged: BenchmarkInetdWedged), and virtuald in accept mode (inetd "wait"), each at 8, 5,000
// and 50,000 conf entries, isolated (the default); and, at 8 entries,
// virtuald in both modes with -isolate none, the seed's chroot alone (and
// at 50,000, without the daemon: the file path on the seed's footing).
// Each iteration makes 40 connections
// (2 at a time, the machine's cores) to every variant in rotating order.
// The service is a static C program that writes one line, as cheap as a
// service gets, so that what each wrapper adds shows; at 8 entries the
// same program linked dynamically (as Debian's services are), with its
// libraries and the host's ld.so.cache in every root, runs with no
// wrapper, the Go floor, the seed and virtuald -isolate none, daemon up
// and down, so that what a wrapper does about shared libraries shows too.
func BenchmarkInetd(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces, chroot")
	}
	t := b
	group := newCPUGroup(b)
	bins := testbed.Binaries(t)
	seed, hello, helloDyn := buildSeed(b), buildService(b), buildDynamicService(b)
	floorBin, err := testbed.Build(b.TempDir(), "./bench/floor")
	if err != nil {
		b.Fatal(err)
	}
	floor := floorBin["floor"]
	testbed.Must(b, os.Chmod(filepath.Dir(floor), 0o755))
	ns, roots, addrs, rootPaths := sites(b, hello)
	for _, r := range rootPaths {
		testbed.CopyDynamic(b, r, helloDyn, "/bin/hello-dyn")
	}
	logDir := b.TempDir()
	sl := testbed.NewSyslog(t, logDir)
	confs := map[int]string{}
	for _, n := range sizes {
		confs[n] = writeConfs(b, roots, addrs, rootPaths, n)
	}
	sock := filepath.Join(logDir, "ipwatchd.sock")

	var wrappers []*wrapper
	var lines []string
	add := func(name string, entries int, wait, line string) {
		w := &wrapper{name: name, entries: entries, port: 7000 + len(wrappers)}
		wrappers = append(wrappers, w)
		lines = append(lines, fmt.Sprintf("%d stream tcp %s root %s", w.port, wait, line))
	}
	add("no wrapper", 0, "nowait", hello+" hello")
	add("Go floor", 0, "nowait", floor+" floor "+hello)
	for _, n := range sizes {
		add("seed", n, "nowait", fmt.Sprintf("%s virtuald-seed %s /bin/hello", seed, confs[n]))
		add("virtuald, daemon up", n, "nowait", fmt.Sprintf("%s virtuald -socket %s %s /bin/hello", bins["virtuald"], sock, confs[n]))
		add("virtuald, daemon down", n, "nowait", fmt.Sprintf("%s virtuald -socket %s %s /bin/hello", bins["virtuald"], sock+".absent", confs[n]))
		add("virtuald -accept, daemon up", n, "wait", fmt.Sprintf("%s virtuald -accept -socket %s %s /bin/hello", bins["virtuald"], sock, confs[n]))
	}
	// Isolation (the default above) against the seed's chroot alone, the
	// same virtuald with -isolate none.
	add("virtuald isolate=none, daemon up", sizes[0], "nowait", fmt.Sprintf("%s virtuald -isolate none -socket %s %s /bin/hello", bins["virtuald"], sock, confs[sizes[0]]))
	// The file path against the seed's on the same footing (a chroot
	// alone), where the file is largest (issue 22, item 3).
	add("virtuald isolate=none, daemon down", sizes[2], "nowait", fmt.Sprintf("%s virtuald -isolate none -socket %s %s /bin/hello", bins["virtuald"], sock+".absent", confs[sizes[2]]))
	add("virtuald -accept isolate=none, daemon up", sizes[0], "wait", fmt.Sprintf("%s virtuald -accept -isolate none -socket %s %s /bin/hello", bins["virtuald"], sock, confs[sizes[0]]))
	// The dynamically linked service, inside the roots for all but no
	// wrapper and the floor, which run it from the host's /bin.
	first := len(wrappers)
	add("no wrapper", 0, "nowait", helloDyn+" hello")
	add("Go floor", 0, "nowait", floor+" floor "+helloDyn)
	add("seed", sizes[0], "nowait", fmt.Sprintf("%s virtuald-seed %s /bin/hello-dyn", seed, confs[sizes[0]]))
	add("virtuald isolate=none, daemon up", sizes[0], "nowait", fmt.Sprintf("%s virtuald -isolate none -socket %s %s /bin/hello-dyn", bins["virtuald"], sock, confs[sizes[0]]))
	add("virtuald isolate=none, daemon down", sizes[0], "nowait", fmt.Sprintf("%s virtuald -isolate none -socket %s %s /bin/hello-dyn", bins["virtuald"], sock+".absent", confs[sizes[0]]))
	for _, w := range wrappers[first:] {
		w.dynamic = true
	}
	testbed.MountBPFFS(b)
	pinDir := "/sys/fs/bpf/" + ns.Name // counters on, as by default, in this namespace's own pins
	b.Cleanup(func() { bpf.Remove(pinDir) })
	// The daemon reads the inetd.conf that starts the services, as it
	// reads /etc/inetd.conf, and checks their programs in their roots.
	inetdConf := roots.WriteConf("inetd.conf", lines...)
	daemon := ns.Start(sl, bins["ipwatchd"], "-socket", sock, "-conf", confs[sizes[0]], "-conf", confs[sizes[1]], "-conf", confs[sizes[2]],
		"-bpf", "on", "-bpf-pin-dir", pinDir, "-log-level", "warn", "-inetd-conf", inetdConf)
	inetd := ns.Start(sl, "inetd", "-d", "-R", "1000000", inetdConf)
	for _, w := range wrappers {
		ns.WaitListening("tcp", w.port)
	}
	group.add(b, daemon.Process.Pid)
	group.add(b, inetd.Process.Pid)
	// The daemon's start-up work (its validator's first pass over every
	// root) is not what the benchmark measures: it is measured apart, as
	// is a reload's.
	startup := settle(b, sock, daemon.Process.Pid)
	if _, err := (admin.Client{Socket: sock}).Reload(); err != nil {
		b.Fatal(err)
	}
	reload := settle(b, sock, daemon.Process.Pid) - startup
	fmt.Printf("\nipwatchd's CPU with %d conf files of %v entries: %v from start to idle, %v for a reload to idle\n",
		len(sizes), sizes, startup, reload)
	b.ReportMetric(startup.Seconds()*1000, "daemon-startup-cpu-ms")
	b.ReportMetric(reload.Seconds()*1000, "daemon-reload-cpu-ms")
	warm(b, ns, addrs, wrappers)

	b.ResetTimer()
	rotate(b, ns, addrs, wrappers, group, 40)
	b.StopTimer()
	report(b, wrappers)
}

// warm asks every wrapper once, warming the page cache and the daemon.
func warm(b *testing.B, ns *testbed.NetNS, addrs []string, wrappers []*wrapper) {
	for _, w := range wrappers {
		if got, err := ns.Ask(addrs[0] + ":" + strconv.Itoa(w.port)); err != nil || !strings.HasPrefix(got, "root=") {
			b.Fatalf("%s: %q %v", w.name, got, err)
		}
	}
}

// rotate makes perRound connections (2 at a time, the machine's cores) to
// every wrapper in turn, b.N times, starting each round one wrapper
// further, so that no variant always follows the same one.
func rotate(b *testing.B, ns *testbed.NetNS, addrs []string, wrappers []*wrapper, group cpuGroup, perRound int) {
	const parallel = 2
	for i := 0; i < b.N; i++ {
		for j := range wrappers {
			w := wrappers[(i+j)%len(wrappers)]
			cpu0, t0 := group.usage(), time.Now()
			var mu sync.Mutex
			var wg sync.WaitGroup
			next := make(chan int, perRound)
			for k := 0; k < perRound; k++ {
				next <- k
			}
			close(next)
			for p := 0; p < parallel; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := range next {
						a := addrs[k%len(addrs)]
						c0 := time.Now()
						got, err := ns.Ask(a + ":" + strconv.Itoa(w.port))
						d := time.Since(c0)
						if err != nil || !strings.HasPrefix(got, "root=") {
							b.Errorf("%s %s: %q %v", w.name, a, got, err)
						}
						mu.Lock()
						w.lat = append(w.lat, d)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			w.wall += time.Since(t0)
			w.cpuNs += group.usage() - cpu0
			w.conns += perRound
		}
	}
}

// sites makes a namespace with the benchmarks' 8 addresses on its lo and
// a root for each holding the service.
func sites(b *testing.B, service string) (ns *testbed.NetNS, roots *testbed.Roots, addrs, rootPaths []string) {
	ns, roots = testbed.NewNetNS(b), testbed.NewRoots(b)
	for i := 1; i <= 8; i++ {
		a := fmt.Sprintf("192.0.2.%d", i)
		ns.AddAddr(a)
		addrs = append(addrs, a)
		rootPaths = append(rootPaths, roots.Root("site-"+strconv.Itoa(i), service))
	}
	return ns, roots, addrs, rootPaths
}

func report(b *testing.B, ws []*wrapper) {
	// The baselines of each service: the seed's by conf size, no
	// wrapper's and the floor's.
	type base struct {
		dynamic bool
		entries int
	}
	rate := func(w *wrapper) float64 { return float64(w.conns) / w.wall.Seconds() }
	seed, bare, floor := map[base]float64{}, map[bool]float64{}, map[bool]float64{}
	for _, w := range ws {
		switch w.name {
		case "seed":
			seed[base{w.dynamic, w.entries}] = rate(w)
		case "no wrapper":
			bare[w.dynamic] = rate(w)
		case "Go floor":
			floor[w.dynamic] = rate(w)
		}
	}
	ratio := func(r, to float64) string {
		if to == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", r/to)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| variant | service | entries | conn/s | p50 ms | p99 ms | CPU ms/conn | rate / seed | rate / Go floor | rate / no wrapper |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, w := range ws {
		slices.Sort(w.lat)
		r := rate(w)
		entries := "-"
		if w.entries > 0 {
			entries = strconv.Itoa(w.entries)
		}
		linked := "static"
		if w.dynamic {
			linked = "dynamic"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %.0f | %.2f | %.2f | %.2f | %s | %s | %s |\n", w.name, linked, entries, r,
			ms(w.lat[len(w.lat)/2]), ms(w.lat[len(w.lat)*99/100]), float64(w.cpuNs)/float64(w.conns)/1e6,
			ratio(r, seed[base{w.dynamic, w.entries}]), ratio(r, floor[w.dynamic]), ratio(r, bare[w.dynamic]))
		key := strings.NewReplacer(", ", "-", " ", "-", "-accept", "accept", "=", "-").Replace(w.name)
		if w.entries > 0 {
			key += "-" + entries
		}
		if w.dynamic {
			key += "-dynamic"
		}
		b.ReportMetric(r, key+"-conn/s")
	}
	fmt.Print(sb.String())
}

// answers reports whether a daemon answers at sock.
func answers(sock string) bool {
	_, err := admin.Client{Socket: sock}.Status(admin.StatusQuery{})
	return err == nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// buildService builds the benchmark's service, a static C program like
// the classic inetd services (a Go service's own start-up would dwarf what
// the wrappers cost).
func buildService(b *testing.B) string {
	hello := filepath.Join(b.TempDir(), "hello")
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", hello, "service/hello.c").CombinedOutput(); err != nil {
		b.Fatalf("building the service (gcc, and libc6-dev for -static): %v\n%s", err, out)
	}
	testbed.Must(b, os.Chmod(filepath.Dir(hello), 0o755))
	return hello
}

// buildDynamicService builds the same service linked dynamically, as
// Debian's services are.
func buildDynamicService(b *testing.B) string {
	hello := filepath.Join(b.TempDir(), "hello-dyn")
	if out, err := exec.Command("gcc", "-O2", "-o", hello, "service/hello.c").CombinedOutput(); err != nil {
		b.Fatalf("building the dynamic service: %v\n%s", err, out)
	}
	testbed.Must(b, os.Chmod(filepath.Dir(hello), 0o755))
	return hello
}

func buildSeed(b *testing.B) string {
	seed := filepath.Join(b.TempDir(), "virtuald-seed")
	if out, err := exec.Command("gcc", "-std=gnu89", "-w", "-O2", "-o", seed, "../../shared/seed/virtuald-seed.c").CombinedOutput(); err != nil {
		b.Fatalf("building the seed from ../shared/seed (the project's sibling folder): %v\n%s", err, out)
	}
	testbed.Must(b, os.Chmod(filepath.Dir(seed), 0o755))
	return seed
}
