package testbed

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// OpenPTY opens a pseudo-terminal pair, to stand for a person's terminal:
// the peer is what a shell would have as fds 0-2, the master what the
// person types into and reads from. The master is non-blocking, so reads
// from it take deadlines. Both are closed at cleanup.
func OpenPTY(t T) (master, peer *os.File) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("pty: %v", err)
	}
	master = os.NewFile(uintptr(m), "pty master")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("pty: unlock: %v", err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty: %v", err)
	}
	peer, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("pty: %v", err)
	}
	t.Cleanup(func() { peer.Close() })
	return master, peer
}
