package syslog

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func received(c *net.UnixConn) string {
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	b := make([]byte, 8192)
	n, _ := c.Read(b)
	return string(b[:n])
}

// After virtuald's chroot, /dev/log names the tenant's socket: a logger
// whose syslog went away must not connect again by path and hand the host's
// log lines to whatever listens there.
func TestSealedNeverReconnects(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "log")
		host := listen(t, path)
		l := open("virtuald", path, 2)
		l.Log(Info, "first")
		if got := received(host); !strings.HasSuffix(got, "]: first") {
			t.Fatalf("the host's syslog got %q", got)
		}
		host.Close()
		os.Remove(path)
		tenant := listen(t, path) // what the path names now
		if sealed {
			l.Seal()
		}
		l.Log(Info, "secret")
		got := received(tenant)
		switch {
		case sealed && got != "":
			t.Errorf("sealed: the socket now at the path got %q", got)
		case !sealed && !strings.HasSuffix(got, "]: secret"):
			t.Errorf("unsealed: the logger did not reconnect (the test shows nothing): got %q", got)
		}
		l.Close()
	}
}

// Control characters from conf files or clients never split a line.
func TestLogEscapes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	c := listen(t, path)
	l := open("virtuald", path, 2)
	defer l.Close()
	l.Log(Err, "a\nb\x00c\x7f")
	if got := received(c); !strings.HasPrefix(got, "<27>virtuald[") || !strings.HasSuffix(got, "]: a?b?c?") {
		t.Errorf("got %q", got)
	}
}
