// Command quiet is BenchmarkFlood's measuring client: a process of its
// own (a client of the quiet address is not one of the flood's
// goroutines, queued behind them by the Go scheduler), it connects to
// ADDRESS:PORT one connection after the other for DURATION, reads each
// until the server closes it, and prints how many were served (the
// service's reply began with PREFIX), refused (closed without a byte)
// and failed.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: quiet ADDRESS:PORT DURATION PREFIX")
		os.Exit(2)
	}
	d, err := time.ParseDuration(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	prefix := []byte(os.Args[3])
	var served, refused, failed int
	buf := make([]byte, 512)
	for end := time.Now().Add(d); time.Now().Before(end); {
		c, err := net.DialTimeout("tcp", os.Args[1], 10*time.Second)
		if err != nil {
			failed++
			continue
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := 0
		var rerr error
		for got < len(buf) && rerr == nil {
			var n int
			n, rerr = c.Read(buf[got:])
			got += n
		}
		c.Close()
		switch {
		case bytes.HasPrefix(buf[:got], prefix):
			served++
		case got == 0 && rerr == io.EOF:
			refused++
		default:
			failed++
		}
	}
	fmt.Println(served, refused, failed)
}
