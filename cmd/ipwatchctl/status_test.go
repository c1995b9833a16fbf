package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/testbed"
	"github.com/virtuald/virtuald/internal/testbed/ipwatchdtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// fixedStatus is a status with one of everything the table shows.
func fixedStatus() *ipc.Status {
	loaded := time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)
	return &ipc.Status{
		Version: "v1.0.0", UptimeSeconds: 3725, BPF: "on", NetlinkResyncs: 2,
		Queries: ipc.QueryCounts{OK: 1200, Stale: 3, Racy: 2, Unknown: 1, Error: 0},
		Confs: []ipc.ConfStatus{{
			Path: "/etc/virtuald/conf.ftp", Generation: 7, LoadedAt: loaded,
			Problems: []string{`/etc/virtuald/conf.ftp:9: key "10.0.0.300" is not an address, a prefix or default`},
			Entries: []ipc.EntryStatus{
				{Key: "192.0.2.10", Line: 1, Root: "/virtual/a", User: "ftp1", Group: "ftp1", State: ipc.StateLive,
					Addresses: []ipc.AddressStatus{{Address: "192.0.2.10", Interface: "eth0", Label: "eth0:1", Live: true}}, Connections: 812, Resolved: 800},
				{Key: "2001:db8::10", Line: 2, Root: "/virtual/b", User: "2001", State: ipc.StateLive,
					Addresses: []ipc.AddressStatus{{Address: "2001:db8::10", Interface: "eth0", Live: false}, {Address: "2001:db8::10", Interface: "eth1", Live: true}}, Connections: 40, Resolved: 40},
				{Key: "192.0.2.11", Line: 3, Root: "/virtual/c", State: ipc.StateAbsent, Addresses: []ipc.AddressStatus{},
					Warning: "no user=: the service runs as root inside /virtual/c, and root can leave a chroot; give the entry user= (and group=) to confine it"},
				{Key: "192.0.2.12", Line: 4, Root: "/virtual/d", State: ipc.StateInvalid, Reason: "/virtual/d is writable by group or others (mode 0777)",
					Addresses: []ipc.AddressStatus{{Address: "192.0.2.12", Interface: "eth0", Label: "eth0", Live: true}}, Connections: 5},
				{Key: "10.20.0.0/24", Line: 5, Root: "/virtual/pool", Group: "www", State: ipc.StateAbsent, Addresses: []ipc.AddressStatus{}},
				{Key: "default", Line: 6, Root: "/", State: ipc.StateLive,
					Addresses: []ipc.AddressStatus{{Address: "127.0.0.1", Interface: "lo", Label: "lo", Live: true}}, Connections: 3, Resolved: 360},
			},
		}, {
			Path: "/etc/virtuald/conf.pop", Error: "/etc/virtuald/conf.pop: cannot open: no such file or directory",
			Problems: []string{}, Entries: []ipc.EntryStatus{},
		}},
		Unmapped: []ipc.Unmapped{{Address: "198.51.100.7", Interface: "eth1", Connections: 17}},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(path, got, 0o644)
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
	printStatus(&b, fixedStatus())
	golden(t, "status.txt", b.Bytes())
}

func TestStatusJSONGolden(t *testing.T) {
	b, _ := json.MarshalIndent(fixedStatus(), "", "  ")
	golden(t, "status.json", append(b, '\n'))
}

// The contract of status -json, checked on what a real daemon says
// through the real command: every field of SPEC.md at every level.
func TestStatusJSONContract(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	good := roots.Root("good", "")
	bad := roots.Root("bad", "")
	os.Chmod(bad, 0o777)
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
	os.WriteFile(conf, []byte("127.0.0.1 /\n10.0.0.1 /\n"), 0o644)
	code, out, _ := runCtl("-socket", sock, "reload")
	if code != 0 || !regexpMatch(`^`+conf+`: generation [2-9]\n$`, out) {
		t.Errorf("reload: exit %d: %q", code, out)
	}
	os.WriteFile(conf, []byte("127.0.0.1 /\x00"), 0o644)
	code, out, _ = runCtl("-socket", sock, "reload")
	if code != 1 || !strings.Contains(out, conf+": reload failed, generation") || !strings.Contains(out, "holds a NUL byte") {
		t.Errorf("reload of a broken file: exit %d: %q", code, out)
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }
