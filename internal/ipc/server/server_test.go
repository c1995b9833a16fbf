package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func startServer(t *testing.T, timeout time.Duration) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	serve(t, path, timeout)
	return path
}

// serve listens at path and serves an echo until the test ends.
func serve(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Timeout = timeout
	s.Handler = func(peer unix.Ucred, req [][]byte) [][]byte {
		return [][]byte{[]byte(ipc.ReplyOK), req[1]}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// A second Listen on the socket of a server that answers refuses to
// start, names the path and the process there, and leaves the first
// server answering.
func TestListenRefusesLiveSocket(t *testing.T) {
	path := startServer(t, time.Second)
	s, err := Listen(path)
	if err == nil {
		s.Close()
		t.Errorf("a second Listen(%s) took over the socket of a server that answers", path)
	} else {
		want := fmt.Sprintf("another ipwatchd answers at %s (pid %d, uid %d)", path, os.Getpid(), os.Geteuid())
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second Listen: %v\nwant an error saying %q", err, want)
		}
		t.Logf("second Listen: %v", err)
	}
	if err := ask(path); err != nil {
		t.Fatalf("the first server no longer answers: %v", err)
	}
}

// A listener whose queue is full (it accepts nothing) is alive all the
// same: Listen refuses it at once rather than wait for room.
func TestListenRefusesBusySocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// A backlog of 0 holds one connection; the next one finds it full.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := Listen(path)
	if err == nil {
		s.Close()
		t.Fatalf("Listen(%s) took over the socket of a busy listener", path)
	}
	if want := "another ipwatchd listens at " + path; !strings.Contains(err.Error(), want) {
		t.Fatalf("Listen: %v\nwant an error saying %q", err, want)
	}
}

// A socket nobody listens on (a daemon killed before it could unlink
// it) is stale: Listen replaces it.
func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", path); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial of the stale socket: %v, want connection refused", err)
	}
	serve(t, path, time.Second)
	if err := ask(path); err != nil {
		t.Fatalf("the server over a stale socket: %v", err)
	}
}

func ask(path string) error {
	reply, err := ipc.Client{Socket: path, Timeout: 2 * time.Second}.Call(ipc.AppendRequest(nil, "ping"), 1024)
	if err != nil {
		return err
	}
	if string(reply[0]) != ipc.ReplyOK || string(reply[1]) != "ping" {
		return net.UnknownNetworkError("bad reply")
	}
	return nil
}

func TestSocketMode(t *testing.T) {
	path := startServer(t, time.Second)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o660 {
		t.Fatalf("socket mode %04o, want 0660", st.Mode&0o777)
	}
}

// Hostile and broken clients: each gets its connection closed or an error
// reply, and a well-behaved client is answered all the while.
func TestHostileClients(t *testing.T) {
	path := startServer(t, 500*time.Millisecond)
	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	silent := dial()
	defer silent.Close()
	slow := dial()
	defer slow.Close()
	slow.Write([]byte{0, 0}) // half a length prefix, then nothing

	huge := dial()
	defer huge.Close()
	huge.Write([]byte{0xff, 0xff, 0xff, 0xff})
	if n, _ := huge.Read(make([]byte, 1)); n != 0 {
		t.Error("an oversized frame got an answer")
	}

	garbage := dial()
	defer garbage.Close()
	garbage.Write([]byte{0, 0, 0, 3, 1, 2, 3})
	buf := make([]byte, 256)
	garbage.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _ := garbage.Read(buf)
	if fields, err := ipc.Decode(buf[4:n]); err != nil || string(fields[0]) != ipc.ReplyError {
		t.Errorf("garbage: got %q, want an error reply", buf[:n])
	}

	oldVersion := dial()
	defer oldVersion.Close()
	frame, _ := ipc.Encode([]byte("0"), []byte("ping"))
	oldVersion.Write(frame)
	n, _ = oldVersion.Read(buf)
	if fields, err := ipc.Decode(buf[4:n]); err != nil || string(fields[0]) != ipc.ReplyError {
		t.Errorf("wrong version: got %q, want an error reply", buf[:n])
	}

	if err := ask(path); err != nil {
		t.Fatalf("a good client beside the bad ones: %v", err)
	}
	// The silent ones are cut off at the deadline.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(buf); n != 0 || err == nil {
		t.Errorf("the silent client was not cut off: %d, %v", n, err)
	}
}

// TestMain lets the test binary play a client that holds many idle
// connections, in a process of its own: this machine's descriptor limit
// (20,000, and no CAP_SYS_RESOURCE to raise it) cannot hold both ends.
func TestMain(m *testing.M) {
	if spec := os.Getenv("HOLD_CONNECTIONS"); spec != "" {
		path, count, _ := strings.Cut(spec, ",")
		n, _ := strconv.Atoi(count)
		var conns []net.Conn
		for retries := 0; len(conns) < n; {
			c, err := net.Dial("unix", path)
			// A full backlog refuses a Unix connect with EAGAIN rather
			// than waiting (slow under -race): give the server time to
			// accept, as a real client's retry would.
			if errors.Is(err, syscall.EAGAIN) && retries < 1000 {
				retries++
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != nil {
				fmt.Println("dial:", err)
				os.Exit(1)
			}
			conns = append(conns, c)
		}
		fmt.Println("holding")
		io.Copy(io.Discard, os.Stdin) // until the test closes stdin
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Ten thousand idle connections must not delay anyone else's answer.
func TestManyConnections(t *testing.T) {
	const n = 10000
	path := startServer(t, 20*time.Second)
	hold(t, exec.Command(os.Args[0], "-test.run=^$"), path, n)
	for _, err := range askMany(path, 20) {
		t.Errorf("with %d idle connections open: %v", n, err)
	}
}

// hold starts the test binary as holder, holding n connections to the
// socket at path until the test ends.
func hold(t *testing.T, holder *exec.Cmd, path string, n int) {
	t.Helper()
	holder.Env = append(os.Environ(), "HOLD_CONNECTIONS="+path+","+strconv.Itoa(n))
	stdin, _ := holder.StdinPipe()
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); holder.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "holding\n" {
		t.Fatalf("the holder did not open its %d connections: %q", n, line)
	}
}

// askMany asks n questions at once and returns the errors.
func askMany(path string, n int) []error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- ask(path)
		}()
	}
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	return failed
}

// A uid other than root holds at most MaxPerUID connections waiting for
// their request: one holding every connection it can (issue 20 item 5: a
// member of the socket's group held 16,415, and every virtuald fell back
// to the file) leaves root's questions answered.
func TestUIDShare(t *testing.T) {
	testbed.RequirePrivileges(t) // the holder runs as another user
	dir, err := os.MkdirTemp("", "uidshare-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "s.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666) // the holder stands for a member of the socket's group
	s.Timeout, s.MaxConns, s.MaxPerUID = 20*time.Second, 64, 16
	s.Handler = func(peer unix.Ucred, req [][]byte) [][]byte { return [][]byte{[]byte(ipc.ReplyOK), req[1]} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The test binary's directory is closed to others: a copy in dir.
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(dir, "holder")
	if err := os.WriteFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(self, "-test.run=^$")
	holder.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	hold(t, holder, path, 64)
	for _, err := range askMany(path, 20) {
		t.Errorf("root's question beside another uid holding every connection it can: %v", err)
	}
}
