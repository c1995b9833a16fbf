package daemon

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
)

// millionConf writes a conf of 1,000,000 entries: fillers served from /
// (valid, absent), 3 whose text is invalid, 2 whose root does not exist,
// 3 lines that cannot be read, and the loopback addresses (live) last.
func millionConf(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < 1_000_000-7; i++ {
		fmt.Fprintf(&b, "10.%d.%d.%d /\n", i>>16&255, i>>8&255, i&255)
	}
	b.WriteString("10.255.0.1 relative\n10.255.0.2 /a/../b\n10.255.0.3 / bogus=1\n10.255.0.4 /no/such/root\n10.255.0.5 /no/such/root\n")
	b.WriteString("10.0.0.300 /bad\n10.0.0.301 /bad\n10.0.0.302 /bad\n127.0.0.1 /\n::1 /\n")
	p := filepath.Join(t.TempDir(), "conf")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// At a million entries, what an operator types first stays small and
// quick: counts by state, the live and invalid entries up to the limit,
// the problems up to it, and how many more there are. Filters list
// exactly what is asked for.
func TestStatusAtAMillionEntries(t *testing.T) {
	p := millionConf(t)
	settle(t, p)
	d, _ := startDaemon(t, []string{p})
	d.ReloadAll()
	for deadline := time.Now().Add(time.Minute); d.confs.get(p).checked.Load() == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the validator did not finish its pass")
		}
	}

	st := d.Status(admin.StatusQuery{})
	b, _ := json.Marshal(st)
	cs := st.Confs[0]
	t.Logf("summary: %d bytes, counts %+v, %d listed, %d more", len(b), cs.Counts, len(cs.Entries), cs.More)
	if len(b) > 1<<20 {
		t.Errorf("the summary is %d bytes, want < 1 MiB", len(b))
	}
	if cs.Counts != (admin.StateCounts{Live: 2, Invalid: 5, Absent: 1_000_000 - 7}) {
		t.Errorf("counts %+v: want 2 live, 5 invalid, the rest absent", cs.Counts)
	}
	if len(cs.Entries) != 7 || cs.More != 0 || len(cs.Problems) != 6 || cs.Entries[0].Key != "127.0.0.1" || cs.Entries[6].Reason == "" {
		t.Errorf("the summary lists %d entries (%d more) and %d problems: want the 2 live ones first, the 5 invalid ones with reasons, and 6 problems", len(cs.Entries), cs.More, len(cs.Problems))
	}

	for _, c := range []struct {
		q      admin.StatusQuery
		listed int
		more   int
		first  string
	}{
		{admin.StatusQuery{Match: netip.MustParsePrefix("127.0.0.1/32")}, 1, 0, "127.0.0.1"},
		{admin.StatusQuery{Match: netip.MustParsePrefix("10.0.1.0/24")}, 100, 156, "10.0.1.0"},
		{admin.StatusQuery{Match: netip.MustParsePrefix("10.0.1.0/24"), Limit: 300}, 256, 0, "10.0.1.0"},
		{admin.StatusQuery{State: admin.StateLive}, 2, 0, "127.0.0.1"},
		{admin.StatusQuery{State: admin.StateAbsent, Limit: 5}, 5, 1_000_000 - 7 - 5, "10.0.0.0"},
		{admin.StatusQuery{State: admin.StateInvalid}, 5, 0, "10.255.0.1"},
	} {
		cs := d.Status(c.q).Confs[0]
		if len(cs.Entries) != c.listed || cs.More != c.more || cs.Entries[0].Key != c.first {
			t.Errorf("%+v: %d listed (first %s), %d more; want %d, %s, %d", c.q, len(cs.Entries), cs.Entries[0].Key, cs.More, c.listed, c.first, c.more)
		}
	}

	// Every entry, streamed: in batches, none large.
	var entries, frames, largest int
	err := d.StreamStatus(admin.StatusQuery{All: true}, func(f [][]byte) error {
		frames++
		if n := len(f[len(f)-1]); n > largest {
			largest = n
		}
		if string(f[0]) == ipc.ReplyEntries {
			var es []admin.EntryStatus
			if err := json.Unmarshal(f[2], &es); err != nil {
				return err
			}
			entries += len(es)
		}
		return nil
	})
	t.Logf("streamed: %d entries in %d frames, the largest %d bytes", entries, frames, largest)
	if err != nil || entries != 1_000_000 || largest > 1<<20 {
		t.Errorf("stream: %v, %d entries, largest frame %d bytes; want 1,000,000 entries in frames < 1 MiB", err, entries, largest)
	}
}
