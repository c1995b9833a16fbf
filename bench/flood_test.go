package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkFlood is issue 23's noisy neighbour: virtuald in accept mode
// (inetd "wait") serves two addresses of one conf file; one client
// measures address 2 alone, then while 64 clients open connections to
// address 1 as fast as they can, then alone again. It reports address 2's
// rate during the flood against its rate alone (share), the connections
// that failed, and the flood's own rate:
//
//   - no-limits: the entries have no limits (goal: share >= 0.5);
//   - no-limits-service-share: the same with -cpu-share service, each
//     service weighed as one (its autogroup) instead of each entry (a
//     cpu cgroup each), with the favour of a quiet entry's service;
//   - no-limits-unfavoured: that without the favour either;
//   - no-limits-4: the same with 4 entries busy: addresses 3 and 4 have
//     a client of their own like address 2's in every phase, so that the
//     share says what the flood takes from one of 3 quiet entries;
//   - limits: every entry has rate=50/s max=16 (goal: share >= 0.8; the
//     client of address 2 is then held to 50 a second by its own rate=,
//     and the connections its entry refuses are counted apart);
//   - refused-flood: the same, but the flooded entry has rate=1/m, so
//     that the flood is refusals only (what they cost the other entry,
//     without the flood's own starts);
//   - no-limits-go-service, limits-go-service: no-limits and limits with
//     a service as costly to start as a Go program (the tests' whoami,
//     about 7 ms of CPU here) instead of the small C one;
//   - no-limits-remote-flood, no-limits-go-service-remote-flood: the
//     same two with the flood's 64 clients in a cpu cgroup of the least
//     weight, so that they run on what the server leaves idle, as remote
//     clients would take nothing from this host (the measuring client as
//     in every variant; the others keep the flood's clients at a
//     session's weight, side by side);
//   - refusal-cost: what a connection refused for a limit costs accept
//     mode (virtuald and its services, in a cpuacct cgroup) against one
//     served, 2 clients at a time (the machine's cores);
//   - refusal-cost-per-connection: the same with one virtuald per
//     connection (inetd nowait), which refuses for the entry's limits
//     itself (package slots) when the kernel does not (no daemon here):
//     what is left is inetd's fork and virtuald's start.
//
// The clients are processes of their own in the namespace (bench/client),
// the measuring one and the flood's, as remote clients would be.
func BenchmarkFlood(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces, chroot")
	}
	b.Run("no-limits", func(b *testing.B) { benchFlood(b, floodCase{busy: 2}) })
	// Each service weighed as one, with and without the favour of a
	// quiet entry's service (favour.go).
	b.Run("no-limits-service-share", func(b *testing.B) { benchFlood(b, floodCase{busy: 2, flags: "-cpu-share service"}) })
	b.Run("no-limits-unfavoured", func(b *testing.B) { benchFlood(b, floodCase{busy: 2, flags: "-cpu-share service -favour 0"}) })
	b.Run("no-limits-4", func(b *testing.B) { benchFlood(b, floodCase{busy: 4}) })
	b.Run("limits", func(b *testing.B) {
		benchFlood(b, floodCase{flooded: "rate=50/s max=16", others: "rate=50/s max=16", busy: 2})
	})
	b.Run("refused-flood", func(b *testing.B) { benchFlood(b, floodCase{flooded: "rate=1/m", others: "rate=50/s max=16", busy: 2}) })
	// The same two with a service as costly to start as a Go program
	// (the tests' whoami), where the CPU the services take decides.
	b.Run("no-limits-go-service", func(b *testing.B) { benchFlood(b, floodCase{busy: 2, service: goService}) })
	b.Run("no-limits-go-service-service-share", func(b *testing.B) {
		benchFlood(b, floodCase{busy: 2, flags: "-cpu-share service", service: goService})
	})
	b.Run("limits-go-service", func(b *testing.B) {
		benchFlood(b, floodCase{flooded: "rate=50/s max=16", others: "rate=50/s max=16", busy: 2, service: goService})
	})
	// The flood's clients as remote ones would weigh on this host: as
	// little as the kernel allows (no-limits and no-limits-go-service
	// keep them at a session's weight, side by side).
	b.Run("no-limits-remote-flood", func(b *testing.B) { benchFlood(b, floodCase{busy: 2, remote: true}) })
	b.Run("no-limits-go-service-remote-flood", func(b *testing.B) {
		benchFlood(b, floodCase{busy: 2, service: goService, remote: true})
	})
	b.Run("refusal-cost", func(b *testing.B) { benchRefusalCost(b, false) })
	b.Run("refusal-cost-per-connection", func(b *testing.B) { benchRefusalCost(b, true) })
}

