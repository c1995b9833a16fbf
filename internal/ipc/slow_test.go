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

	at := m.Begin()
	if !at.Ask || at.Probe {
		t.Fatal("no mark: must ask, with the whole timeout")
	}
	at.Done(true) // it was slow
	var st unix.Stat_t
	if err := unix.Stat(m.Path(), &st); err != nil || st.Uid != 0 {
		t.Fatalf("no root-owned mark after a slow answer: %v", err)
	}
	if at := m.Begin(); at.Ask || !strings.Contains(at.Why, "asked again after") {
		t.Fatalf("while the mark stands: %+v", at)
	}

	markUntil(t, m.Path(), time.Now().Add(-time.Second), 0) // expired
	probe := m.Begin()
	if !probe.Ask || !probe.Probe {
		t.Fatalf("an expired mark: one connection must ask again, briefly: %+v", probe)
	}
	if at := m.Begin(); at.Ask || !strings.Contains(at.Why, "another connection") {
		t.Fatalf("while one connection probes: %+v", at)
	}
	probe.Done(true) // still slow: held again
	if m.Begin().Ask {
		t.Fatal("a probe that found the daemon slow did not renew the mark")
	}
	markUntil(t, m.Path(), time.Now().Add(-time.Second), 0)
	m.Begin().Done(false) // it answered
	if _, err := os.Stat(m.Path()); !os.IsNotExist(err) {
		t.Fatalf("the mark stays after the daemon answered: %v", err)
	}

	// Not root's, or writable by others: not believed.
	markUntil(t, m.Path(), time.Now().Add(time.Hour), 1000)
	if !m.Begin().Ask {
		t.Error("a mark owned by uid 1000 was believed")
	}
	markUntil(t, m.Path(), time.Now().Add(time.Hour), 0)
	testbed.Must(t, os.Chmod(m.Path(), 0o666))
	if !m.Begin().Ask {
		t.Error("a mark writable by others was believed")
	}
}

func TestSlowMemo(t *testing.T) {
	var m SlowMemo
	at := m.Begin()
	if !at.Ask || at.Probe {
		t.Fatal("must ask first, with the whole timeout")
	}
	at.Done(true)
	if m.Begin().Ask {
		t.Fatal("asked while held slow")
	}
	m.until = time.Now().Add(-time.Millisecond)
	probe := m.Begin()
	if !probe.Ask || !probe.Probe {
		t.Fatal("no probe after the hold")
	}
	if m.Begin().Ask {
		t.Fatal("two probes at once")
	}
	probe.Done(false)
	if !m.Begin().Ask {
		t.Fatal("not asked after the daemon answered")
	}
}
