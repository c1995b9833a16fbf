package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
)

// condition is one state of a conf file or of its roots, in a file of its
// own, and the address it is asked about.
type condition struct {
	name string
	from string // the test that knows the condition
	conf string
	addr string
	// breakConf, when set, breaks the file once the daemon has loaded it:
	// the daemon then holds a last good copy of it.
	breakConf func(t *testing.T, conf string)
	// noProgram: the root lacks the service's program. resolve judges
	// the entry, not the program, which only the inetd line names: it
	// says served. status learns the program from inetd.conf and says
	// what virtuald and check -program say.
	noProgram bool
}

// conditions lists every condition of a conf file and of its roots that
// the suite knows, each with a conf file of its own.
func conditions(roots *testbed.Roots, whoami string) []condition {
	good := roots.Root("good", whoami)
	second := roots.Root("second", whoami)
	pool := roots.Root("pool", whoami)
	fallback := roots.Root("fallback", whoami)
	n := 0
	conf := func(lines ...string) string {
		n++
		return roots.WriteConf(fmt.Sprintf("agree-%02d.conf", n), lines...)
	}
	cs := []condition{
		{name: "exact entry", from: "TestInetd", conf: conf("192.0.2.1 "+good, "default "+fallback), addr: "192.0.2.1"},
		{name: "exact entry with user=", from: "TestInetd", conf: conf("192.0.2.1 " + good + " user=nobody group=nogroup"), addr: "192.0.2.1"},
		{name: "IPv6 exact entry", from: "TestInetd", conf: conf("2001:db8::1 " + good), addr: "2001:db8::1"},
		{name: "prefix entry", from: "TestInetd", conf: conf("192.0.2.1 "+good, "198.51.100.0/24 "+pool, "default "+fallback), addr: "198.51.100.7"},
		{name: "default entry", from: "TestInetd", conf: conf("192.0.2.1 "+good, "198.51.100.0/24 "+pool, "default "+fallback), addr: "203.0.113.9"},
		{name: "exact before prefix and default, whatever the order", from: "TestLookup", conf: conf("default "+fallback, "192.0.2.0/24 "+pool, "192.0.2.1 "+good), addr: "192.0.2.1"},
		{name: "an address no entry serves, no default", from: "TestInetd", conf: conf("192.0.2.2 " + good), addr: "192.0.2.1"},
		{name: "duplicate key keeps the first", from: "TestParse", conf: conf("192.0.2.1 "+good, "192.0.2.1 "+second), addr: "192.0.2.1"},
		{name: "invalid option: refused, not served by default", from: "TestParse", conf: conf("192.0.2.1 "+good+" usr=ftp", "default "+fallback), addr: "192.0.2.1"},
		{name: "invalid option does not suspend the catch-alls", from: "TestJoinedLinesSuspendCatchAlls", conf: conf("192.0.2.9 "+good+" usr=ftp", "default "+fallback), addr: "192.0.2.1"},
		{name: "root not clean", from: "TestParse", conf: conf("192.0.2.1 "+roots.Dir+"/x/../good", "default "+fallback), addr: "192.0.2.1"},
		{name: "no root directory", from: "TestParse", conf: conf("192.0.2.1", "default "+fallback), addr: "192.0.2.1"},
		{name: "joined line (tab) suspends default", from: "TestJoinedLinesSuspendCatchAlls", conf: conf("192.0.2.9 "+good+"\t192.0.2.1 "+second, "default "+fallback), addr: "192.0.2.1"},
		{name: "joined line (bare CR) suspends a prefix", from: "TestJoinedLinesSuspendCatchAlls", conf: conf("192.0.2.9 "+good+"\r192.0.2.1 "+second, "192.0.2.0/24 "+pool), addr: "192.0.2.1"},
		{name: "bare CR in a comment hides an entry", from: "TestJoinedLinesSuspendCatchAlls", conf: conf("# moved\r192.0.2.1 "+good, "default "+fallback), addr: "192.0.2.1"},
		{name: "exact entry kept beside a joined line", from: "TestJoinedLinesSuspendCatchAlls", conf: conf("192.0.2.9 "+good+" 192.0.2.8 "+second, "192.0.2.1 "+good, "default "+fallback), addr: "192.0.2.1"},
		{name: "unreadable key suspends default", from: "TestUnreadableLineSuspendsCatchAlls", conf: conf("10.0.0.300 "+good, "default "+fallback), addr: "203.0.113.9"},
		{name: "program missing inside the root", from: "TestExecFailures", conf: conf("192.0.2.1 " + roots.Root("no-program", "")), addr: "192.0.2.1", noProgram: true},
	}
	// Every hostile root, behind a default that must not serve it.
	for _, h := range roots.HostileRoots(whoami) {
		cs = append(cs, condition{name: "root: " + h.Name, from: "testbed.HostileRoots", conf: conf("192.0.2.1 "+h.Entry, "default "+fallback), addr: "192.0.2.1"})
	}
	// Every hostile conf file, as the daemon first finds it.
	hostile := roots.HostileConfs(good)
	for _, name := range slices.Sorted(maps.Keys(hostile)) {
		cs = append(cs, condition{name: "conf: " + name, from: "testbed.HostileConfs", conf: hostile[name], addr: "192.0.2.1"})
	}
	// A file the daemon loaded, broken since: it keeps the last good copy.
	for _, b := range []struct {
		name string
		do   func(t *testing.T, p string)
	}{
		{"a NUL byte", func(t *testing.T, p string) { replace(t, p, "192.0.2.1 "+good+"\x00\n") }},
		{"group-writable", func(t *testing.T, p string) { testbed.Must(t, os.Chmod(p, 0o664)) }},
		{"owned by another user", func(t *testing.T, p string) { testbed.Must(t, os.Chown(p, 65534, 65534)) }},
		{"gone", func(t *testing.T, p string) { testbed.Must(t, os.Remove(p)) }},
	} {
		cs = append(cs, condition{name: "loaded, then " + b.name, from: "TestLastGoodCopyKept", conf: conf("192.0.2.1 " + good), addr: "192.0.2.1", breakConf: b.do})
	}
	// A file the daemon loaded whose directory became writable by others
	// since: the file itself is as it was (issue 20 item 6).
	dir := filepath.Join(roots.Dir, "confdir")
	if err := os.Mkdir(dir, 0o755); err == nil {
		n++
		p := filepath.Join(dir, fmt.Sprintf("agree-%02d.conf", n))
		if err := os.WriteFile(p, []byte("192.0.2.1 "+good+"\n"), 0o644); err == nil {
			cs = append(cs, condition{name: "loaded, then its directory writable by others", from: "TestReadChecksTheDirectories", conf: p, addr: "192.0.2.1",
				breakConf: func(t *testing.T, p string) { testbed.Must(t, os.Chmod(filepath.Dir(p), 0o777)) }})
		}
	}
	return cs
}

