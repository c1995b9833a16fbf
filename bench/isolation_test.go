package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkIsolation is issue 19's two goals in one interleaved run
// through a real inetd, at 8 entries with the daemon up: virtuald per
// connection with the default isolation against the same with -isolate
// none (the seed's chroot alone), and accept mode with isolation against
// the seed. BenchmarkInetd has the same variants among many; this one
// gives them all the rounds.
func BenchmarkIsolation(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces, chroot")
	}
	group := newCPUGroup(b)
	bins := testbed.Binaries(b)
	seed, hello := buildSeed(b), buildService(b)
	ns, roots, addrs, rootPaths := sites(b, hello)
	logDir := b.TempDir()
	sl := testbed.NewSyslog(b, logDir)
	conf := writeConfs(b, roots, addrs, rootPaths, 8)
	sock := filepath.Join(logDir, "ipwatchd.sock")
	var wrappers []*wrapper
	var lines []string
	add := func(name, wait, line string) *wrapper {
		w := &wrapper{name: name, entries: 8, port: 7000 + len(wrappers)}
		wrappers = append(wrappers, w)
		lines = append(lines, fmt.Sprintf("%d stream tcp %s root %s", w.port, wait, line))
		return w
	}
	add("seed", "nowait", fmt.Sprintf("%s virtuald-seed %s /bin/hello", seed, conf))
	none := add("virtuald isolate=none", "nowait", fmt.Sprintf("%s virtuald -isolate none -socket %s %s /bin/hello", bins["virtuald"], sock, conf))
	isolated := add("virtuald isolated", "nowait", fmt.Sprintf("%s virtuald -socket %s %s /bin/hello", bins["virtuald"], sock, conf))
	add("virtuald -accept isolate=none", "wait", fmt.Sprintf("%s virtuald -accept -isolate none -socket %s %s /bin/hello", bins["virtuald"], sock, conf))
	accept := add("virtuald -accept isolated", "wait", fmt.Sprintf("%s virtuald -accept -socket %s %s /bin/hello", bins["virtuald"], sock, conf))
	daemon := ns.Start(sl, bins["ipwatchd"], "-socket", sock, "-conf", conf, "-bpf", "off", "-log-level", "warn")
	inetd := ns.Start(sl, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf", lines...))
	for _, w := range wrappers {
		ns.WaitListening("tcp", w.port)
	}
	group.add(b, daemon.Process.Pid)
	group.add(b, inetd.Process.Pid)
	settle(b, sock, daemon.Process.Pid)
	warm(b, ns, addrs, wrappers)
	b.ResetTimer()
	rotate(b, ns, addrs, wrappers, group, 40)
	b.StopTimer()
	report(b, wrappers)
	rate := func(w *wrapper) float64 { return float64(w.conns) / w.wall.Seconds() }
	perConn, acceptSeed := rate(isolated)/rate(none), rate(accept)/rate(wrappers[0])
	fmt.Printf("per connection, isolated / isolate=none: %.2f (goal >= 0.85)\naccept mode isolated / seed: %.2f (goal >= 1.0)\n", perConn, acceptSeed)
	b.ReportMetric(perConn, "isolated/none")
	b.ReportMetric(acceptSeed, "accept-isolated/seed")
}
