package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

// fields encodes and decodes strs, as a frame on the wire would carry them.
func fields(t testing.TB, strs ...string) [][]byte {
	t.Helper()
	var b [][]byte
	for _, s := range strs {
		b = append(b, []byte(s))
	}
	frame, err := Encode(b...)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// decodeFrame checks a frame's length prefix and splits it into fields.
func decodeFrame(t testing.TB, frame []byte) [][]byte {
	t.Helper()
	n, err := FrameLen([4]byte(frame[:4]), MaxRequest)
	if err != nil || n != len(frame)-4 {
		t.Fatalf("FrameLen: %d, %v for %d bytes", n, err, len(frame)-4)
	}
	f, err := Decode(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFrameRoundTrip(t *testing.T) {
	want := []string{Version, OpResolve, "/etc/virtuald/conf.ftp", "10.0.0.1", "", "x y\x00z"}
	got := fields(t, want...)
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("field %d: %q, want %q", i, got[i], want[i])
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	field := func(n uint32, data string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), data...)
	}
	tests := map[string][]byte{
		"truncated length": {0, 0, 1},
		"field past end":   field(10, "abc"),
		"huge field":       field(0xffffffff, "abc"),
		"too many fields":  bytes.Repeat(field(0, ""), MaxFields+1),
	}
	for name, body := range tests {
		if _, err := Decode(body); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: got %v, want ErrFrame", name, err)
		}
	}
	if _, err := FrameLen([4]byte{0, 1, 0, 0}, MaxRequest); !errors.Is(err, ErrFrame) {
		t.Errorf("a 64 KiB request passed FrameLen: %v", err)
	}
}