// replace gives the file at p the content text at once, by rename.
func replace(t *testing.T, p, text string) {
	t.Helper()
	testbed.Must(t, os.WriteFile(p+".new", []byte(text), 0o644))
	testbed.Must(t, os.Rename(p+".new", p))
}

// verdict is what one view says of a connection to an address: served
// from a root, or refused and why.
type verdict struct {
	served string // the root's path; "" when refused
	rule   string // exact, prefix or default, when served and the view says it
	reason string
}

func (v verdict) String() string {
	if v.served != "" {
		return "served from " + v.served + " by the " + v.rule + " rule"
	}
	return fmt.Sprintf("refused: %q", v.reason)
}

// cause is what a refusal names as its cause: the text after its last
// ": ", past the file, line and entry each view names in its own way.
func cause(reason string) string {
	if i := strings.LastIndex(reason, ": "); i >= 0 {
		return reason[i+2:]
	}
	return reason
}

// For every condition of a conf file and of its roots that the suite
// knows, status (its table and its JSON), resolve and a real connection
// through inetd and virtuald give the same verdict, and a refusal's
// reason names the same cause in all of them; with ipwatchd stopped,
// virtuald (reading the file itself) and resolve give the same verdict
// again (issue 12, item 4).
func TestAgree(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := testbed.Binaries(t)
	ns := testbed.NewNetNS(t)
	roots := testbed.NewRoots(t)
	log := testbed.NewSyslog(t, t.TempDir())
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	for _, a := range []string{"192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1"} {
		ns.AddAddr(a)
	}
	cs := conditions(roots, bin["whoami"])

	// virtuald per connection (nowait), and in accept mode (wait), each
	// on a port of its own per condition; -idle-exit, so that the accept
	// mode's processes, one per port, do not all stay.
	modes := []struct {
		name  string
		port  int // of the first condition
		inetd string
	}{
		{"per connection", 7600, "nowait root %s virtuald -socket %s %s /bin/whoami"},
		{"accept mode", 7700, "wait root %s virtuald -accept -idle-exit 1s -socket %s %s /bin/whoami"},
	}
	var inetd []string
	for i, c := range cs {
		for _, m := range modes {
			for _, proto := range []string{"tcp", "tcp6"} {
				inetd = append(inetd, fmt.Sprintf("%d stream %s "+m.inetd, m.port+i, proto, bin["virtuald"], sock, c.conf))
			}
		}
		ipwatchdtest.Settle(t, c.conf)
	}
	// The daemon reads the services from the inetd.conf that inetd runs,
	// and so loads every file at start and checks the program in roots.
	inetdConf := roots.WriteConf("inetd.conf", inetd...)
	daemonArgs := []string{"-socket", sock, "-bpf", "off", "-inetd-conf", inetdConf, "-xinetd-conf", "", "-systemd-units", ""}
	daemon := ns.Start(log, bin["ipwatchd"], daemonArgs...)
	ns.Await("ipwatchd answers", 10*time.Second, func() bool {
		_, err := (admin.Client{Socket: sock}).Confs()
		return err == nil
	})
	for _, c := range cs {
		if c.breakConf != nil {
			c.breakConf(t, c.conf)
		}
	}
	reloaded := time.Now()
	runCtl("-socket", sock, "reload") // some files fail: that is the point
	ns.Await("the programs checked in every root after the reload", 10*time.Second, func() bool {
		st, err := (admin.Client{Socket: sock}).Status(admin.StatusQuery{})
		if err != nil {
			return false
		}
		for _, c := range st.Confs {
			if c.Error == "" && c.Generation > 0 && (c.ProgramsCheckedAt.IsZero() || c.ProgramsCheckedAt.Before(reloaded)) {
				return false
			}
		}
		return true
	})
	ns.Start(log, "inetd", "-d", "-R", "1000000", inetdConf)
	for i := range cs {
		for _, m := range modes {
			ns.WaitListening("tcp", m.port+i)
		}
	}

	connected := make([][]verdict, len(cs)) // by condition and mode
	for i, c := range cs {
		t.Run(c.name, func(t *testing.T) {
			status := statusVerdict(t, sock, c)
			resolved := resolveVerdict(t, sock, c, "answered by ipwatchd")
			for _, m := range modes {
				v := connect(t, ns, log, roots, c, m.port+i)
				connected[i] = append(connected[i], v)
				t.Logf("%s (from %s): virtuald %s %s; status %s; resolve %s", c.conf, c.from, m.name, v, status, resolved)
				agree(t, c, m.name, v, "status", status)
				if c.noProgram {
					agreeNoProgram(t, c, v, resolved)
					continue
				}
				agree(t, c, m.name, v, "resolve", resolved)
			}
		})
	}

	// Without the daemon, virtuald and resolve read the file themselves.
	daemon.Stop()
	for i, c := range cs {
		t.Run("ipwatchd stopped/"+c.name, func(t *testing.T) {
			for j, m := range modes {
				was := connected[i][j]
				if v := connect(t, ns, log, roots, c, m.port+i); v != was {
					t.Errorf("with ipwatchd stopped virtuald %s says %s, with it running %s", m.name, v, was)
				}
			}
			if r := resolveVerdict(t, sock, c, "read from the file"); !c.noProgram {
				agree(t, c, modes[0].name, connected[i][0], "resolve with ipwatchd stopped", r)
			}
		})
	}
}

