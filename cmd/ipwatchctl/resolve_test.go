package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
)

// resolve agrees with what virtuald does, for every rule: exact, prefix,
// default, invalid and none; read from the file and answered by the daemon.
func TestResolveAgreesWithVirtuald(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := testbed.Binaries(t)
	ns := testbed.NewNetNS(t)
	roots := testbed.NewRoots(t)
	log := testbed.NewSyslog(t, t.TempDir())
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "198.51.100.5", "203.0.113.5", "192.0.2.3"} {
		ns.AddAddr(a)
	}
	bad := roots.Root("bad", bin["whoami"])
	chmod777(t, bad)
	withDefault := roots.WriteConf("conf-a",
		"192.0.2.1 "+roots.Root("exact", bin["whoami"]),
		"192.0.2.2 "+bad,
		"198.51.100.0/24 "+roots.Root("prefix", bin["whoami"]),
		"default "+roots.Root("fallback", bin["whoami"]))
	noDefault := roots.WriteConf("conf-b", "192.0.2.1 "+roots.Root("only", bin["whoami"]))
	ns.Start(log, "inetd", "-d", "-R", "1000000", roots.WriteConf("inetd.conf",
		"7400 stream tcp nowait root "+bin["virtuald"]+" virtuald "+withDefault+" /bin/whoami",
		"7401 stream tcp nowait root "+bin["virtuald"]+" virtuald "+noDefault+" /bin/whoami"))
	ns.WaitListening("tcp", 7400)
	ns.WaitListening("tcp", 7401)

	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	ipwatchdtest.StartDaemon(t, sock, withDefault, noDefault)

	served := regexp.MustCompile(`: served from (\S+) .*\(line (\d+), (\w+) match`)
	ruleOf := regexp.MustCompile(`rule=(\w+)`)
	cases := []struct {
		conf, port, addr, rule string
	}{
		{withDefault, "7400", "192.0.2.1", "exact"},
		{withDefault, "7400", "198.51.100.5", "prefix"},
		{withDefault, "7400", "203.0.113.5", "default"},
		{withDefault, "7400", "192.0.2.2", "exact"}, // invalid: refused
		{noDefault, "7401", "192.0.2.3", "none"},    // no entry: refused
	}
	for _, c := range cases {
		got, err := ns.Ask(c.addr + ":" + c.port)
		if err != nil {
			t.Fatal(err)
		}
		line, ok := log.WaitFor(5*time.Second, "local="+c.addr+":"+c.port+" ")
		if !ok {
			t.Fatalf("%s: no log line", c.addr)
		}
		virtualdRule := "none"
		if m := ruleOf.FindStringSubmatch(line); m != nil {
			virtualdRule = m[1]
		}
		for _, source := range []struct {
			name string
			args []string
		}{
			{"file", []string{"-socket", sock + ".absent", "resolve", "-conf", c.conf, c.addr}},
			{"daemon", []string{"-socket", sock, "resolve", "-conf", c.conf, c.addr}},
		} {
			code, out, errOut := runCtl(source.args...)
			if !strings.Contains(out, map[string]string{"file": "read from the file", "daemon": "answered by ipwatchd"}[source.name]) && code == 0 {
				t.Errorf("%s via %s: the answer does not say where it came from: %q", c.addr, source.name, out)
			}
			m := served.FindStringSubmatch(out)
			switch {
			case got == "": // virtuald refused
				if code != 1 || m != nil || !strings.Contains(out, "refused") {
					t.Errorf("%s via %s: virtuald refused, resolve says (exit %d): %s%s", c.addr, source.name, code, out, errOut)
				}
			default:
				root := strings.TrimPrefix(strings.Fields(got)[0], "root=")
				if code != 0 || m == nil || filepath.Base(m[1]) != root || m[3] != c.rule {
					t.Errorf("%s via %s: virtuald served from %s, resolve says (exit %d): %s", c.addr, source.name, root, code, out)
				}
			}
			if virtualdRule != c.rule && !(c.rule == "none" && virtualdRule == "none") {
				t.Errorf("%s: virtuald logged rule %s, want %s: %s", c.addr, virtualdRule, c.rule, line)
			}
		}
	}
}

func chmod777(t *testing.T, p string) {
	t.Helper()
	if err := os.Chmod(p, 0o777); err != nil {
		t.Fatal(err)
	}
}

// resolve names user= and group= as the entry gives them: no empty group=
// beside a user with its primary group.
func TestResolveCredentials(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	root := roots.Root("r", "")
	conf := roots.WriteConf("conf", "192.0.2.1 "+root+" user=nobody", "192.0.2.2 "+root+" user=nobody group=nogroup", "192.0.2.3 "+root)
	for addr, want := range map[string]string{
		"192.0.2.1": "served from " + root + " as user=nobody (",
		"192.0.2.2": "served from " + root + " as user=nobody group=nogroup (",
		"192.0.2.3": "served from " + root + " (",
	} {
		if code, out, _ := runCtl("-socket", filepath.Join(t.TempDir(), "none"), "resolve", "-conf", conf, addr); code != 0 || !strings.Contains(out, want) {
			t.Errorf("resolve %s: exit %d: %q, want %q", addr, code, out, want)
		}
	}
}
