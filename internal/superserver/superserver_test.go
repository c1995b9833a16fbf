package superserver

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// install copies the tree src into a fresh directory with the modes root
// gives its configuration (files 0644, directories 0755), whatever the
// checkout's umask, and returns the copy. Symbolic links are copied as
// links.
func install(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "etc")
	err := filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		switch {
		case info.IsDir():
			return os.Mkdir(to, 0o755)
		case info.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// write writes one file of a test's configuration, 0644.
func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// check compares what Find found with what a test wants, paths in From
// and Problem.From relative to dir.
func check(t *testing.T, dir string, got []Service, problems []Problem, want []Service, wantProblems []Problem) {
	t.Helper()
	for i := range got {
		got[i].From = strings.TrimPrefix(got[i].From, dir+"/")
	}
	for i := range problems {
		problems[i].From = strings.TrimPrefix(problems[i].From, dir+"/")
	}
	if len(got) != len(want) {
		t.Errorf("found %d services, want %d:", len(got), len(want))
	}
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			t.Errorf("missing %+v", want[i])
		case i >= len(want):
			t.Errorf("extra %+v", got[i])
		case !reflect.DeepEqual(got[i], want[i]):
			t.Errorf("service %d:\n got  %+v\n want %+v", i, got[i], want[i])
		}
	}
	if !reflect.DeepEqual(problems, wantProblems) {
		t.Errorf("problems:\n got  %q\n want %q", problems, wantProblems)
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

var netipZero netip.Addr

// Every example the project ships is understood: the inetd lines, the
// accept-mode socket and service, and the per-connection template (with
// the Accept=yes socket its comment asks for).
func TestDistExamples(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"inetd.conf", "virtuald-ftp.socket", "virtuald-ftp.service", "virtuald@.service"} {
		data, err := os.ReadFile(filepath.Join("../../dist/examples", name))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name), string(data))
	}
	write(t, filepath.Join(dir, "virtuald.socket"), "[Socket]\nListenStream=2121\nAccept=yes\n")
	got, problems := Find(Sources{InetdConf: filepath.Join(dir, "inetd.conf"), SystemdDirs: []string{dir}, Services: "testdata/services"})
	ftpd := []string{"/usr/sbin/in.ftpd", "-l"}
	popd := []string{"/usr/sbin/in.pop3d"}
	tftpd := []string{"/usr/sbin/in.tftpd", "-s", "-u", "tftp", "/srv/tftp"}
	check(t, dir, got, problems, []Service{
		{From: "inetd.conf:9", SuperServer: "inetd", Name: "ftp", Conf: "/etc/virtuald/conf.ftp", Program: ftpd[0], Args: ftpd, Transport: "tcp", Port: 21},
		{From: "inetd.conf:10", SuperServer: "inetd", Name: "ftp", Conf: "/etc/virtuald/conf.ftp", Program: ftpd[0], Args: ftpd, Transport: "tcp", Port: 21},
		{From: "inetd.conf:19", SuperServer: "inetd", Name: "pop3", Conf: "/etc/virtuald/conf.pop", Program: popd[0], Args: popd, Accept: true, Transport: "tcp", Port: 110},
		{From: "inetd.conf:20", SuperServer: "inetd", Name: "pop3", Conf: "/etc/virtuald/conf.pop", Program: popd[0], Args: popd, Accept: true, Transport: "tcp", Port: 110},
		{From: "inetd.conf:24", SuperServer: "inetd", Name: "192.0.2.10:tftp", Conf: "/etc/virtuald/conf.tftp", Program: tftpd[0], Args: tftpd, Transport: "udp", Port: 69, Address: addr("192.0.2.10")},
		{From: "virtuald-ftp.service", SuperServer: "systemd", Name: "virtuald-ftp.socket", Conf: "/etc/virtuald/conf.ftp", Program: ftpd[0], Args: ftpd, Accept: true, Transport: "tcp", Port: 21, Path: systemdPath},
		{From: "virtuald@.service", SuperServer: "systemd", Name: "virtuald.socket", Conf: "/etc/virtuald/conf.ftp", Program: ftpd[0], Args: ftpd, Transport: "tcp", Port: 2121, Path: systemdPath},
	}, nil)
}