// agree fails the test unless view's verdict o is virtuald's v: served
// from the same root, or refused for the same cause. A view that names
// no entry and no error of the file says no entry serves the address.
func agree(t *testing.T, c condition, mode string, v verdict, view string, o verdict) {
	t.Helper()
	switch {
	case o.served != v.served, o.rule != "" && o.rule != v.rule:
		t.Errorf("virtuald %s %s, but %s says %s", mode, v, view, o)
	case v.served != "":
	case o.reason == "" && !strings.Contains(v.reason, "no entry for "+c.addr):
		t.Errorf("%s lists no entry for %s, but virtuald %s says %q", view, c.addr, mode, v.reason)
	case o.reason != "" && !strings.Contains(o.reason, cause(v.reason)):
		t.Errorf("virtuald %s refuses for %q, %s for another cause: %q", mode, cause(v.reason), view, o.reason)
	case at(o.reason, c.conf) != "" && at(o.reason, c.conf) != at(v.reason, c.conf):
		t.Errorf("virtuald %s places the cause at %q, %s at %q", mode, at(v.reason, c.conf), view, at(o.reason, c.conf))
	}
}

// at is where a refusal places its cause in the conf file: "FILE: " or
// "FILE:LINE: ", or "" when it names no place in it.
func at(reason, conf string) string {
	return regexp.MustCompile(regexp.QuoteMeta(conf) + `(:\d+)?: `).FindString(reason)
}

