package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkRoundTrip compares virtuald's question to ipwatchd (its
// client, ipc.Client.Resolve, against the ipwatchd binary: connect,
// request, answer, close) with the machine's floor for the same exchange, a minimal C
// client and server (bench/uds/floor.c), measured in the same run,
// alternating, and the C client asking ipwatchd (the server's share). It
// reports the means and virtuald's ratio to the floor.
func BenchmarkRoundTrip(b *testing.B) {
	bins := testbed.Binaries(b)
	dir := b.TempDir()
	floor := filepath.Join(dir, "floor")
	if out, err := exec.Command("gcc", "-O2", "-o", floor, "uds/floor.c").CombinedOutput(); err != nil {
		b.Fatalf("building the C floor: %v\n%s", err, out)
	}
	cSock := filepath.Join(dir, "floor.sock")
	server := exec.Command(floor, "server", cSock)
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { server.Process.Kill(); server.Wait() }()

	conf := filepath.Join(dir, "conf")
	testbed.Must(b, os.WriteFile(conf, []byte("10.0.0.1 /\n127.0.0.1 /\n"), 0o644))
	sock := filepath.Join(dir, "run", "ipwatchd.sock")
	question := resolveQuestion(b, conf, "127.0.0.1")
	daemon, _ := startIpwatchd(b, bins["ipwatchd"], sock, conf, question)
	defer stopIpwatchd(daemon)

	frame := question.AppendFrame(nil)
	reqFile := filepath.Join(dir, "request")
	testbed.Must(b, os.WriteFile(reqFile, frame, 0o644))

	client := ipc.Client{Socket: sock, Timeout: time.Second}
	const per = 5000
	var cMean, goMean, cDaemon float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, err := exec.Command(floor, "client", cSock, strconv.Itoa(per)).Output()
		if err != nil {
			b.Fatal(err)
		}
		us, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		cMean += us
		t0 := time.Now()
		for j := 0; j < per; j++ {
			if _, err := client.Resolve(question); err != nil {
				b.Fatal(err)
			}
		}
		goMean += float64(time.Since(t0).Microseconds()) / per
		out, err = exec.Command(floor, "client", sock, strconv.Itoa(per), reqFile).Output()
		if err != nil {
			b.Fatal(err)
		}
		us, _ = strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		cDaemon += us
	}
	b.ReportMetric(cDaemon/float64(b.N), "C-client-to-ipwatchd-µs")
	b.ReportMetric(cMean/float64(b.N), "C-floor-µs")
	b.ReportMetric(goMean/float64(b.N), "virtuald-to-ipwatchd-µs")
	b.ReportMetric(goMean/cMean, "ratio")
}
