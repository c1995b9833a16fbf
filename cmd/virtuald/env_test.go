package main

import (
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/buildinfo"
	"golang.org/x/sys/unix"
)

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
		{"the front's word, kept from the service",
			append([]string{"VIRTUALD_FRONT=slow"}, service...),
			environment{front: "slow", service: service}},
		{"systemd's, none passed",
			append([]string{"LISTEN_PID=4242", "LISTEN_FDS=0"}, service...),
			environment{service: service}},
	} {
		got := readEnvironment(c.env, pid)
		if got.socket != c.want.socket || got.front != c.want.front || got.listenFDs != c.want.listenFDs || !slices.Equal(got.service, c.want.service) {
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