// agreeNoProgram: the entry's root is good and its program missing.
// resolve serves the entry; virtuald resolved the same root, and refused
// for the program, as check -program foresees.
func agreeNoProgram(t *testing.T, c condition, v, resolved verdict) {
	t.Helper()
	if resolved.served == "" || v.served != "" {
		t.Errorf("want resolve to serve the entry and virtuald to refuse for the program; virtuald %s, resolve %s", v, resolved)
	}
	code, out, _ := runCtl("check", "-program", "/bin/whoami", c.conf)
	if code != 1 || !strings.Contains(out, cause(v.reason)) {
		t.Errorf("virtuald refuses for %q; check -program says (exit %d):\n%s", cause(v.reason), code, out)
	}
}

var (
	rootNameOf = regexp.MustCompile(`^root=(\S+) `)
	reasonOf   = regexp.MustCompile(`reason=("(?:[^"\\]|\\.)*"|\S+)`)
	ruleOf     = regexp.MustCompile(` rule=(\w+) `)
	resolvedBy = regexp.MustCompile(`^served from (\S+) .*\(line \d+, (\w+) match of \S+; (.*)\)$`)
)

// connect asks the address through inetd and virtuald on port, and reads
// the verdict from what the client got and virtuald's log line for it:
// its root when served, its reason when refused (after it resolved the
// entry, when the exec itself failed).
func connect(t *testing.T, ns *testbed.NetNS, log *testbed.Syslog, roots *testbed.Roots, c condition, port int) verdict {
	t.Helper()
	hostPort := net.JoinHostPort(c.addr, strconv.Itoa(port))
	seen := log.Len()
	got, err := ns.Ask(hostPort)
	if err != nil {
		t.Fatalf("connecting: %v (got %q)", err, got)
	}
	local := "local=" + hostPort + " "
	if m := rootNameOf.FindStringSubmatch(got); m != nil {
		v := verdict{served: filepath.Join(roots.Dir, m[1])}
		// Per connection logs before the exec, accept mode when the service has exited.
		line, ok := log.WaitAfter(seen, 5*time.Second, local, "root="+v.served+" ")
		r := ruleOf.FindStringSubmatch(line)
		if !ok || r == nil || strings.Contains(line, "outcome=refused") {
			t.Fatalf("the client was served from %s; the log says %q", v.served, line)
		}
		v.rule = r[1]
		return v
	}
	if got != "" {
		t.Fatalf("the client got %q: neither the service nor a refusal", got)
	}
	line, ok := log.WaitAfter(seen, 5*time.Second, local, "outcome=refused")
	m := reasonOf.FindStringSubmatch(line)
	if !ok || m == nil {
		t.Fatalf("refused without a reason in the log; log ends:\n%s", log.Tail(5))
	}
	reason := m[1]
	if uq, err := strconv.Unquote(reason); err == nil {
		reason = uq
	}
	return verdict{reason: reason}
}

