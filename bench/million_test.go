package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
	"golang.org/x/sys/unix"
)

// BenchmarkMillion runs ipwatchd on a conf file of 1,000,000 entries and
// measures what an operator meets: the time from start to the first
// answer, its memory (peak RSS) while and after status is asked for,
// `ipwatchctl status` and `ipwatchctl resolve`, and virtuald's answers
// while `status -json -all` streams every entry.
func BenchmarkMillion(b *testing.B) {
	bins := testbed.Binaries(b)
	dir := b.TempDir()
	var sb strings.Builder
	for i := 0; i < 1_000_000-1; i++ {
		fmt.Fprintf(&sb, "10.%d.%d.%d /\n", i>>16&255, i>>8&255, i&255)
	}
	sb.WriteString("127.0.0.1 /\n")
	conf := filepath.Join(dir, "conf")
	if err := os.WriteFile(conf, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	sb = strings.Builder{}
	sock := filepath.Join(dir, "run", "ipwatchd.sock")
	question := resolveQuestion(b, conf, "127.0.0.1")
	daemon := ipc.Client{Socket: sock, Timeout: 5 * time.Second}
	ask := func() (time.Duration, bool) {
		t0 := time.Now()
		_, err := daemon.Resolve(question)
		return time.Since(t0), err == nil
	}
	for i := 0; i < b.N; i++ {
		cmd, firstAnswer := startIpwatchd(b, bins["ipwatchd"], sock, conf, question)
		rssAfterLoad := rss(cmd.Process.Pid, "VmRSS")

		ctl := func(args ...string) (time.Duration, int) {
			t0 := time.Now()
			out, err := exec.Command(bins["ipwatchctl"], append([]string{"-socket", sock}, args...)...).Output()
			if err != nil {
				b.Fatalf("ipwatchctl %v: %v", args, err)
			}
			return time.Since(t0), len(out)
		}
		statusTook, statusSize := ctl("status")
		resolveTook, _ := ctl("resolve", "127.0.0.1")

		// virtuald's questions while every entry is streamed.
		var lat []time.Duration
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d, ok := ask(); ok {
					lat = append(lat, d)
				}
				time.Sleep(time.Millisecond)
			}
		}()
		var all bytes.Buffer
		t0 := time.Now()
		c := exec.Command(bins["ipwatchctl"], "-socket", sock, "status", "-json", "-all")
		c.Stdout = &all
		if err := c.Run(); err != nil {
			b.Fatal(err)
		}
		allTook := time.Since(t0)
		close(stop)
		wg.Wait()
		var head struct {
			Confs []struct {
				Entries []json.RawMessage `json:"entries"`
			} `json:"confs"`
		}
		if err := json.Unmarshal(all.Bytes(), &head); err != nil || len(head.Confs[0].Entries) != 1_000_000 {
			b.Fatalf("status -json -all: %v, %d entries", err, len(head.Confs[0].Entries))
		}
		peak := rss(cmd.Process.Pid, "VmHWM")
		stopIpwatchd(cmd)

		slices.Sort(lat)
		b.ReportMetric(float64(firstAnswer.Milliseconds()), "first-answer-ms")
		b.ReportMetric(rssAfterLoad, "rss-after-load-MiB")
		b.ReportMetric(peak, "peak-rss-MiB")
		b.ReportMetric(float64(statusTook.Milliseconds()), "status-ms")
		b.ReportMetric(float64(statusSize), "status-bytes")
		b.ReportMetric(float64(resolveTook.Milliseconds()), "resolve-ms")
		b.ReportMetric(allTook.Seconds(), "status-all-s")
		b.ReportMetric(float64(all.Len())/(1<<20), "status-all-MiB")
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "answer-during-all-p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "answer-during-all-p99-µs")
		}
	}
}

// rss reads a memory figure of a process (VmRSS, VmHWM) in MiB.
func rss(pid int, field string) float64 {
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// resolveQuestion is virtuald's question about addr in the conf file, once
// the file's timestamps are past their granularity (so that the daemon
// vouches for its first read at once).
func resolveQuestion(b *testing.B, conf, addr string) ipc.ResolveRequest {
	ipwatchdtest.Settle(b, conf)
	var st unix.Stat_t
	if err := unix.Stat(conf, &st); err != nil {
		b.Fatal(err)
	}
	return ipc.ResolveRequest{Conf: conf, Addr: netip.MustParseAddr(addr), ID: ipc.FileIDOf(&st)}
}

// startIpwatchd runs the ipwatchd binary on conf (BPF off) and returns it
// once it answers question, with how long that took from its start.
func startIpwatchd(b *testing.B, bin, sock, conf string, question ipc.ResolveRequest) (*exec.Cmd, time.Duration) {
	start := time.Now()
	cmd := exec.Command(bin, "-socket", sock, "-conf", conf, "-bpf", "off", "-log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	daemon := ipc.Client{Socket: sock, Timeout: 5 * time.Second}
	for {
		if _, err := daemon.Resolve(question); err == nil {
			return cmd, time.Since(start)
		}
		if time.Since(start) > time.Minute {
			stopIpwatchd(cmd)
			b.Fatal("ipwatchd did not answer within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stopIpwatchd(cmd *exec.Cmd) {
	cmd.Process.Signal(unix.SIGTERM)
	cmd.Wait()
}
