// Package bench measures virtuald as a whole process, side by side with
// the seed's C program and with no wrapper at all, interleaved in one run
// so that the machine's noise falls on every variant alike.
package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// TestMain gives the benchmarks a /dev/log, as a real host has (the seed
// logs four messages per connection, virtuald one): as root it re-runs
// itself in a private mount namespace whose /dev holds a syslog socket
// that this process drains.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv("VIRTUALD_BENCH_DEV") == "" {
		if _, err := os.Stat("/dev/log"); err != nil {
			script := `mount -t tmpfs -o mode=0755 bench-dev /dev && mknod -m 666 /dev/null c 1 3 && exec "$@"`
			cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", os.Args[0]}, os.Args[1:]...)...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.Env = append(os.Environ(), "VIRTUALD_BENCH_DEV=1")
			if err := cmd.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					os.Exit(ee.ExitCode())
				}
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	if os.Getenv("VIRTUALD_BENCH_DEV") == "1" {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "/dev/log", Net: "unixgram"})
		if err == nil {
			go func() {
				buf := make([]byte, 8192)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}
	os.Exit(testbed.RunMain(m))
}

type variant struct {
	name   string
	argv   []string
	wall   []time.Duration
	cpu    []time.Duration
	faults int64 // minor page faults, summed
}

// runOnce starts argv with stdin the given socket, waits for it, and
// returns its wall time, its CPU time (user+system) and its minor page
// faults (both from wait4).
func runOnce(b *testing.B, argv []string, stdin, devnull *os.File) (time.Duration, time.Duration, int64) {
	start := time.Now()
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Env:   []string{"PATH=/usr/bin:/bin"},
		Files: []uintptr{stdin.Fd(), devnull.Fd(), devnull.Fd()},
	})
	if err != nil {
		b.Fatalf("%s: %v", argv[0], err)
	}
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	if _, err := syscall.Wait4(pid, &ws, 0, &ru); err != nil {
		b.Fatal(err)
	}
	wall := time.Since(start)
	if ws.ExitStatus() != 0 {
		b.Fatalf("%s exited %d", strings.Join(argv, " "), ws.ExitStatus())
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return wall, cpu, ru.Minflt
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// writeConf writes a conf of n entries whose last line maps 127.0.0.1 to
// "/", so that a lookup reads the whole file.
func writeConf(b *testing.B, dir string, n int) string {
	var sb strings.Builder
	for i := 0; i < n-1; i++ {
		fmt.Fprintf(&sb, "10.%d.%d.%d /virtual/site%d\n", i>>16&255, i>>8&255, i&255, i)
	}
	sb.WriteString("127.0.0.1 /\n")
	p := filepath.Join(dir, fmt.Sprintf("conf.%d", n))
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkStartup runs, per iteration, one connection's worth of each
// variant, in rotating order: the service alone (/bin/true), a no-op Go
// program, the Go floor (a static Go program that only executes the
// service), the seed's C program, and virtuald with conf files of 1, 1,000
// and 10,000 entries. Every wrapper resolves 127.0.0.1 to "/", chroots
// there and executes /bin/true. It reports each variant's median wall time
// and mean CPU time and page faults per connection, and virtuald's
// ratios to the seed and to the floor.
func BenchmarkStartup(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the wrappers chroot")
	}
	dir := b.TempDir()
	bins, err := testbed.Build(dir, "./cmd/virtuald", "./bench/noop", "./bench/floor")
	if err != nil {
		b.Fatal(err)
	}
	seed := buildSeed(b)
	trueBin, _ := exec.LookPath("true")
	conf1 := writeConf(b, dir, 1)
	variants := []*variant{
		{name: "service-alone", argv: []string{trueBin}},
		{name: "noop-go", argv: []string{bins["noop"]}},
		{name: "go-floor", argv: []string{bins["floor"], trueBin}},
		{name: "seed", argv: []string{seed, conf1, trueBin}},
		{name: "virtuald", argv: []string{bins["virtuald"], conf1, trueBin}},
		{name: "virtuald-1k", argv: []string{bins["virtuald"], writeConf(b, dir, 1000), trueBin}},
		{name: "virtuald-10k", argv: []string{bins["virtuald"], writeConf(b, dir, 10000), trueBin}},
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	sock, _ := server.(*net.TCPConn).File()
	server.Close()
	defer sock.Close()
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range variants {
			v := variants[(i+j)%len(variants)]
			w, c, f := runOnce(b, v.argv, sock, devnull)
			v.wall = append(v.wall, w)
			v.cpu = append(v.cpu, c)
			v.faults += f
		}
	}
	b.StopTimer()
	byName := map[string]*variant{}
	for _, v := range variants {
		byName[v.name] = v
		b.ReportMetric(float64(median(v.wall).Microseconds()), v.name+"-µs")
		b.ReportMetric(float64(mean(v.cpu).Microseconds()), v.name+"-cpu-µs")
		b.ReportMetric(float64(v.faults)/float64(len(v.wall)), v.name+"-faults")
	}
	seedWall := float64(median(byName["seed"].wall))
	b.ReportMetric(float64(median(byName["virtuald"].wall))/seedWall, "virtuald/seed")
	b.ReportMetric(float64(median(byName["virtuald-10k"].wall))/seedWall, "virtuald-10k/seed")
	b.ReportMetric(float64(median(byName["noop-go"].wall))/seedWall, "noop-go/seed")
	b.ReportMetric(float64(median(byName["go-floor"].wall))/float64(median(byName["virtuald"].wall)), "virtuald-of-floor")
}
