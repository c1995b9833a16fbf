package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkReload is the daemon's background work as a conf file grows:
// ipwatchd's CPU from its start until it is idle (the file loaded, every
// root and the relay's checked) and for one reload (ipwatchctl reload:
// the file read again, every root checked again, as every recheck pass
// does), at 10,000, 100,000 and 1,000,000 entries, mapping 2 roots or a
// root for every 10 lines (every line at 10,000). Each root is a real
// directory; the daemon relays each root's dev/log, as the packaged unit
// has it.
func BenchmarkReload(b *testing.B) {
	bins := testbed.Binaries(b)
	type size struct{ entries, roots int }
	sizes := []size{{10_000, 2}, {10_000, 10_000}, {100_000, 2}, {100_000, 10_000}, {1_000_000, 2}, {1_000_000, 100_000}}
	fmt.Printf("\n| entries | roots | start to idle, CPU | reload to idle, CPU |\n|---:|---:|---:|---:|\n")
	for _, sz := range sizes {
		b.Run(fmt.Sprintf("%d-entries/%d-roots", sz.entries, sz.roots), func(b *testing.B) {
			// Short paths: a million lines of a test's temporary
			// directory would pass the conf file's size limit.
			dir, err := os.MkdirTemp("/", "vb-")
			testbed.Must(b, err)
			b.Cleanup(func() { os.RemoveAll(dir) })
			testbed.Must(b, os.Chmod(dir, 0o755))
			roots := make([]string, sz.roots)
			for i := range roots {
				roots[i] = filepath.Join(dir, fmt.Sprintf("r%d", i))
				testbed.Must(b, os.Mkdir(roots[i], 0o755))
			}
			var sb strings.Builder
			for i := 0; i < sz.entries; i++ {
				fmt.Fprintf(&sb, "10.%d.%d.%d %s\n", i>>16&255, i>>8&255, i&255, roots[i%len(roots)])
			}
			conf := filepath.Join(dir, "conf")
			testbed.Must(b, os.WriteFile(conf, []byte(sb.String()), 0o644))
			sock := filepath.Join(dir, "run", "ipwatchd.sock")
			var startCPU, reloadCPU time.Duration
			for i := 0; i < b.N; i++ {
				cmd := exec.Command(bins["ipwatchd"], "-socket", sock, "-conf", conf, "-bpf", "off", "-relay-syslog", "-log-level", "warn")
				cmd.Stderr = os.Stderr
				testbed.Must(b, cmd.Start())
				b.Cleanup(func() { stopIpwatchd(cmd) })
				started := settle(b, sock, cmd.Process.Pid)
				if _, err := (admin.Client{Socket: sock}).Reload(); err != nil {
					b.Fatal(err)
				}
				reloadCPU += settle(b, sock, cmd.Process.Pid) - started
				startCPU += started
				stopIpwatchd(cmd)
			}
			n := time.Duration(b.N)
			fmt.Printf("| %d | %d | %.2f s | %.2f s |\n", sz.entries, sz.roots, (startCPU / n).Seconds(), (reloadCPU / n).Seconds())
			b.ReportMetric((startCPU / n).Seconds(), "start-cpu-s")
			b.ReportMetric((reloadCPU / n).Seconds(), "reload-cpu-s")
		})
	}
}
