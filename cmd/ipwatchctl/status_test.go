package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/ipc/server"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// fixedStatus is a status with one of everything the table shows.
func fixedStatus() *admin.Status {
	loaded := time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)
	return &admin.Status{
		Version: "v1.0.0", UptimeSeconds: 3725, BPF: "on", Shedding: "on", ShedLimited: 3, NetlinkResyncs: 2,
		Queries: admin.QueryCounts{OK: 1200, Stale: 3, Racy: 2, Unknown: 1, Error: 0},
		Confs: []admin.ConfStatus{{
			Path: "/etc/virtuald/conf.ftp", Generation: 7, LoadedAt: loaded, Adopted: "given with -conf; named by a service that starts virtuald",
			Counts: admin.StateCounts{Live: 3, Absent: 6, Invalid: 1}, More: 4, ProblemsMore: 2, CheckedAt: loaded.Add(time.Minute),
			Problems: []string{`/etc/virtuald/conf.ftp:9: key "10.0.0.300" is not an address, a prefix or default`,
				`/etc/virtuald/conf.ftp:2: 2001:db8::10: /usr/sbin/in.ftpd (ftp at /etc/inetd.conf:3) cannot start in /virtual/b: /usr/sbin/in.ftpd exists but shared libraries it needs are missing inside the root: libaudit.so.1 (needed by /lib/x86_64-linux-gnu/libpam.so.0)`},
			Services: []admin.ServiceStatus{
				{From: "/etc/inetd.conf:3", SuperServer: "inetd", Name: "ftp", Program: "/usr/sbin/in.ftpd", Args: []string{"in.ftpd", "-l"}, Transport: "tcp", Port: 21, Isolate: "all"},
				{From: "/etc/systemd/system/virtuald-ftps.service", SuperServer: "systemd", Name: "virtuald-ftps.socket", Program: "/usr/sbin/in.ftpd", Args: []string{"in.ftpd", "-l"}, Accept: true, Transport: "tcp", Port: 990, Address: "192.0.2.10", Isolate: "mount,pid"},
			},
			ConnectionsCounted: "TCP connections the kernel accepted on the entry's addresses on ports 21 (ftp), 990 (virtuald-ftps.socket), by the entry that serves the address now, kept while an address is away",
			ProgramsNotReady:   1, ProgramsCheckedAt: loaded.Add(2 * time.Minute),
			Entries: []admin.EntryStatus{
				{Key: "192.0.2.10", Line: 1, Root: "/virtual/a", User: "ftp1", Group: "ftp1", Isolate: "mount,pid,uts", Hostname: "a.example", State: admin.StateLive,
					Addresses: []admin.AddressStatus{{Address: "192.0.2.10", Interface: "eth0", Label: "eth0:1", Live: true}}, Connections: 812, Resolved: 800,
					Limits: "max=16 rate=50/s per-source=4", Refused: 93, Shed: 4017,
					Ports:    []admin.PortCount{{Port: 21, Services: []string{"ftp"}, Connections: 800}, {Port: 990, Services: []string{"virtuald-ftps.socket"}, Connections: 12}},
					Programs: []admin.ProgramStatus{{Program: "/usr/sbin/in.ftpd", Services: []string{"ftp at /etc/inetd.conf:3", "virtuald-ftps.socket at /etc/systemd/system/virtuald-ftps.service"}, State: admin.ProgramReady}}},
				{Key: "2001:db8::10", Line: 2, Root: "/virtual/b", User: "2001", Isolate: "mount,pid", State: admin.StateLive,
					Addresses: []admin.AddressStatus{{Address: "2001:db8::10", Interface: "eth0", Live: false}, {Address: "2001:db8::10", Interface: "eth1", Live: true}}, Connections: 40, Resolved: 40,
					Programs: []admin.ProgramStatus{{Program: "/usr/sbin/in.ftpd", Services: []string{"ftp at /etc/inetd.conf:3"}, State: admin.ProgramLibrariesMissing,
						Reason: "/usr/sbin/in.ftpd exists but shared libraries it needs are missing inside the root: libaudit.so.1 (needed by /lib/x86_64-linux-gnu/libpam.so.0)"}}},
				{Key: "192.0.2.11", Line: 3, Root: "/virtual/c", Isolate: "none", State: admin.StateAbsent, Addresses: []admin.AddressStatus{},
					Warning: "no user= and isolate=none: the service runs as root inside /virtual/c with nothing but a chroot, which root can leave; give the entry isolate=all (the default) or user= (and group=) to confine it"},
				{Key: "192.0.2.12", Line: 4, Root: "/virtual/d", State: admin.StateInvalid, Reason: "/virtual/d is writable by group or others (mode 0777)",
					Addresses: []admin.AddressStatus{{Address: "192.0.2.12", Interface: "eth0", Label: "eth0", Live: true}}, Connections: 5},
				{Key: "10.20.0.0/24", Line: 5, Root: "/virtual/pool", Group: "www", Isolate: "mount,pid", State: admin.StateAbsent, Addresses: []admin.AddressStatus{}},
				{Key: "default", Line: 6, Root: "/", Isolate: "mount,pid", State: admin.StateLive,
					Addresses: []admin.AddressStatus{{Address: "127.0.0.1", Interface: "lo", Label: "lo", Live: true}}, Connections: 3, Resolved: 360,
					Limits: "rate=10/m"},
			},
		}, {
			Path: "/etc/virtuald/conf.pop", Error: "/etc/virtuald/conf.pop: cannot open: no such file or directory", Adopted: "asked about by virtuald (pid 4242)",
			Problems: []string{}, Entries: []admin.EntryStatus{}, Services: []admin.ServiceStatus{},
		}},
		Unmapped:        []admin.Unmapped{{Address: "198.51.100.7", Interface: "eth1", Connections: 17}},
		ServiceProblems: []admin.ServiceProblem{{From: "/etc/inetd.conf:7", Reason: "virtuald: unknown option -acept"}},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		testbed.Must(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n got:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestStatusTableGolden(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, fixedStatus(), admin.StatusQuery{})
	golden(t, "status.txt", b.Bytes())
}

// Per connection, an entry's rate= is enforced before the super-server
// accepts only when the kernel sheds; status says which it is. max= and
// per-source= need no line: virtuald enforces them in both modes.
func TestStatusRateLines(t *testing.T) {
	for _, c := range []struct {
		shedding string
		want     string
	}{
		{"on", "192.0.2.10 (line 1): rate=50/s is enforced in the kernel for ftp: 4017 shed\n"},
		{"off", "192.0.2.10 (line 1): rate=50/s is enforced for ftp by each virtuald the super-server started, not before: shedding is off"},
	} {
		st := fixedStatus()
		st.Shedding = c.shedding
		var b bytes.Buffer
		printStatus(&b, st, admin.StatusQuery{})
		if !strings.Contains(b.String(), c.want) {
			t.Errorf("shedding %s: no %q in\n%s", c.shedding, c.want, b.String())
		}
		if strings.Contains(b.String(), "max=16") && strings.Contains(b.String(), "enforced by virtuald -accept only") {
			t.Errorf("shedding %s: status says max= is accept mode's only", c.shedding)
		}
	}
}

func TestStatusJSONGolden(t *testing.T) {
	b, _ := json.MarshalIndent(fixedStatus(), "", "  ")
	golden(t, "status.json", append(b, '\n'))
}

// The contract of status -json (the README's "status -json is a contract
// for scripts"), checked on what a real daemon says through the real
// command: every field it names, at every level.
func TestStatusJSONContract(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	good := roots.Root("good", "")
	bad := roots.Root("bad", "")
	testbed.Must(t, os.Chmod(bad, 0o777))
	conf := roots.WriteConf("conf", "127.0.0.1 "+good, "192.0.2.99 "+bad, "10.0.0.0/8 "+good, "default "+good)
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	ipwatchdtest.StartDaemon(t, sock, conf)
	code, out, _ := runCtl("-socket", sock, "status", "-json")
	if code != 0 {
		t.Fatalf("status -json: exit %d: %s", code, out)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	has := func(where string, m map[string]any, keys ...string) {
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%s has no %q: %v", where, k, m)
			}
		}
	}
	has("status", st, "version", "uptime_seconds", "bpf", "confs", "unmapped")
	confs := st["confs"].([]any)
	if len(confs) != 1 {
		t.Fatalf("confs: %v", confs)
	}
	c := confs[0].(map[string]any)
	has("conf", c, "path", "generation", "loaded_at", "error", "entries")
	entries := c["entries"].([]any)
	states := map[string]string{}
	for _, e := range entries {
		e := e.(map[string]any)
		has("entry", e, "key", "root", "user", "group", "state", "reason", "addresses", "connections", "resolved")
		states[e["key"].(string)] = e["state"].(string)
	}
	want := map[string]string{"127.0.0.1": "live", "192.0.2.99": "invalid", "10.0.0.0/8": "absent", "default": "live"}
	for k, s := range want {
		if states[k] != s {
			t.Errorf("entry %s: state %q, want %q", k, states[k], s)
		}
	}
	if _, ok := st["unmapped"].([]any); !ok {
		t.Errorf("unmapped is not a list: %v", st["unmapped"])
	}
	for _, u := range st["unmapped"].([]any) {
		has("unmapped", u.(map[string]any), "address", "interface", "connections")
	}
}

