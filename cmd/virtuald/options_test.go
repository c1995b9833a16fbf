package main

import (
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/buildinfo"
	"golang.org/x/sys/unix"
)

// The flags come before the conf path, as the seed's inetd lines have it;
// everything from the conf path on is the service's.
func TestParseOptions(t *testing.T) {
	for _, c := range []struct {
		args []string
		want options
		rest []string
		err  bool
	}{
		{args: []string{"virtuald", "/c", "prog", "-x"}, want: options{maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second}, rest: []string{"virtuald", "/c", "prog", "-x"}},
		{args: []string{"virtuald", "-allow-wildcard-dgram", "/c", "prog"}, want: options{maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second, allowWildcardDgram: true}, rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-accept", "-stop-timeout", "5s", "--max-children=3", "/c", "prog"}, want: options{accept: true, maxChildren: 3, maxPerEntry: 64, stopTimeout: 5 * time.Second}, rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-socket", "/s", "--", "-odd-conf", "prog"}, want: options{socket: "/s", maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second}, rest: []string{"virtuald", "-odd-conf", "prog"}},
		{args: []string{"virtuald", "-accept", "-idle-exit", "10m", "/c", "prog"}, want: options{accept: true, maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second, idleExit: 10 * time.Minute}, rest: []string{"virtuald", "/c", "prog"}},
		{args: []string{"virtuald", "-idle-exit", "10m", "/c", "prog"}, err: true}, // per connection, nothing idles
		{args: []string{"virtuald", "-accept", "-idle-exit", "-1s", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-stop-timeout", "soon", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-max-per-entry", "0", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-frobnicate", "/c", "prog"}, err: true},
		{args: []string{"virtuald", "-socket"}, err: true},
		{args: []string{"virtuald", "-version"}, want: options{version: true, maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second}, rest: []string{"virtuald"}},
		{args: []string{"virtuald", "-h"}, want: options{help: true, maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second}, rest: []string{"virtuald"}},
		{args: []string{"virtuald", "--help"}, want: options{help: true, maxChildren: 512, maxPerEntry: 64, stopTimeout: 30 * time.Second}, rest: []string{"virtuald"}},
	} {
		got, rest, err := parseOptions(c.args)
		if c.err {
			if err == nil {
				t.Errorf("%q: no error", c.args)
			}
			continue
		}
		if err != nil || got != c.want || !slices.Equal(rest, c.rest) {
			t.Errorf("%q: %+v %q %v, want %+v %q", c.args, got, rest, err, c.want, c.rest)
		}
	}
}

// virtuald takes the daemon's socket and systemd's listening sockets from
// its environment, and passes everything else on to the service: never
// systemd's socket-passing variables, which name virtuald's pid and
// descriptors.
func TestReadEnvironment(t *testing.T) {
	const pid = 4242
	service := []string{"PATH=/bin", "TCPLOCALIP=192.0.2.1", "LISTEN=kept"}
	for _, c := range []struct {
		name string
		env  []string
		want environment
	}{
		{"inetd's", service, environment{service: service}},
		{"the socket named",
			[]string{"VIRTUALD_SOCKET=/run/other.sock", "PATH=/bin"},
			environment{socket: "/run/other.sock", service: []string{"VIRTUALD_SOCKET=/run/other.sock", "PATH=/bin"}}},
		{"systemd's, for this process",
			append([]string{"LISTEN_PID=4242", "LISTEN_FDS=2", "LISTEN_FDNAMES=a:b"}, service...),
			environment{listenFDs: 2, service: service}},
		{"systemd's, for another process",
			append([]string{"LISTEN_PID=1", "LISTEN_FDS=2"}, service...),
			environment{service: service}},
		{"systemd's, no number",
			append([]string{"LISTEN_PID=4242", "LISTEN_FDS=two"}, service...),
			environment{service: service}},
		{"systemd's, none passed",
			append([]string{"LISTEN_PID=4242", "LISTEN_FDS=0"}, service...),
			environment{service: service}},
	} {
		got := readEnvironment(c.env, pid)
		if got.socket != c.want.socket || got.listenFDs != c.want.listenFDs || !slices.Equal(got.service, c.want.service) {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

// virtuald -version prints its version on stdout and exits 0 (in a
// process of its own: it writes to fd 1).
func TestVersion(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=version")
	out, err := cmd.Output()
	if err != nil || string(out) != "virtuald "+buildinfo.Version()+"\n" {
		t.Errorf("virtuald -version: %q, %v", out, err)
	}
}

// -h and --help print the usage to a person (-h was once taken for an
// option that needs a value), and never to a client: when fd 1 is a
// socket, the usage goes to the log and the socket gets nothing.
func TestHelp(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=help")
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), "usage: virtuald ") {
		t.Errorf("virtuald -h: %q, %v", out, err)
	}
	client, server, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cmd = exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=help-shielded")
	cmd.Stdout, cmd.Stderr = server, server
	err = cmd.Run()
	server.Close()
	got, _ := io.ReadAll(client)
	if err != nil || len(got) != 0 {
		t.Errorf("virtuald --help with a socket as fds 1-2: %v, %d bytes to it: %q", err, len(got), got)
	}
}

// socketPair returns the two ends of a connected Unix stream socket.
func socketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "client"), os.NewFile(uintptr(fds[1]), "server"), nil
}
