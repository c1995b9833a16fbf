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
	"golang.org/x/sys/unix"
)

// BenchmarkRoundTrip compares virtuald's question to ipwatchd (its raw
// client, ipc.Call, against the ipwatchd binary: connect, request, answer,
// close) with the machine's floor for the same exchange, a minimal C
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
	os.WriteFile(conf, []byte("10.0.0.1 /\n127.0.0.1 /\n"), 0o644)
	time.Sleep(60 * time.Millisecond) // past the file's racy window
	sock := filepath.Join(dir, "run", "ipwatchd.sock")
	daemon := exec.Command(bins["ipwatchd"], "-socket", sock, "-conf", conf, "-bpf", "off", "-log-level", "warn")
	if err := daemon.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { daemon.Process.Signal(unix.SIGTERM); daemon.Wait() }()
	var st unix.Stat_t
	unix.Stat(conf, &st)
	question := append([]string{ipc.Version, ipc.OpResolve, conf, "127.0.0.1"}, ipc.FileIDOf(&st).Fields()...)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if r, err := ipc.Call(sock, time.Second, 1<<16, question...); err == nil && string(r[0]) == ipc.ReplyOK {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("ipwatchd did not answer")
		}
	}

	frame, _ := ipc.EncodeStrings(question...)
	reqFile := filepath.Join(dir, "request")
	os.WriteFile(reqFile, frame, 0o644)

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
			if r, err := ipc.Call(sock, time.Second, 1<<16, question...); err != nil || string(r[0]) != ipc.ReplyOK {
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