// reload waits for the daemon to reload and prints each file's new
// generation, or the error and the generation kept (exit 1).
func TestReload(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	conf := roots.WriteConf("conf", "127.0.0.1 "+roots.Root("good", ""))
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	ipwatchdtest.StartDaemon(t, sock, conf)
	testbed.Must(t, os.WriteFile(conf, []byte("127.0.0.1 /\n10.0.0.1 /\n"), 0o644))
	code, out, _ := runCtl("-socket", sock, "reload")
	if code != 0 || !regexpMatch(`^`+conf+`: generation [2-9]\n$`, out) {
		t.Errorf("reload: exit %d: %q", code, out)
	}
	testbed.Must(t, os.WriteFile(conf, []byte("127.0.0.1 /\x00"), 0o644))
	code, out, _ = runCtl("-socket", sock, "reload")
	if code != 1 || !strings.Contains(out, conf+": reload failed, generation") || !strings.Contains(out, "holds a NUL byte") {
		t.Errorf("reload of a broken file: exit %d: %q", code, out)
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// status -all streams every entry, as the same JSON object as status -json
// (in batches on the wire: 2,500 entries are three of them), and the
// filters list exactly what they name.
func TestStatusAllAndFilters(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	good := roots.Root("good", "")
	var lines []string
	for i := 0; i < 2500; i++ {
		lines = append(lines, fmt.Sprintf("10.0.%d.%d %s user=nobody", i/250, i%250, good))
	}
	lines = append(lines, "127.0.0.1 "+good+" user=nobody", "192.0.2.9 relative")
	conf := roots.WriteConf("conf", lines...)
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	ipwatchdtest.StartDaemon(t, sock, conf)

	code, out, errOut := runCtl("-socket", sock, "status", "-json", "-all")
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("status -json -all: exit %d, %v, %s\n%.500s", code, err, errOut, out)
	}
	if len(st.Confs) != 1 || len(st.Confs[0].Entries) != 2502 || st.Confs[0].More != 0 || st.Confs[0].Counts.Live != 1 {
		t.Fatalf("status -json -all: %d confs, %d entries, %d more, counts %+v", len(st.Confs), len(st.Confs[0].Entries), st.Confs[0].More, st.Confs[0].Counts)
	}
	code, out, _ = runCtl("-socket", sock, "status", "-all")
	if code != 0 || strings.Count(out, " absent ") != 2500 || !strings.Contains(out, "192.0.2.9 (line 2502) is invalid") {
		t.Errorf("status -all: exit %d, %d absent rows:\n%.300s", code, strings.Count(out, " absent "), out)
	}

	for _, c := range []struct {
		args []string
		rows int    // entry rows in the table
		more string // the line that says how many more, "" for none
	}{
		{[]string{"status"}, 100, "... and 2402 more entries"},
		{[]string{"status", "-state", "live"}, 1, ""},
		{[]string{"status", "-state", "invalid"}, 1, ""},
		{[]string{"status", "10.0.1.0/24"}, 100, "... and 150 more entries (ipwatchctl status -all 10.0.1.0/24"},
		{[]string{"status", "-limit", "1000", "10.0.1.0/24"}, 250, ""},
		{[]string{"status", "127.0.0.1"}, 1, ""},
	} {
		code, out, _ := runCtl(append([]string{"-socket", sock}, c.args...)...)
		rows := 0
		for _, l := range strings.Split(out, "\n") {
			if regexp.MustCompile(`^  (10\.0\.|127\.0\.0\.1 |192\.0\.2\.9 )`).MatchString(l) && !strings.Contains(l, "(line ") {
				rows++
			}
		}
		if code != 0 || rows != c.rows || (c.more != "") != strings.Contains(out, "more entries") || !strings.Contains(out, c.more) {
			t.Errorf("%q: exit %d, %d rows (want %d), more line %q:\n%.400s", c.args, code, rows, c.rows, c.more, out)
		}
	}
}

// resolve asks the daemon which files it serves and resolves in each with
// the lookup operation: never the status, which at a million entries is
// no question to ask per address. A daemon that fails the test if asked
// for its status stands in for ipwatchd.
func TestResolveNeverAsksStatus(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	conf := roots.WriteConf("conf", "127.0.0.1 "+roots.Root("good", ""))
	sock := filepath.Join(t.TempDir(), "run", "ipwatchd.sock")
	srv, err := server.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	var mu sync.Mutex
	srv.Handler = func(peer unix.Ucred, req [][]byte) [][]byte {
		mu.Lock()
		asked = append(asked, string(req[1]))
		mu.Unlock()
		switch string(req[1]) {
		case ipc.OpConfs:
			return admin.ConfsReply(&admin.ConfList{Confs: []admin.ConfStatus{{Path: conf, Generation: 1}}})
		case ipc.OpLookup:
			return ipc.ResolveReply(&ipc.Answer{Generation: 1, Rule: "exact", Line: 1, Key: "127.0.0.1", Root: roots.Dir + "/good"}, nil)
		}
		return ipc.ErrorReply("not this")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	code, out, errOut := runCtl("-socket", sock, "resolve", "127.0.0.1")
	if code != 0 || !strings.Contains(out, "answered by ipwatchd") {
		t.Errorf("resolve: exit %d: %s %s", code, out, errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(asked, []string{ipc.OpConfs, ipc.OpLookup}) {
		t.Errorf("resolve asked the daemon %q, want confs then lookup", asked)
	}
}
