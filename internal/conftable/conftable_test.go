package conftable

import (
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/ipc"
	"golang.org/x/sys/unix"
)

// randomConf is a conf file of keys that overlap in every way the rules
// tell apart, with invalid lines, unreadable keys (which suspend the
// catch-alls) and options.
func randomConf(rng *rand.Rand) string {
	keys := []string{"10.0.0.1", "10.0.0.2", "::ffff:10.0.0.2", "10.0.0.0/24", "10.0.0.0/16", "10.0.0.0/8",
		"0.0.0.0/0", "2001:db8::1", "2001:db8::/64", "2001:db8::/32", "::/0", "default", "10.0.0.1/32",
		"::ffff:10.0.0.0/120", "2001:db8::1/128", "10.0.0.300", "garbage"}
	rests := []string{"/a", "/b user=1 group=2", "/c user=x group=y", "relative", "/d isolate=none", "",
		"/f bogus", "/g hostname=h isolate=all", "/h rate=5/s max=2"}
	var b strings.Builder
	for n := rng.Intn(14); n > 0; n-- {
		if rng.Intn(8) == 0 {
			b.WriteString("# comment\n")
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", keys[rng.Intn(len(keys))], rests[rng.Intn(len(rests))])
	}
	return b.String()
}

// The table answers what the parsed file does, for every file and
// address: the front's search (Lookup is its Go twin) can never pick
// another entry than the daemon would.
func TestLookupAgrees(t *testing.T) {
	rng := rand.New(rand.NewSource(23))
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.1.0.1", "11.0.0.1",
		"2001:db8::1", "2001:db8::2", "2001:db8:1::1", "2001:db9::1", "::ffff:10.0.0.1", "::1"}
	id := ipc.FileID{Dev: 1, Ino: 2, Size: 3, MtimeNs: 4, CtimeNs: 5}
	for i := 0; i < 3000; i++ {
		text := randomConf(rng)
		f, err := conf.Parse("test.conf", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		table := Build(f, id)
		if got, err := IdentityOf(table); err != nil || got != id {
			t.Fatalf("identity %+v, %v", got, err)
		}
		for _, a := range addrs {
			addr := netip.MustParseAddr(a)
			want := f.Lookup(addr)
			got, ok, err := Lookup(table, addr)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				if want.Rule != conf.RuleNone {
					t.Fatalf("file:\n%s\naddress %s: the table has nothing, Lookup has line %d", text, a, want.Entry.Line)
				}
				continue
			}
			if want.Rule == conf.RuleNone || got.Rule != want.Rule || got.Line != want.Entry.Line || got.Key != want.Entry.Key ||
				got.Refused != (want.Err != nil) {
				t.Fatalf("file:\n%s\naddress %s: table %+v, Lookup rule %s %+v err %v", text, a, got, want.Rule, want.Entry, want.Err)
			}
			if !got.Refused && (got.Root != want.Entry.Root || got.Options != want.Entry.Options.String()) {
				t.Fatalf("file:\n%s\naddress %s: table %+v, Lookup %+v", text, a, got, want.Entry)
			}
		}
	}
}

// A table cut short, or grown, or of another format is refused.
func TestLookupRefusesBadTables(t *testing.T) {
	f, err := conf.Parse("test.conf", []byte("10.0.0.1 /a\ndefault /b\n"))
	if err != nil {
		t.Fatal(err)
	}
	table := Build(f, ipc.FileID{})
	addr := netip.MustParseAddr("10.0.0.9")
	bad := map[string][]byte{
		"empty":      nil,
		"header":     table[:HeaderSize],
		"short":      table[:len(table)-1],
		"long":       append(append([]byte{}, table...), 0),
		"magic":      append([]byte("vdtable2"), table[8:]...),
		"many":       func() []byte { b := append([]byte{}, table...); b[49] = 1; return b }(),
		"text":       func() []byte { b := append([]byte{}, table...); b[HeaderSize+RecordSize+24] = 0xff; return b }(),
		"no-nul-end": func() []byte { b := append([]byte{}, table...); b[len(b)-1] = 'x'; return b }(),
	}
	for name, b := range bad {
		if found, ok, err := Lookup(b, addr); err == nil {
			t.Errorf("%s: %+v, %v, no error", name, found, ok)
		}
	}
	if found, ok, err := Lookup(table, addr); err != nil || !ok || found.Root != "/b" {
		t.Fatalf("the good table: %+v, %v, %v", found, ok, err)
	}
}

// writeConf writes a conf file of root's in a directory of root's.
func writeConf(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "virtuald.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Past conf.Racy's window, so that the table may be written.
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	waitUnracy(t, p)
	return p
}

// waitUnracy waits until a read of p is no longer racy (its ctime is
// now, which only time can change).
func waitUnracy(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(conf.RacyUntil(&st)))
}

func trustedDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRefresh(t *testing.T) {
	d := trustedDir(t)
	sock := filepath.Join(d, "run", "ipwatchd.sock") // a stopped daemon's directory is gone
	p := writeConf(t, d, "10.0.0.1 /a\n")
	if err := Refresh(sock, p, idOf(t, p)); err != nil {
		t.Fatal(err)
	}
	table := readTable(t, sock, p)
	if found, ok, _ := Lookup(table, netip.MustParseAddr("10.0.0.1")); !ok || found.Root != "/a" {
		t.Fatalf("%+v %v", found, ok)
	}
	st, err := os.Stat(filepath.Join(Dir(sock), Name(p)))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}

	// The same file again: not written again.
	before := st.ModTime()
	time.Sleep(20 * time.Millisecond)
	if err := Refresh(sock, p, idOf(t, p)); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(Dir(sock), Name(p))); !st.ModTime().Equal(before) {
		t.Error("a fresh table was written again")
	}

	// Edited: a racy file gets no table, a settled one the new one.
	if err := os.WriteFile(p, []byte("10.0.0.1 /b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Refresh(sock, p, idOf(t, p)); err == nil {
		t.Error("a table written for a file changed just now")
	}
	waitUnracy(t, p)
	if err := Refresh(sock, p, idOf(t, p)); err != nil {
		t.Fatal(err)
	}
	table = readTable(t, sock, p)
	if found, _, _ := Lookup(table, netip.MustParseAddr("10.0.0.1")); found.Root != "/b" {
		t.Fatalf("after the edit: %+v", found)
	}
	var cst unix.Stat_t
	unix.Stat(p, &cst)
	if id, _ := IdentityOf(table); id != ipc.FileIDOf(&cst) {
		t.Fatalf("identity %+v, the file's %+v", id, ipc.FileIDOf(&cst))
	}
}