// floodSite is virtuald -accept with flags (or, perConnection, one
// virtuald per connection) under inetd on port 7100 for the eight addresses of sites,
// address i with options opts(i), inetd in a cpuacct cgroup.
type floodSite struct {
	ns     *testbed.NetNS
	addrs  []string
	group  cpuGroup
	client string // bench/client
}

func newFloodSite(b *testing.B, perConnection bool, flags, service string, opts func(i int) string) *floodSite {
	group := newCPUGroup(b)
	bins := testbed.Binaries(b)
	client, err := testbed.Build(b.TempDir(), "./bench/client")
	if err != nil {
		b.Fatal(err)
	}
	hello := buildService(b)
	if service != "" {
		built, err := testbed.Build(b.TempDir(), service)
		if err != nil {
			b.Fatal(err)
		}
		hello = built[filepath.Base(service)]
	}
	prog := "/bin/" + filepath.Base(hello)
	ns, roots, addrs, rootPaths := sites(b, hello)
	var lines []string
	for i, a := range addrs {
		lines = append(lines, strings.TrimSpace(a+" "+rootPaths[i]+" "+opts(i)))
	}
	conf := roots.WriteConf("conf.flood", lines...)
	sl := testbed.NewSyslog(b, b.TempDir())
	line := fmt.Sprintf("7100 stream tcp wait root %s virtuald -accept %s -socket /nonexistent %s %s", bins["virtuald"], flags, conf, prog)
	if perConnection {
		line = fmt.Sprintf("7100 stream tcp nowait root %s virtuald -socket /nonexistent %s %s", bins["virtuald"], conf, prog)
	}
	inetd := ns.Start(sl, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf", line))
	group.add(b, inetd.Process.Pid)
	ns.WaitListening("tcp", 7100)
	return &floodSite{ns: ns, addrs: addrs, group: group, client: client["client"]}
}

// counts are the outcomes of a client's connections, and the CPU the
// client took.
type counts struct {
	served, refused, failed int64
	cpu                     time.Duration
}

// run runs bench/client with n connections at a time to address i (of
// sites, port 7100) for d and returns its counts; group is a cpu cgroup
// to run it in, or "".
func (f *floodSite) run(n, i int, d time.Duration, group string) counts {
	cmd := f.ns.Exec(f.client, "-c", strconv.Itoa(n), f.addrs[i]+":7100", d.String(), fmt.Sprintf("root=site-%d", i+1))
	// Each client a session of its own, so that the measuring one does
	// not share its scheduling group (autogroup) with the flood's, as
	// remote clients share nothing on this host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	err := cmd.Start()
	if err == nil && group != "" {
		// Moved as soon as it started: nsenter still has to enter the
		// namespace and execute the client in its place before the
		// first connection (at worst the first few are made at a
		// session's weight).
		err = os.WriteFile(filepath.Join(group, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	if err == nil {
		err = cmd.Wait()
	}
	out := stdout.String()
	var c counts
	if _, err2 := fmt.Sscan(out, &c.served, &c.refused, &c.failed); err != nil || err2 != nil {
		return counts{failed: -1} // shows in the table
	}
	c.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() // nsenter executes the client in its place
	return c
}

// goService is a service as costly to start as a Go program.
const goService = "./internal/testbed/whoami"

// floodCase is one variant of BenchmarkFlood.
type floodCase struct {
	flooded, others string // the options of address 1's entry, and of every other's
	busy            int    // the addresses 3 to busy each have a client like address 2's
	flags           string // accept mode's
	service         string // the package of the service ("" for the C one)
	// remote puts the flood's clients in a cpu cgroup of the least
	// weight, as remote clients would take nothing from this host: they
	// run on what the server leaves idle, and the measuring client is
	// left as it is.
	remote bool
}

// benchFlood floods address 1 and measures address 2 as c says.
func benchFlood(b *testing.B, c floodCase) {
	flooded, others, busy := c.flooded, c.others, c.busy
	f := newFloodSite(b, false, c.flags, c.service, func(i int) string {
		if i == 0 {
			return flooded
		}
		return others
	})
	var light string
	if c.remote {
		light = newLightGroup(b)
	}
	limits := flooded + "; " + others
	const phase, flooders = 4 * time.Second, 64
	rate := func(c counts) float64 { return float64(c.served) / phase.Seconds() }
	var sb strings.Builder
	// measure runs address 2's client for a phase, beside those of the
	// addresses 3 to busy, whose failed connections it adds to its own.
	measure := func() counts {
		others := make([]counts, busy)
		var wg sync.WaitGroup
		for i := 2; i < busy; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); others[i] = f.run(1, i, phase, "") }()
		}
		c := f.run(1, 1, phase, "")
		wg.Wait()
		for _, o := range others {
			c.failed += o.failed
		}
		return c
	}
	fmt.Fprintf(&sb, "\nlimits %q, %d entries busy\n| round | address 2 alone (conn/s) | during the flood | share | failed during (busy entries) | refused by its own limits (alone, during) | flood served/s (refused, failed) | CPU during: server, flood's clients (cores) | after |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n", limits, busy)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		alone := measure()
		var flood counts
		var wg sync.WaitGroup
		wg.Add(1)
		before := f.group.usage()
		go func() { defer wg.Done(); flood = f.run(flooders, 0, phase, light) }()
		during := measure()
		wg.Wait()
		server := float64(f.group.usage()-before) / 1e9 / phase.Seconds()
		after := measure()
		share := rate(during) / rate(alone)
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.2f | %d | %d, %d | %.0f (%d, %d) | %.2f, %.2f | %.0f |\n", i+1, rate(alone), rate(during), share,
			during.failed, alone.refused, during.refused, rate(flood), flood.refused, flood.failed, server, flood.cpu.Seconds()/phase.Seconds(), rate(after))
		b.ReportMetric(share, "share")
	}
	b.StopTimer()
	fmt.Print(sb.String())
}

