package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
)

// A connection virtuald refuses per connection for its entry's limits
// reaches the daemon's count (status REFUSED), as accept mode's do.
func TestPerConnectionRefusals(t *testing.T) {
	w := newWorld(t, 0)
	const addr = "192.0.2.71"
	w.ns.AddAddr(addr)
	root := w.roots.Root("held", w.bin["whoami"])
	testbed.Must(t, os.WriteFile(filepath.Join(root, "HOLD"), nil, 0o644))
	w.conf = w.roots.WriteConf("conf", addr+" "+root+" max=1")
	w.startDaemon("-bpf", "off")
	w.startInetd()

	c, err := w.ns.Dial("tcp", hostPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(line, "root=held") {
		t.Fatalf("first connection under max=1: %q %v", line, err)
	}
	if got, err := w.ns.Ask(hostPort(addr)); got != "" || err != nil {
		t.Fatalf("second connection served past max=1: %q %v", got, err)
	}
	w.ns.Await("the daemon counts the refusal", 10*time.Second, func() bool {
		st, err := w.status()
		if err != nil {
			return false
		}
		e := w.entry(st, addr)
		return e != nil && e.Refused == 1
	})
}