// statusVerdict reads status for the address, as JSON and as the table,
// and requires the two to agree: the entry serving it in c's file, live
// (served) or invalid (refused, with its reason); none, when the file
// cannot be loaded (its error) or maps nothing to it ("").
func statusVerdict(t *testing.T, sock string, c condition) verdict {
	t.Helper()
	code, out, errOut := runCtl("-socket", sock, "status", "-json", c.addr)
	if code != 0 {
		t.Fatalf("status -json: exit %d: %s", code, errOut)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	var cs *admin.ConfStatus
	for i := range st.Confs {
		if st.Confs[i].Path == c.conf {
			cs = &st.Confs[i]
		}
	}
	if cs == nil {
		t.Fatalf("status does not list %s:\n%s", c.conf, out)
	}
	var fromJSON verdict
	switch {
	case len(cs.Entries) > 1:
		t.Fatalf("status lists %d entries for one address: %+v", len(cs.Entries), cs.Entries)
	case len(cs.Entries) == 0:
		fromJSON.reason = cs.Error
	case cs.Entries[0].State == admin.StateLive && notReady(cs.Entries[0]) != "":
		fromJSON.reason = notReady(cs.Entries[0])
	case cs.Entries[0].State == admin.StateLive:
		fromJSON.served, fromJSON.rule = cs.Entries[0].Root, ruleFor(cs.Entries[0].Key)
	default:
		fromJSON.reason = cs.Entries[0].State + ": " + cs.Entries[0].Reason
	}
	_, table, _ := runCtl("-socket", sock, "status", c.addr)
	if fromTable := tableVerdict(table, c.conf); fromTable != fromJSON {
		t.Errorf("status's table says %s, its JSON %s:\n%s", fromTable, fromJSON, table)
	}
	return fromJSON
}

// notReady is why the service's program cannot start in the entry's
// root, as status says it ("" when it can).
func notReady(e admin.EntryStatus) string {
	for _, p := range e.Programs {
		if p.State != admin.ProgramReady {
			return p.Program + " " + p.State + ": " + p.Reason
		}
	}
	return ""
}

// tableVerdict reads what status's table says of the one entry it lists
// for conf, as statusVerdict reads the JSON.
func tableVerdict(table, conf string) verdict {
	_, block, _ := strings.Cut(table, "\n"+conf+": ")
	block, _, _ = strings.Cut(block, "\n\n")
	lines := strings.Split(block, "\n")
	var v verdict
	for i, l := range lines {
		if e, ok := strings.CutPrefix(l, "  cannot be loaded (virtuald reads the file itself): "); ok {
			v.reason = e
		}
		if !strings.HasPrefix(l, "  KEY ") || i+1 == len(lines) {
			continue
		}
		f := strings.Fields(lines[i+1])
		if len(f) < 5 {
			return verdict{reason: "a table row without its columns: " + lines[i+1]}
		}
		// KEY ROOT USER ISOLATE STATE ...
		f = append(f[:3], f[4:]...)
		if f[3] == admin.StateLive && f[len(f)-1] == admin.ProgramReady {
			return verdict{served: f[1], rule: ruleFor(f[0])}
		}
		if f[3] == admin.StateLive {
			for _, r := range lines[i+2:] {
				if rest, ok := strings.CutPrefix(r, "  "+f[0]+" (line "); ok {
					if _, rest, ok = strings.Cut(rest, "): "); ok {
						prog, rest, _ := strings.Cut(rest, " cannot start (")
						state, why, _ := strings.Cut(rest, "): ")
						return verdict{reason: prog + " " + state + ": " + why}
					}
				}
			}
			return verdict{reason: "live, its program not ready: (no reason under the table)"}
		}
		for _, r := range lines[i+2:] {
			if _, why, ok := strings.Cut(r, ") is "+f[3]+": "); ok && strings.HasPrefix(r, "  "+f[0]+" (line ") {
				return verdict{reason: f[3] + ": " + why}
			}
		}
		return verdict{reason: f[3] + ": (no reason under the table)"}
	}
	return v
}

// ruleFor is the rule by which an entry of key serves an address.
func ruleFor(key string) string {
	switch {
	case key == "default":
		return "default"
	case strings.Contains(key, "/"):
		return "prefix"
	}
	return "exact"
}

// resolveVerdict is what resolve -conf says of the address: served from
// a root by a rule (exit 0), answered where source says, or refused and
// why (exit 1).
func resolveVerdict(t *testing.T, sock string, c condition, source string) verdict {
	t.Helper()
	code, out, errOut := runCtl("-socket", sock, "resolve", "-conf", c.conf, c.addr)
	prefix := c.conf + ": " + c.addr + ": "
	rest, ok := strings.CutPrefix(strings.TrimSuffix(out, "\n"), prefix)
	switch {
	case !ok || strings.Contains(rest, "\n"):
		t.Fatalf("resolve: exit %d: %q%s, want one line starting %q", code, out, errOut, prefix)
	case code == 0:
		m := resolvedBy.FindStringSubmatch(rest)
		if m == nil || !strings.HasPrefix(m[3], source) {
			t.Fatalf("resolve: %q, want served from a root by a rule, %s", out, source)
		}
		return verdict{served: m[1], rule: m[2]}
	case code == 1 && strings.HasPrefix(rest, "refused"):
		return verdict{reason: rest}
	}
	t.Fatalf("resolve: exit %d: %q", code, out)
	return verdict{}
}