// benchRefusalCost measures accept mode's (or, perConnection, inetd
// nowait's) CPU for a connection refused for a limit (address 1,
// rate=1/m: every connection after the first is refused) against one
// served (address 2, no limit): 2 clients at a time for 3 s each way,
// CPU from the cgroup of inetd, virtuald and the services (the clients
// are not in it).
func benchRefusalCost(b *testing.B, perConnection bool) {
	f := newFloodSite(b, perConnection, "", "", func(i int) string {
		if i == 0 {
			return "rate=1/m"
		}
		return ""
	})
	const d = 3 * time.Second
	run := func(i int) (perSecond, cpuMicros float64, c counts) {
		before := f.group.usage()
		c = f.run(2, i, d, "")
		n := c.served + c.refused
		return float64(n) / d.Seconds(), float64(f.group.usage()-before) / 1e3 / float64(max(n, 1)), c
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| round | served conn/s | CPU µs/served | refused conn/s | CPU µs/refused | cost refused / served | failed |\n|---|---:|---:|---:|---:|---:|---:|\n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sRate, sCPU, sc := run(1)
		rRate, rCPU, rc := run(0)
		if sc.refused > 0 || rc.served > 1 {
			b.Fatalf("served %d refused %d on the unlimited address; served %d on the limited one", sc.served, sc.refused, rc.served)
		}
		fmt.Fprintf(&sb, "| %d | %.0f | %.0f | %.0f | %.1f | %.3f | %d |\n", i+1, sRate, sCPU, rRate, rCPU, rCPU/sCPU, sc.failed+rc.failed)
		b.ReportMetric(rCPU/sCPU, "cost-ratio")
	}
	b.StopTimer()
	fmt.Print(sb.String())
}

// newLightGroup makes a cpu cgroup of the least weight (cgroup v1's
// cpu.shares 2), for clients that stand for remote ones.
func newLightGroup(b *testing.B) string {
	dir, err := os.MkdirTemp("/sys/fs/cgroup/cpu", "virtuald-bench-remote-")
	if err != nil {
		b.Fatalf("a cpu cgroup is needed for remote-like clients: %v", err)
	}
	b.Cleanup(func() { os.Remove(dir) })
	if err := os.WriteFile(filepath.Join(dir, "cpu.shares"), []byte("2"), 0); err != nil {
		b.Fatal(err)
	}
	return dir
}