func readTable(t *testing.T, sock, p string) []byte {
	t.Helper()
	table, err := Read(sock, p)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// A local user who can write where the tables would go gets none
// written there, and a table the front must not trust is refused.
func TestTablesUntrusted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes files of another user")
	}
	d := trustedDir(t)
	p := writeConf(t, d, "10.0.0.1 /a\n")

	open := filepath.Join(d, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	if err := Refresh(filepath.Join(open, "ipwatchd.sock"), p, idOf(t, p)); err == nil {
		t.Error("a table written in a directory anyone can write")
	}

	sock := filepath.Join(d, "ipwatchd.sock")
	if err := Refresh(sock, p, idOf(t, p)); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(Dir(sock), Name(p))
	for _, c := range []struct {
		name string
		do   func() error
		undo func() error
	}{
		{"another owner", func() error { return os.Chown(table, 65534, 65534) }, func() error { return os.Chown(table, 0, 0) }},
		{"group-writable", func() error { return os.Chmod(table, 0o664) }, func() error { return os.Chmod(table, 0o644) }},
		{"a second link", func() error { return os.Link(table, table+".link") }, func() error { return os.Remove(table + ".link") }},
		{"a symbolic link", func() error {
			if err := os.Rename(table, table+".real"); err != nil {
				return err
			}
			return os.Symlink(table+".real", table)
		}, func() error { os.Remove(table); return os.Rename(table+".real", table) }},
	} {
		if err := c.do(); err != nil {
			t.Fatal(c.name, err)
		}
		if _, err := Read(sock, p); err == nil {
			t.Errorf("%s: read", c.name)
		}
		if err := c.undo(); err != nil {
			t.Fatal(c.name, err)
		}
		if _, err := Read(sock, p); err != nil {
			t.Fatalf("after %s: %v", c.name, err)
		}
	}
}

// BenchmarkRefresh is what the first connection after a change to the
// file pays, with the daemon down, before it is served: the read, the
// parse, the table's build and its synced write.
func BenchmarkRefresh(b *testing.B) {
	for _, n := range []int{8, 50_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			d := b.TempDir()
			os.Chmod(d, 0o755)
			var text strings.Builder
			for i := 0; i < n; i++ {
				fmt.Fprintf(&text, "10.%d.%d.%d /srv/root%d\n", i>>16&255, i>>8&255, i&255, i%2)
			}
			p := filepath.Join(d, "virtuald.conf")
			if err := os.WriteFile(p, []byte(text.String()), 0o644); err != nil {
				b.Fatal(err)
			}
			old := time.Now().Add(-time.Minute)
			os.Chtimes(p, old, old)
			var st unix.Stat_t
			unix.Stat(p, &st)
			time.Sleep(time.Until(conf.RacyUntil(&st)))
			sock := filepath.Join(d, "ipwatchd.sock")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				os.Remove(filepath.Join(Dir(sock), Name(p)))
				if err := Refresh(sock, p, idOf(b, p)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			fi, _ := os.Stat(filepath.Join(Dir(sock), Name(p)))
			b.ReportMetric(float64(fi.Size())/float64(n), "table-bytes/entry")
		})
	}
}

// A check is recorded only of files that had settled before it began,
// so that their identities name what it read; and read back as written.
func TestRecordReady(t *testing.T) {
	d := trustedDir(t)
	sock := filepath.Join(d, "run", "ipwatchd.sock")
	root := filepath.Join(d, "root")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(root, "bin", "prog")
	if err := os.WriteFile(prog, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rootFd)
	if err := RecordReady(sock, root, "/bin/prog", rootFd, []string{"/bin/prog"}, time.Now()); err == nil {
		t.Error("a check recorded of a file changed as it began")
	}
	waitUnracy(t, prog)
	if err := RecordReady(sock, root, "/bin/prog", rootFd, []string{"/bin/prog", "/bin/none"}, time.Now()); err == nil {
		t.Error("a check recorded of a file that is not there")
	}
	if err := RecordReady(sock, root, "/bin/prog", rootFd, make([]string, MaxChecked+1), time.Now()); err == nil {
		t.Error("a check of more files than the front reads")
	}
	if err := RecordReady(sock, root, "/bin/prog", rootFd, []string{"/bin/prog"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	b, err := ReadCheck(sock, root, "/bin/prog")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(prog, &st); err != nil {
		t.Fatal(err)
	}
	rec := b[CheckHeader:]
	if len(b) != CheckHeader+CheckRecord || string(b[:8]) != CheckMagic || !strings.HasPrefix(string(rec), "/bin/prog\x00") ||
		identityIn(append(make([]byte, 8), rec[CheckPath:]...)) != ipc.FileIDOf(&st) {
		t.Fatalf("check file %q", b)
	}
}

// idOf is the identity of the file at p now.
func idOf(t testing.TB, p string) ipc.FileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return ipc.FileIDOf(&st)
}
