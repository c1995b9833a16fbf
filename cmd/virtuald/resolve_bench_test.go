package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
)

// BenchmarkResolve compares virtuald's two ways to an answer, as it takes
// them on every connection: asking ipwatchd (stat the conf, connect, ask,
// read the answer) and reading the conf file itself (read, scan). The
// address is on the last line, so the scan reads the whole file.
func BenchmarkResolve(b *testing.B) {
	dir := b.TempDir()
	sockDir := filepath.Join(dir, "run")
	var confs []string
	last := map[int]netip.Addr{}
	sizes := []int{10, 1000, 10000, 100000}
	for _, n := range sizes {
		var sb strings.Builder
		for i := 0; i < n; i++ {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			fmt.Fprintf(&sb, "%s /virtual/site%d\n", a, i)
			last[n] = a
		}
		p := filepath.Join(dir, fmt.Sprintf("conf.%d", n))
		testbed.Must(b, os.WriteFile(p, []byte(sb.String()), 0o644))
		confs = append(confs, p)
	}
	sock := filepath.Join(sockDir, "ipwatchd.sock")
	ipwatchdtest.StartDaemon(b, sock, confs...)
	for i, n := range sizes {
		path, addr := confs[i], last[n]
		b.Run(fmt.Sprintf("entries=%d/daemon", n), func(b *testing.B) {
			for j := 0; j < b.N; j++ {
				if _, via, why, err := resolve(ipc.MarkFor(sock), sock, path, addr, nil, ""); err != nil || via != "daemon" {
					b.Fatal(via, why, err)
				}
			}
		})
		b.Run(fmt.Sprintf("entries=%d/file", n), func(b *testing.B) {
			for j := 0; j < b.N; j++ {
				if _, via, _, err := resolve(&ipc.SlowMemo{}, filepath.Join(dir, "no-daemon.sock"), path, addr, nil, ""); err != nil || via != "file" {
					b.Fatal(via, err)
				}
			}
		})
	}
}

// BenchmarkResolveStalledDaemon measures what a daemon that accepts but
// never answers (stopped, or wedged) costs a connection: the reply
// timeout, then the file, for the first connection that finds it so
// ("first"); the ones after it, while the slow mark stands, read the file
// at once ("marked"). A daemon whose backlog is full costs nothing: the
// connect fails at once.
func BenchmarkResolveStalledDaemon(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "conf")
	testbed.Must(b, os.WriteFile(path, []byte("10.0.0.1 /\n"), 0o644))
	sock := filepath.Join(dir, "stalled.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	addr := netip.MustParseAddr("10.0.0.1")
	b.Run("first", func(b *testing.B) {
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, via, why, err := resolve(&ipc.SlowMemo{}, sock, path, addr, nil, ""); err != nil || via != "file" || why != "slow" {
				b.Fatal(via, why, err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/connection")
	})
	b.Run("marked", func(b *testing.B) {
		mark := ipc.MarkFor(sock)
		resolve(mark, sock, path, addr, nil, "") // waits once, and marks
		start, probes := time.Now(), 0
		for i := 0; i < b.N; i++ {
			_, via, why, err := resolve(mark, sock, path, addr, nil, "")
			if err != nil || via != "file" || !strings.HasPrefix(why, "slow") {
				b.Fatal(via, why, err)
			}
			if why == "slow" {
				probes++ // the one connection per ipc.SlowHold that asks again
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/connection")
		b.ReportMetric(float64(probes), "probes")
	})
}