// Every request decodes to what was encoded, and its wire form is the
// fields of the protocol, in order.
func TestRequestRoundTrip(t *testing.T) {
	resolve := ResolveRequest{Conf: "/etc/virtuald/conf.ftp", Addr: netip.MustParseAddr("2001:db8::10"),
		ID: FileID{Dev: 1, Ino: 2, Size: 3, MtimeNs: -4, CtimeNs: 5}, Program: "in.ftpd", Path: "/usr/sbin"}
	lookup := resolve
	lookup.Lookup = true
	for _, c := range []struct {
		name  string
		frame []byte
		wire  []string
		parse func([][]byte) (any, error)
		want  any
	}{
		{"resolve", resolve.AppendFrame(nil),
			[]string{Version, OpResolve, "/etc/virtuald/conf.ftp", "2001:db8::10", "1", "2", "3", "-4", "5", "in.ftpd", "/usr/sbin"},
			func(f [][]byte) (any, error) { return ParseResolveRequest(f) }, resolve},
		{"lookup", lookup.AppendFrame(nil),
			[]string{Version, OpLookup, "/etc/virtuald/conf.ftp", "2001:db8::10", "1", "2", "3", "-4", "5", "in.ftpd", "/usr/sbin"},
			func(f [][]byte) (any, error) { return ParseResolveRequest(f) }, lookup},
		{"count", mustCount(t, CountRequest{Conf: "/c", Counts: []EntryCount{{"10.0.0.1", 7}, {"default", 1}}}),
			[]string{Version, OpCount, "/c", "10.0.0.1", "7", "default", "1"},
			func(f [][]byte) (any, error) { return ParseCountRequest(f) },
			CountRequest{Conf: "/c", Counts: []EntryCount{{"10.0.0.1", 7}, {"default", 1}}}},
		{"refused", mustCount(t, CountRequest{Conf: "/c", Counts: []EntryCount{{"10.0.0.1", 3}}, Refused: true}),
			[]string{Version, OpRefused, "/c", "10.0.0.1", "3"},
			func(f [][]byte) (any, error) { return ParseCountRequest(f) },
			CountRequest{Conf: "/c", Counts: []EntryCount{{"10.0.0.1", 3}}, Refused: true}},
		{"count, no entries", mustCount(t, CountRequest{Conf: "/c"}),
			[]string{Version, OpCount, "/c"},
			func(f [][]byte) (any, error) { return ParseCountRequest(f) },
			CountRequest{Conf: "/c", Counts: []EntryCount{}}},
	} {
		f := decodeFrame(t, c.frame)
		if !reflect.DeepEqual(f, fields(t, c.wire...)) {
			t.Errorf("%s: on the wire %q, want %q", c.name, f, c.wire)
		}
		got, err := c.parse(f)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: decoded %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func mustCount(t *testing.T, r CountRequest) []byte {
	t.Helper()
	b, err := r.AppendFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A count request carries at most MaxCounts entries, and the most it
// carries fits in a frame.
func TestCountRequestLimit(t *testing.T) {
	r := CountRequest{Conf: "/etc/virtuald/conf.ftp"}
	for len(r.Counts) < MaxCounts {
		r.Counts = append(r.Counts, EntryCount{Key: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128", Connections: 1 << 63})
	}
	frame := mustCount(t, r)
	if got, err := ParseCountRequest(decodeFrame(t, frame)); err != nil || len(got.Counts) != MaxCounts {
		t.Fatalf("%d counts: %v", len(got.Counts), err)
	}
	r.Counts = append(r.Counts, EntryCount{Key: "default", Connections: 1})
	if _, err := r.AppendFrame(nil); !errors.Is(err, ErrFrame) {
		t.Errorf("%d counts in one request: %v, want ErrFrame", len(r.Counts), err)
	}
}

func TestRequestsRefused(t *testing.T) {
	id := []string{"1", "2", "3", "4", "5"}
	resolve := func(f ...string) []string {
		return append(append([]string{Version, OpResolve}, f...), id...)
	}
	for _, c := range []struct {
		name  string
		req   []string
		parse func([][]byte) error
	}{
		{"resolve of another version", append([]string{"0", OpResolve, "/c", "10.0.0.1"}, id...), parseResolve},
		{"resolve as count", append([]string{Version, OpCount, "/c", "10.0.0.1"}, id...), parseResolve},
		{"resolve without identity", []string{Version, OpResolve, "/c", "10.0.0.1"}, parseResolve},
		{"resolve of no address", resolve("/c", "10.0.0.256"), parseResolve},
		{"resolve with a field more", append(resolve("/c", "10.0.0.1"), "x"), parseResolve},
		{"resolve of a negative inode", append([]string{Version, OpResolve, "/c", "10.0.0.1", "1", "-2"}, id[2:]...), parseResolve},
		{"count without a conf", []string{Version, OpCount}, parseCount},
		{"count of half a pair", []string{Version, OpCount, "/c", "10.0.0.1"}, parseCount},
		{"count of no number", []string{Version, OpCount, "/c", "10.0.0.1", "many"}, parseCount},
	} {
		if err := c.parse(fields(t, c.req...)); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", c.name, err)
		}
	}
}

func parseResolve(f [][]byte) error { _, err := ParseResolveRequest(f); return err }
func parseCount(f [][]byte) error   { _, err := ParseCountRequest(f); return err }

// Every reply decodes to what the daemon meant: the answer, or the error
// it stands for.
func TestReplyRoundTrip(t *testing.T) {
	a := &Answer{Generation: 7, Rule: "prefix", Line: 12, Key: "10.0.0.0/24", Root: "/virtual/pool", Options: "user=ftp isolate=mount,uts hostname=pool.example",
		Program: ProgramCheck{ProgramLibrariesMissing, "/usr/sbin/in.ftpd exists but shared libraries it needs are missing inside the root: libc.so.6"}}
	unchecked := &Answer{Generation: 1, Rule: "exact", Line: 1, Key: "10.0.0.1", Root: "/"}
	uncheckedWant := *unchecked
	uncheckedWant.Program.State = ProgramUnchecked
	for _, c := range []struct {
		name   string
		reply  [][]byte
		answer *Answer
		err    error
	}{
		{"ok", ResolveReply(a, nil), a, nil},
		{"ok, no program checked", ResolveReply(unchecked, nil), &uncheckedWant, nil},
		{"stale", ResolveReply(nil, ErrStale), nil, ErrStale},
		{"racy", ResolveReply(nil, ErrRacy), nil, ErrRacy},
		{"unknown", ResolveReply(nil, ErrUnknown), nil, ErrUnknown},
		{"refused", ResolveReply(nil, errors.New("no")), nil, &RefusedError{Reason: "no"}},
	} {
		got, err := ParseResolveReply(roundTrip(t, c.reply))
		if !reflect.DeepEqual(got, c.answer) || !reflect.DeepEqual(err, c.err) {
			t.Errorf("%s: %+v, %v; want %+v, %v", c.name, got, err, c.answer, c.err)
		}
	}
	for _, c := range []struct {
		name  string
		reply [][]byte
		gen   uint64
		err   error
	}{
		{"generation", CountReply(9, nil), 9, nil},
		{"not loaded", CountReply(0, nil), 0, nil},
		{"unknown", CountReply(0, ErrUnknown), 0, ErrUnknown},
		{"refused", CountReply(0, errors.New("count is for root only")), 0, &RefusedError{Reason: "count is for root only"}},
	} {
		gen, err := ParseCountReply(roundTrip(t, c.reply))
		if gen != c.gen || !reflect.DeepEqual(err, c.err) {
			t.Errorf("count %s: %d, %v; want %d, %v", c.name, gen, err, c.gen, c.err)
		}
	}
}

// roundTrip puts reply fields through a frame.
func roundTrip(t *testing.T, reply [][]byte) [][]byte {
	t.Helper()
	frame, err := Encode(reply...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeFrame(t, frame)
}

func TestRepliesRefused(t *testing.T) {
	answer := []string{ReplyOK, "1", "exact", "1", "10.0.0.1", "/", "", "", ProgramReady, ""}
	for _, c := range []struct {
		name  string
		reply []string
		parse func([][]byte) error
	}{
		{"empty", nil, parseResolveReply},
		{"ok alone", []string{ReplyOK}, parseResolveReply},
		{"an answer short of a field", answer[:9], parseResolveReply},
		{"an answer of no program state", append(slices.Clone(answer[:8]), "", ""), parseResolveReply},
		{"an answer of no generation", append([]string{ReplyOK, "x"}, answer[2:]...), parseResolveReply},
		{"an answer past the largest line", append([]string{ReplyOK, "1", "exact", "2147483649"}, answer[4:]...), parseResolveReply},
		{"a stream's status", []string{ReplyEntries, "/c", "[]"}, parseResolveReply},
		{"count of no number", []string{ReplyOK, "x"}, parseCountReply},
		{"count of two numbers", []string{ReplyOK, "1", "2"}, parseCountReply},
		{"count stale", []string{ReplyStale}, parseCountReply},
	} {
		if err := c.parse(fields(t, c.reply...)); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", c.name, err)
		}
	}
}

func parseResolveReply(f [][]byte) error { _, err := ParseResolveReply(f); return err }
func parseCountReply(f [][]byte) error   { _, err := ParseCountReply(f); return err }

// FuzzDecode checks that no byte string makes the decoder panic, read past
// its input, or return more fields than the limit; and that whatever it
// accepts encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	r := ResolveRequest{Conf: "/etc/virtuald/conf", Addr: netip.MustParseAddr("10.0.0.1"), ID: FileID{1, 2, 3, 4, 5}}
	f.Add(r.AppendFrame(nil)[4:])
	f.Add([]byte{0, 0, 0, 1, 'x', 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		fields, err := Decode(body)
		if err != nil {
			return
		}
		if len(fields) > MaxFields {
			t.Fatalf("%d fields", len(fields))
		}
		again, err := Encode(fields...)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again[4:], body) {
			t.Fatalf("re-encoding changed the frame")
		}
	})
}

// FuzzRequest feeds the request decoders what a client may send: none
// panics, and a request one accepts encodes to a frame that decodes to
// the same request.
func FuzzRequest(f *testing.F) {
	r := ResolveRequest{Conf: "/etc/virtuald/conf", Addr: netip.MustParseAddr("::ffff:10.0.0.1"), ID: FileID{1, 2, 3, -4, 5}}
	f.Add(r.AppendFrame(nil)[4:])
	r.Lookup = true
	f.Add(r.AppendFrame(nil)[4:])
	c := CountRequest{Conf: "/c", Counts: []EntryCount{{"10.0.0.0/24", 3}}}
	b, _ := c.AppendFrame(nil)
	f.Add(b[4:])
	c.Refused = true // accept mode's refusals for the entries' limits
	b, _ = c.AppendFrame(nil)
	f.Add(b[4:])
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := Decode(body)
		if err != nil {
			return
		}
		if r, err := ParseResolveRequest(req); err == nil {
			again, err := ParseResolveRequest(decodeFrame(t, r.AppendFrame(nil)))
			if err != nil || again != r {
				t.Fatalf("resolve %+v came back as %+v, %v", r, again, err)
			}
		}
		if c, err := ParseCountRequest(req); err == nil {
			again, err := ParseCountRequest(decodeFrame(t, mustCountTB(t, c)))
			if err != nil || !reflect.DeepEqual(again, c) {
				t.Fatalf("count %+v came back as %+v, %v", c, again, err)
			}
		}
	})
}

