package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	frame, err := EncodeStrings(Version, OpResolve, "/etc/virtuald/conf.ftp", "10.0.0.1", "", "x y\x00z")
	if err != nil {
		t.Fatal(err)
	}
	var prefix [4]byte
	copy(prefix[:], frame)
	n, err := FrameLen(prefix, MaxRequest)
	if err != nil || n != len(frame)-4 {
		t.Fatalf("FrameLen: %d, %v", n, err)
	}
	fields, err := Decode(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{Version, OpResolve, "/etc/virtuald/conf.ftp", "10.0.0.1", "", "x y\x00z"}
	if len(fields) != len(want) {
		t.Fatalf("got %q", fields)
	}
	for i := range want {
		if string(fields[i]) != want[i] {
			t.Errorf("field %d: %q, want %q", i, fields[i], want[i])
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

func TestAnswerRoundTrip(t *testing.T) {
	a := &Answer{Generation: 7, Rule: "prefix", Line: 12, Key: "10.0.0.0/24", Root: "/virtual/pool", User: "ftp", Group: "", Refusal: ""}
	fields, _ := EncodeStrings(a.Fields()...)
	dec, err := Decode(fields[4:])
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseAnswer(dec)
	if err != nil || *got != *a {
		t.Fatalf("got %+v, %v", got, err)
	}
	id := FileID{Dev: 1, Ino: 2, Size: 3, MtimeNs: -4, CtimeNs: 5}
	f, _ := EncodeStrings(id.Fields()...)
	dec, _ = Decode(f[4:])
	if got, err := ParseFileID(dec); err != nil || got != id {
		t.Fatalf("file id: got %+v, %v", got, err)
	}
}

// FuzzDecode checks that no byte string makes the decoder panic, read past
// its input, or return more fields than the limit; and that whatever it
// accepts encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	good, _ := EncodeStrings(Version, OpResolve, "/etc/virtuald/conf", "10.0.0.1", "1", "2", "3", "4", "5")
	f.Add(good[4:])
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
		ParseAnswer(fields)
		if len(fields) >= 5 {
			ParseFileID(fields[:5])
		}
	})
}
