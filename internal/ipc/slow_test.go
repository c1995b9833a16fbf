package ipc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func markUntil(t *testing.T, path string, until time.Time, uid int) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, until, until); err != nil {
		t.Fatal(err)
	}
}

// The mark beside the socket: a slow daemon is marked by the first
// virtuald that waited for it; while the mark stands nobody asks; once it
// has expired exactly one connection asks again, and removes it when the
// daemon answers. A mark that root did not make is not believed.
func TestSlowMark(t *testing.T) {
	testbed.RequirePrivileges(t) // the mark is root's
	sock := filepath.Join(t.TempDir(), "ipwatchd.sock")
	m := MarkFor(sock)

	ask, done, _ := m.Begin()
	if !ask {
		t.Fatal("no mark: must ask")
	}
	done(true) // it was slow
	var st unix.Stat_t
	if err := unix.Stat(m.Path(), &st); err != nil || st.Uid != 0 {
		t.Fatalf("no root-owned mark after a slow answer: %v", err)
	}
	if ask, _, why := m.Begin(); ask || !strings.Contains(why, "asked again after") {
		t.Fatalf("while the mark stands: ask=%v why=%q", ask, why)
	}

	markUntil(t, m.Path(), time.Now().Add(-time.Second), 0) // expired
	ask, probe, _ := m.Begin()
	if !ask {
		t.Fatal("an expired mark: one connection must ask again")
	}
	if ask, _, why := m.Begin(); ask || !strings.Contains(why, "another connection") {
		t.Fatalf("while one connection probes: ask=%v why=%q", ask, why)
	}
	probe(true) // still slow: held again
	if ask, _, _ := m.Begin(); ask {
		t.Fatal("a probe that found the daemon slow did not renew the mark")
	}
	markUntil(t, m.Path(), time.Now().Add(-time.Second), 0)
	_, probe, _ = m.Begin()
	probe(false) // it answered
	if _, err := os.Stat(m.Path()); !os.IsNotExist(err) {
		t.Fatalf("the mark stays after the daemon answered: %v", err)
	}

	// Not root's, or writable by others: not believed.
	markUntil(t, m.Path(), time.Now().Add(time.Hour), 1000)
	if ask, _, _ := m.Begin(); !ask {
		t.Error("a mark owned by uid 1000 was believed")
	}
	markUntil(t, m.Path(), time.Now().Add(time.Hour), 0)
	os.Chmod(m.Path(), 0o666)
	if ask, _, _ := m.Begin(); !ask {
		t.Error("a mark writable by others was believed")
	}
}

func TestSlowMemo(t *testing.T) {
	var m SlowMemo
	ask, done, _ := m.Begin()
	if !ask {
		t.Fatal("must ask first")
	}
	done(true)
	if ask, _, _ := m.Begin(); ask {
		t.Fatal("asked while held slow")
	}
	m.until = time.Now().Add(-time.Millisecond)
	ask, probe, _ := m.Begin()
	if !ask {
		t.Fatal("no probe after the hold")
	}
	if ask, _, _ := m.Begin(); ask {
		t.Fatal("two probes at once")
	}
	probe(false)
	if ask, _, _ := m.Begin(); !ask {
		t.Fatal("not asked after the daemon answered")
	}
}