func mustCountTB(t testing.TB, r CountRequest) []byte {
	b, err := r.AppendFrame(nil)
	if err != nil {
		t.Fatalf("count %+v decoded but does not encode: %v", r, err)
	}
	return b
}

// FuzzReply feeds the reply decoders what a daemon (or anything that
// listens at its socket) may answer: none panics, and a reply one accepts
// encodes to fields that decode to the same reply.
func FuzzReply(f *testing.F) {
	for _, reply := range [][][]byte{
		ResolveReply(&Answer{Generation: 1, Rule: "exact", Line: 3, Key: "10.0.0.1", Root: "/v/a", Options: "user=ftp group=ftp"}, nil),
		ResolveReply(nil, ErrStale),
		ResolveReply(nil, errors.New("bad address")),
		CountReply(4, nil),
	} {
		frame, _ := Encode(reply...)
		f.Add(frame[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		reply, err := Decode(body)
		if err != nil {
			return
		}
		a, aErr := ParseResolveReply(reply)
		if again, err := ParseResolveReply(ResolveReply(a, aErr)); !reflect.DeepEqual(again, a) || !sameError(err, aErr) {
			t.Fatalf("resolve reply %+v, %v came back as %+v, %v", a, aErr, again, err)
		}
		if a != nil {
			a.Match(netip.MustParseAddr("10.0.0.1"))
		}
		gen, gErr := ParseCountReply(reply)
		if gErr != nil && !errors.Is(gErr, ErrUnknown) {
			var refused *RefusedError
			if !errors.As(gErr, &refused) {
				return // a malformed reply has no encoding to come back from
			}
		}
		if again, err := ParseCountReply(CountReply(gen, gErr)); again != gen || !sameError(err, gErr) {
			t.Fatalf("count reply %d, %v came back as %d, %v", gen, gErr, again, err)
		}
	})
}

// sameError reports whether a decoded error is the one that was encoded:
// the same sentinel or refusal; a malformed reply (ErrFrame) is encoded as
// a refusal that names it.
func sameError(got, want error) bool {
	var g, w *RefusedError
	switch {
	case want == nil || errors.Is(want, ErrStale) || errors.Is(want, ErrRacy) || errors.Is(want, ErrUnknown):
		return got == want
	case errors.As(want, &w):
		return errors.As(got, &g) && *g == *w
	}
	return errors.As(got, &g) && g.Reason == want.Error()
}
