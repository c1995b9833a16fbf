package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The tasks' runner: a failing task is named in the error and stops the
// others; SIGHUP reloads; SIGTERM stops; a second SIGTERM ends a stop
// that a task holds up, naming it.
func TestTasks(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name    string
		fail    bool        // a task fails
		stuck   bool        // a task ignores the stop until the test ends
		signals []os.Signal // sent one after the other
		reloads int         // SIGHUPs acted on
		want    func(error) bool
	}{
		{name: "a task fails", fail: true, want: func(err error) bool { return errors.Is(err, boom) && err.Error() == "failing: boom" }},
		{name: "SIGTERM", signals: []os.Signal{unix.SIGTERM}, want: isNil},
		{name: "SIGINT", signals: []os.Signal{unix.SIGINT}, want: isNil},
		{name: "SIGHUP, then SIGTERM", signals: []os.Signal{unix.SIGHUP, unix.SIGHUP, unix.SIGTERM}, reloads: 2, want: isNil},
		{name: "a second SIGTERM", stuck: true, signals: []os.Signal{unix.SIGTERM, unix.SIGTERM},
			want: func(err error) bool {
				return errors.Is(err, ErrStopForced) && strings.HasSuffix(err.Error(), "a second terminated while stuck had not stopped")
			}},
		{name: "SIGTERM after a failure", fail: true, stuck: true, signals: []os.Signal{unix.SIGTERM},
			want: func(err error) bool { return errors.Is(err, ErrStopForced) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tk := startTasks(context.Background(), zap.NewNop())
			release := make(chan struct{})
			defer close(release)
			tk.run("prompt", func(ctx context.Context) error { <-ctx.Done(); return nil })
			if c.stuck {
				tk.run("stuck", func(context.Context) error { <-release; return nil })
			}
			if c.fail {
				tk.run("failing", func(context.Context) error { return boom })
			}
			signals := make(chan os.Signal)
			reloads := 0
			done := make(chan error, 1)
			go func() { done <- tk.wait(signals, func() { reloads++ }) }()
			for i, s := range c.signals {
				if c.fail {
					<-tk.ctx.Done() // the failure is seen before the signal
				}
				if c.stuck && i > 0 {
					// Every task but the stuck one has stopped.
					for !slices.Equal(tk.stillRunning(), []string{"stuck"}) {
						time.Sleep(time.Millisecond)
					}
				}
				signals <- s
			}
			if err := <-done; !c.want(err) {
				t.Errorf("wait: %v", err)
			}
			if reloads != c.reloads {
				t.Errorf("%d reloads, want %d", reloads, c.reloads)
			}
		})
	}
}

func isNil(err error) bool { return err == nil }

// ipwatchd's signals reach a running daemon in-process: SIGHUP reloads
// every file, between RELOADING=1 and READY=1 to systemd, and SIGTERM
// stops it, after STOPPING=1, with its socket removed.
func TestRunSignals(t *testing.T) {
	dir := t.TempDir()
	notify := listenNotify(t, filepath.Join(dir, "notify.sock"))
	conf := filepath.Join(dir, "conf")
	if err := os.WriteFile(conf, []byte("10.0.0.1 /\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "ipwatchd.sock")
	d, err := New(Config{Socket: sock, Confs: []string{conf}, Log: zap.NewNop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	signals := make(chan os.Signal)
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background(), signals) }()
	notify.expect(t, "READY=1")
	signals <- unix.SIGHUP
	notify.expect(t, "RELOADING=1\nMONOTONIC_USEC=")
	notify.expect(t, "READY=1")
	signals <- unix.SIGTERM
	notify.expect(t, "STOPPING=1")
	if err := <-done; err != nil {
		t.Errorf("Run after SIGTERM: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is still there after the stop: %v", err)
	}
}

// notifySocket stands for systemd's $NOTIFY_SOCKET.
type notifySocket struct{ c *net.UnixConn }

func listenNotify(t *testing.T, path string) notifySocket {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return notifySocket{c}
}

// expect fails the test unless the next message starts with prefix.
func (n notifySocket) expect(t *testing.T, prefix string) {
	t.Helper()
	n.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	k, err := n.c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:k]), prefix) {
		t.Fatalf("told systemd %q (%v), want %q", buf[:k], err, prefix)
	}
}
