package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
)

// onTheWire puts fields through a frame.
func onTheWire(t testing.TB, fields [][]byte) [][]byte {
	t.Helper()
	frame, err := ipc.Encode(fields...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeFrame(t, frame)
}

func decodeFrame(t testing.TB, frame []byte) [][]byte {
	t.Helper()
	f, err := ipc.Decode(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestStatusQueryRoundTrip(t *testing.T) {
	for _, q := range []StatusQuery{
		{},
		{All: true},
		{State: StateInvalid, Limit: 5},
		{Match: netip.MustParsePrefix("10.0.0.0/8"), State: StateLive},
		{Match: netip.MustParsePrefix("2001:db8::10/128"), All: true},
	} {
		got, err := ParseStatusQuery(decodeFrame(t, q.AppendFrame(nil)))
		if err != nil || got != q {
			t.Errorf("%+v came back as %+v, %v", q, got, err)
		}
	}
}

func TestStatusQueryRefused(t *testing.T) {
	request := func(args ...string) [][]byte {
		return decodeFrame(t, ipc.AppendRequest(nil, ipc.OpStatus, args...))
	}
	for name, req := range map[string][][]byte{
		"another operation":  decodeFrame(t, ipc.AppendRequest(nil, ipc.OpReload)),
		"an unknown state":   request("state=gone"),
		"a limit of nothing": request("limit=0"),
		"no prefix":          request("match=10.0.0.0/33"),
		"an unknown option":  request("sort=key"),
	} {
		if _, err := ParseStatusQuery(req); !errors.Is(err, ipc.ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", name, err)
		}
	}
}

// Each reply decodes to what the daemon encoded.
func TestRepliesRoundTrip(t *testing.T) {
	loaded := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	confs := []ConfStatus{{Path: "/etc/virtuald/conf.ftp", Generation: 3, LoadedAt: loaded, Problems: []string{}, Entries: []EntryStatus{}}}
	st := &Status{Version: "v1", BPF: "on", Confs: confs, Unmapped: []Unmapped{{Address: "192.0.2.9", Interface: "lo"}}}
	if got, err := ParseStatusReply(onTheWire(t, StatusReply(st))); err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("status: %+v, %v; want %+v", got, err, st)
	}
	l := &ConfList{Confs: confs, RelaySyslog: true}
	if got, err := ParseConfsReply(onTheWire(t, ConfsReply(l))); err != nil || !reflect.DeepEqual(got, l) {
		t.Errorf("confs: %+v, %v; want %+v", got, err, l)
	}
	entries := []EntryStatus{{Key: "10.0.0.1", Line: 1, Root: "/v/a", State: StateLive, Addresses: []AddressStatus{{Address: "10.0.0.1", Interface: "lo", Live: true}}}}
	frame, err := EntriesFrame("/etc/virtuald/conf.ftp", entries)
	if err != nil {
		t.Fatal(err)
	}
	path, got, err := ParseEntriesFrame(onTheWire(t, frame))
	if err != nil || path != "/etc/virtuald/conf.ftp" || !reflect.DeepEqual(got, entries) {
		t.Errorf("entries: %s %+v, %v; want %+v", path, got, err, entries)
	}
}

func TestRepliesRefused(t *testing.T) {
	refusal := ipc.ErrorReply("reload is for root only")
	if _, err := ParseConfsReply(onTheWire(t, refusal)); err == nil || err.Error() != "ipwatchd: reload is for root only" {
		t.Errorf("an error reply: %v", err)
	}
	for name, reply := range map[string][][]byte{
		"not JSON":        {[]byte(ipc.ReplyOK), []byte("{")},
		"a status alone":  {[]byte(ipc.ReplyStale)},
		"entries as JSON": {[]byte(ipc.ReplyEntries), []byte("/c"), []byte("[]")},
	} {
		if _, err := ParseStatusReply(onTheWire(t, reply)); !errors.Is(err, ipc.ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", name, err)
		}
	}
	if _, _, err := ParseEntriesFrame(onTheWire(t, [][]byte{[]byte(ipc.ReplyEntries), []byte("/c"), []byte("{}")})); !errors.Is(err, ipc.ErrFrame) {
		t.Errorf("entries of an object: %v, want ErrFrame", err)
	}
}

// FuzzAdmin feeds the operator's decoders any frame: none panics, and
// what one accepts encodes to a message that decodes to the same.
func FuzzAdmin(f *testing.F) {
	q := StatusQuery{State: StateAbsent, Match: netip.MustParsePrefix("10.0.0.0/8"), Limit: 3}
	f.Add(q.AppendFrame(nil)[4:])
	for _, reply := range [][][]byte{
		StatusReply(&Status{Version: "v1", Confs: []ConfStatus{{Path: "/c", Entries: []EntryStatus{{Key: "default"}}}}}),
		ConfsReply(&ConfList{Confs: []ConfStatus{{Path: "/c", Generation: 1}}, RelaySyslog: true}),
	} {
		frame, _ := ipc.Encode(reply...)
		f.Add(frame[4:])
	}
	entries, _ := EntriesFrame("/c", []EntryStatus{{Key: "10.0.0.1", State: StateLive}})
	frame, _ := ipc.Encode(entries...)
	f.Add(frame[4:])
	f.Fuzz(func(t *testing.T, body []byte) {
		fields, err := ipc.Decode(body)
		if err != nil {
			return
		}
		if q, err := ParseStatusQuery(fields); err == nil {
			if again, err := ParseStatusQuery(decodeFrame(t, q.AppendFrame(nil))); err != nil || again != q {
				t.Fatalf("query %+v came back as %+v, %v", q, again, err)
			}
		}
		if st, err := ParseStatusReply(fields); err == nil {
			again, err := ParseStatusReply(onTheWire(t, StatusReply(st)))
			sameJSON(t, st, again, err)
		}
		if l, err := ParseConfsReply(fields); err == nil {
			again, err := ParseConfsReply(onTheWire(t, ConfsReply(l)))
			sameJSON(t, l, again, err)
		}
		if path, es, err := ParseEntriesFrame(fields); err == nil {
			frame, err := EntriesFrame(path, es)
			if err != nil {
				t.Fatal(err)
			}
			againPath, again, err := ParseEntriesFrame(onTheWire(t, frame))
			if againPath != path {
				t.Fatalf("entries of %q came back for %q", path, againPath)
			}
			sameJSON(t, es, again, err)
		}
	})
}

// sameJSON fails the test unless got (decoded again, with err) is want:
// compared as JSON, since times decoded twice differ in their location
// pointers and nothing else.
func sameJSON(t *testing.T, want, got any, err error) {
	t.Helper()
	w, _ := json.Marshal(want)
	g, _ := json.Marshal(got)
	if err != nil || !bytes.Equal(w, g) {
		t.Fatalf("%s came back as %s, %v", w, g, err)
	}
}
