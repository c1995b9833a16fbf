package main

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/socket"
)

// A connection's decision and its log line, from the daemon and from the
// file, for every rule: the fields a person reads to tell why a
// connection went where it went.
func TestDecide(t *testing.T) {
	path, sock := inProcessDaemon(t, "192.0.2.1 /v/a user=ftp\n198.51.100.0/24 /v/pool\n192.0.2.9 relative\n")
	absent := filepath.Join(t.TempDir(), "ipwatchd.sock")
	conn := func(local string) socket.Conn {
		return socket.Conn{Stream: true, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort("203.0.113.7:40000")}
	}
	for _, c := range []struct {
		name, socket, local string
		refused             bool
		line                string
		front               string // what the front found (front.go)
	}{
		{"exact, daemon", sock, "192.0.2.1:21", false,
			"local=192.0.2.1:21 remote=203.0.113.7:40000 conf=" + path + " line=1 rule=exact root=/v/a via=daemon", ""},
		{"prefix, file", absent, "198.51.100.5:21", false,
			"local=198.51.100.5:21 remote=203.0.113.7:40000 conf=" + path + " line=2 rule=prefix root=/v/pool via=file daemon=absent", ""},
		{"an invalid entry, daemon", sock, "192.0.2.9:21", true,
			"local=192.0.2.9:21 remote=203.0.113.7:40000 conf=" + path + " line=3 rule=exact root=relative via=daemon", ""},
		{"no entry, file", absent, "[2001:db8::1]:21", true,
			"local=[2001:db8::1]:21 remote=203.0.113.7:40000 conf=" + path + " via=file daemon=absent", ""},
		// The front found the daemon slow: the file, without asking the
		// daemon (which is up) again.
		{"exact, the front found it slow", sock, "192.0.2.1:21", false,
			"local=192.0.2.1:21 remote=203.0.113.7:40000 conf=" + path + " line=1 rule=exact root=/v/a via=file daemon=slow", "slow"},
		{"exact, the front found it stale", sock, "192.0.2.1:21", false,
			"local=192.0.2.1:21 remote=203.0.113.7:40000 conf=" + path + " line=1 rule=exact root=/v/a via=file daemon=\"" + ipc.ErrStale.Error() + "\"", "stale"},
		// It answered the front: asked again, by a lookup.
		{"exact, the daemon answered the front", sock, "192.0.2.1:21", false,
			"local=192.0.2.1:21 remote=203.0.113.7:40000 conf=" + path + " line=1 rule=exact root=/v/a via=daemon", "answered"},
		// A word it does not know changes nothing.
		{"exact, an unknown word", sock, "192.0.2.1:21", false,
			"local=192.0.2.1:21 remote=203.0.113.7:40000 conf=" + path + " line=1 rule=exact root=/v/a via=daemon", "yes"},
	} {
		d, err := decide(conn(c.local), path, func(addr netip.Addr) (m conf.Match, via, why string, err error) {
			return resolve(ipc.MarkFor(c.socket), c.socket, path, addr, nil, c.front)
		})
		if (err != nil) != c.refused || d.line.String() != c.line {
			t.Errorf("%s: %v\n%s\nwant refused=%v and\n%s", c.name, err, d.line.String(), c.refused, c.line)
		}
	}
}
