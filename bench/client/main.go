// Command client is BenchmarkFlood's client, run inside the benchmark's
// network namespace as a process of its own, as remote clients would be
// (not goroutines of the benchmark, where the Go scheduler queued the
// measuring client behind the flood's, and where each blocking connect
// held an OS thread of its own, 64 threads that the kernel's scheduler
// served each as much as the measuring client). It runs -c connections
// at a time to ADDRESS:PORT, each reading until the server closes it, for
// DURATION, and prints how many were served (the reply began with
// PREFIX), refused (closed without a byte) and failed.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	conns := flag.Int("c", 1, "connections at a time")
	flag.Parse()
	if flag.NArg() != 3 {
		fmt.Fprintln(os.Stderr, "usage: client [-c N] ADDRESS:PORT DURATION PREFIX")
		os.Exit(2)
	}
	d, err := time.ParseDuration(flag.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	addr, prefix := flag.Arg(0), []byte(flag.Arg(2))
	var served, refused, failed atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for time.Now().Before(end) {
				switch once(addr, prefix, buf) {
				case 0:
					served.Add(1)
				case 1:
					refused.Add(1)
				default:
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Println(served.Load(), refused.Load(), failed.Load())
}

// once makes one connection: 0 served, 1 refused, 2 failed.
func once(addr string, prefix, buf []byte) int {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 2
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := 0
	var rerr error
	for got < len(buf) && rerr == nil {
		var n int
		n, rerr = c.Read(buf[got:])
		got += n
	}
	switch {
	case bytes.HasPrefix(buf[:got], prefix):
		return 0
	case got == 0 && rerr == io.EOF:
		return 1
	}
	return 2
}
