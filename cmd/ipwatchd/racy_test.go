package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

// Two same-size writes within one timer tick leave a file's status (size,
// mtime, ctime) as it was, on file systems with coarse timestamps (ramfs
// here). Before the fix the daemon kept the first content it read under
// that status and went on answering from it, and accept mode kept its
// answers: connections went to another tenant's root. Now, 300 ms after
// the last write of hundreds of same-tick rewrites in both directions, the
// daemon, a per-connection virtuald and an accept-mode virtuald all follow
// the file.
func TestSameTickRewrites(t *testing.T) {
	if !testbed.PrivateMounts(t) {
		return
	}
	w := newWorld(t, 3)
	ram := filepath.Join(w.roots.Dir, "ram")
	if err := os.Mkdir(ram, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "ramfs", "-o", "mode=0755", "ramfs", ram).CombinedOutput(); err != nil {
		t.Fatalf("mount ramfs: %v: %s", err, out)
	}
	// The contents differ in one byte: the same size.
	var content [3][]byte
	for i := range content {
		content[i] = []byte(fmt.Sprintf("192.0.2.1 %s/site-%d\n", w.roots.Dir, i+1))
	}
	w.conf = filepath.Join(ram, "conf")
	if err := os.WriteFile(w.conf, content[0], 0o644); err != nil {
		t.Fatal(err)
	}
	w.startDaemon()
	virtuald := w.bin["virtuald"]
	w.ns.Start(w.log, "inetd", "-d", "-R", "1000000", w.roots.WriteConf("inetd.conf",
		fmt.Sprintf("7000 stream tcp nowait root %s virtuald -socket %s %s /bin/whoami", virtuald, w.socket, w.conf),
		fmt.Sprintf("7001 stream tcp wait root %s virtuald -accept -socket %s %s /bin/whoami", virtuald, w.socket, w.conf)))
	w.ns.WaitListening("tcp", 7000)
	w.ns.WaitListening("tcp", 7001)

	// Each write is a whole rewrite, as `echo ... > conf` does: open with
	// O_TRUNC, write, close (which the daemon's watch sees).
	rewrite := func(b []byte) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		fd, err := unix.Open(w.conf, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Write(fd, b)
			unix.Fstat(fd, &st)
			unix.Close(fd)
		}
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// Each round writes one content, waits until the daemon has read it,
	// and writes another at once: within the same tick, more often than
	// not, so the file's status is the one the daemon read the first
	// content under. Three contents, so that every round changes the file
	// twice and goes each way between every two of them.
	const rounds = 60
	sameTick := 0
	for r := 0; r < rounds; r++ {
		first, last := content[(2*r+1)%3], (2*r+2)%3
		gen := w.generation(t)
		before := rewrite(first)
		for deadline := time.Now().Add(5 * time.Second); w.generation(t) == gen; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the daemon did not read the first write", r)
			}
		}
		if after := rewrite(content[last]); after.Ctim == before.Ctim {
			sameTick++ // the daemon read the first content under the status the file has now
		}
		time.Sleep(300 * time.Millisecond)
		want := fmt.Sprintf("site-%d", last+1)
		if got := w.daemonRoot(t, "192.0.2.1"); !strings.HasSuffix(got, "/"+want) {
			t.Fatalf("round %d: the daemon answers %q, the file says %s", r, got, want)
		}
		for _, port := range []string{"7000", "7001"} {
			got, err := w.ns.Ask("192.0.2.1:" + port)
			if err != nil || !strings.HasPrefix(got, "root="+want+" ") {
				t.Fatalf("round %d, port %s: served %q (%v), the file says %s; log ends:\n%s", r, port, got, err, want, w.log.Tail(4))
			}
		}
	}
	t.Logf("%d rounds; in %d the second write left the file's status as the daemon had read it", rounds, sameTick)
	if sameTick == 0 {
		t.Errorf("no second write fell in the same tick as the first: the test showed nothing")
	}
}

// generation is the daemon's generation of the one conf file.
func (w *world) generation(t *testing.T) uint64 {
	t.Helper()
	st, err := w.status()
	if err != nil || len(st.Confs) != 1 {
		t.Fatalf("status: %v", err)
	}
	return st.Confs[0].Generation
}

// daemonRoot asks the daemon which root serves addr in the conf file as
// it is on disk now, as virtuald would (by the file's identity); when the
// daemon does not vouch for its copy, why not.
func (w *world) daemonRoot(t *testing.T, addr string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(w.conf, &st); err != nil {
		t.Fatal(err)
	}
	daemon := ipc.Client{Socket: w.socket, Timeout: 5 * time.Second}
	a, err := daemon.Resolve(ipc.ResolveRequest{Conf: w.conf, Addr: netip.MustParseAddr(addr), ID: ipc.FileIDOf(&st), Lookup: true})
	switch {
	case errors.Is(err, ipc.ErrStale), errors.Is(err, ipc.ErrRacy), errors.Is(err, ipc.ErrUnknown):
		return err.Error()
	case err != nil:
		t.Fatal(err)
	}
	return a.Root
}
