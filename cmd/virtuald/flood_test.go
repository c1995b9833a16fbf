package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

// Issue 23's noisy neighbour, as a test: under a real inetd, while 64
// clients (bench/client, processes of their own) flood one address for
// 3 s, a client of another address of the same accept mode is served
// every time, with and without limits on the entries: none of its
// connections fails, and none is refused but for its own entry's limits;
// the flood's clients see refusals, never a failure. How large a share
// the other address keeps is BenchmarkFlood's to say: a rate has no
// place in a test.
func TestAcceptFlood(t *testing.T) {
	w := newWorld(t)
	client, err := testbed.Build(t.TempDir(), "./bench/client")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i, limits := range []string{"", "rate=50/s max=16"} {
		for j, name := range []string{"flooded", "quiet"} {
			addr := fmt.Sprintf("203.0.113.%d", 71+2*i+j)
			w.ns.AddAddr(addr)
			lines = append(lines, addr+" "+w.roots.Root(fmt.Sprintf("%s-%d", name, i), w.bin["whoami"])+" "+limits)
		}
	}
	inetdAccept(w, 7310, w.roots.WriteConf("conf-flood", lines...))
	run := func(conns int, addr, root string) *clientRun {
		return startClient(t, w, client["client"], conns, addr+":7310", "3s", "root="+root+" ")
	}
	for i, limits := range []string{"no limits", "rate=50/s max=16"} {
		flooded, quiet := fmt.Sprintf("203.0.113.%d", 71+2*i), fmt.Sprintf("203.0.113.%d", 72+2*i)
		flood := run(64, flooded, fmt.Sprintf("flooded-%d", i))
		q := run(1, quiet, fmt.Sprintf("quiet-%d", i)).wait(t)
		f := flood.wait(t)
		t.Logf("%s: the quiet address served %d, refused %d; the flood served %d, refused %d", limits, q.served, q.refused, f.served, f.refused)
		if q.failed != 0 || f.failed != 0 || q.served == 0 {
			t.Errorf("%s: failed connections: %d of the quiet address's (%d served), %d of the flood's", limits, q.failed, q.served, f.failed)
		}
		if i == 0 && q.refused != 0 {
			t.Errorf("no limits: %d of the quiet address's connections refused", q.refused)
		}
		if i == 1 && f.refused == 0 {
			t.Errorf("rate=50/s max=16: none of the flood's %d connections refused", f.served)
		}
	}
}

// clientRun is a bench/client running in the namespace.
type clientRun struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// clientCounts are a client's connections: served (the reply began with
// its prefix), refused (closed without a byte) and failed.
type clientCounts struct{ served, refused, failed int64 }

// startClient starts bench/client (bin) with conns connections at a time
// to addr for d, each expected to be answered with prefix.
func startClient(t *testing.T, w *world, bin string, conns int, addr, d, prefix string) *clientRun {
	t.Helper()
	r := &clientRun{cmd: w.ns.Exec(bin, "-c", strconv.Itoa(conns), addr, d, prefix)}
	r.cmd.Stdout = &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill() })
	return r
}

// wait waits for the client to end and returns its counts.
func (r *clientRun) wait(t *testing.T) clientCounts {
	t.Helper()
	var c clientCounts
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("%s: %v", r.cmd.Args, err)
	}
	if _, err := fmt.Sscan(r.out.String(), &c.served, &c.refused, &c.failed); err != nil {
		t.Fatalf("%s: %q: %v", r.cmd.Args, r.out.String(), err)
	}
	return c
}
