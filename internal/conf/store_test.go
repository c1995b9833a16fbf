package conf

import (
	"fmt"
	"math/rand"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// The compact store must give back each entry exactly as the line reads
// when parsed on its own (the path Find takes, with strings of its own),
// and its indexes (EntryAt, Refusals, Refused) must agree with it.
func TestStoreGivesEntriesBack(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for n := 0; n < 2000; n++ {
		text := randomConf(rng)
		if n%3 == 0 {
			text = strings.ReplaceAll(text, " ", " \t ") + "10.9.9.9\t/opt/x\tgroup=7 \t user=ann # note\r\n"
		}
		f := mustParse(t, text)
		lineText := strings.Split(text, "\n")
		refused := 0
		for i, got := range f.All() {
			l := lines{no: got.Line, fields: splitFields([]byte(lineText[got.Line-1]), nil)}
			want, err := l.key()
			if err != nil {
				t.Fatalf("line %d %q: kept, but its key does not read: %v", got.Line, lineText[got.Line-1], err)
			}
			l.rest(&want)
			if !sameEntry(got, &want) {
				t.Fatalf("file:\n%s\nentry %d:\n got %+v\nwant %+v", text, i, got, &want)
			}
			if at := f.EntryAt(got.Line); !sameEntry(at, got) {
				t.Fatalf("EntryAt(%d) = %+v, want %+v", got.Line, at, got)
			}
			if f.Refusal(got) != nil {
				refused++
			}
		}
		var fromIndex []int
		for e := range f.Refusals() {
			fromIndex = append(fromIndex, e.Line)
		}
		if len(fromIndex) != refused || f.Refused() != refused {
			t.Fatalf("file:\n%s\n%d entries refused, Refusals gave lines %v, Refused says %d", text, refused, fromIndex, f.Refused())
		}
		if f.EntryAt(0) != nil || f.EntryAt(len(lineText)+1) != nil {
			t.Fatal("EntryAt found an entry on a line that has none")
		}
	}
}

func sameEntry(a, b *Entry) bool {
	if a == nil || b == nil || (a.Err == nil) != (b.Err == nil) || a.Err != nil && a.Err.Error() != b.Err.Error() {
		return false
	}
	x, y := *a, *b
	x.Err, y.Err = nil, nil
	return reflect.DeepEqual(x, y)
}

// BenchmarkHeapMillion reports what a parsed conf file of a million
// entries keeps on the heap: what ipwatchd holds per file it serves.
func BenchmarkHeapMillion(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 1_000_000; i++ {
		fmt.Fprintf(&sb, "10.%d.%d.%d /virtual/site%d\n", i>>16&255, i>>8&255, i&255, i)
	}
	text := []byte(sb.String())
	sb = strings.Builder{}
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f := mustParse(b, string(text))
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(f.Len()), "heap-bytes/entry")
		runtime.KeepAlive(f)
	}
}
