// Package ipc is the protocol between ipwatchd and its clients (virtuald on
// every connection, ipwatchctl): its wire format, its messages, and the
// client. The server lives in ipc/server, so that virtuald, which imports
// this package, does not link the net package and its start-up cost.
//
// A message is a frame: a 4-byte big-endian length, then fields, each a
// 4-byte big-endian length and its bytes. A request's first field is the
// protocol version, its second the operation. Sizes are bounded on both
// sides (MaxRequest, MaxReply, MaxFields), so neither side can be made to
// allocate without limit.
package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"github.com/virtuald/virtuald/internal/conf"
	"golang.org/x/sys/unix"
)

// Version is the protocol version a request carries first.
const Version = "1"

// Limits.
const (
	MaxRequest = 8 << 10  // a resolve request is a path, an address and a few numbers
	MaxReply   = 64 << 20 // a status reply of some hundred thousand entries
	MaxFields  = 32
)

// Operations.
const (
	OpResolve = "resolve" // virtuald's question: counted per entry
	OpLookup  = "lookup"  // the same question from ipwatchctl: not counted
	OpCount   = "count"   // connections accept mode answered itself: conf path, then entry key and count pairs
	OpStatus  = "status"  // StatusQuery fields follow
	OpConfs   = "confs"   // the conf files served, without entries (ConfList)
	OpReload  = "reload"
)

// Reply statuses, the first field of every reply.
const (
	ReplyOK      = "ok"
	ReplyStale   = "stale"   // the daemon's copy of the conf file is not the file on disk now
	ReplyRacy    = "racy"    // the file changed too recently for its status to name its content
	ReplyUnknown = "unknown" // the daemon does not know the conf file (yet)
	ReplyError   = "error"
	// A streamed reply (status with "all"): ReplyOK and its header first,
	// then ReplyEntries frames (conf path, a JSON array of entries), then
	// ReplyEnd.
	ReplyEntries = "entries"
	ReplyEnd     = "end"
)

// DefaultSocket is where ipwatchd listens unless told otherwise.
const DefaultSocket = "/run/ipwatchd/ipwatchd.sock"

// SocketPath returns the socket to use: flag if set, else $VIRTUALD_SOCKET,
// else DefaultSocket.
func SocketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if s := os.Getenv("VIRTUALD_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// ErrFrame is returned for a frame that breaks the format or its limits.
var ErrFrame = errors.New("malformed frame")

// Encode makes a frame of fields.
func Encode(fields ...[]byte) ([]byte, error) {
	if len(fields) > MaxFields {
		return nil, fmt.Errorf("%w: %d fields", ErrFrame, len(fields))
	}
	n := 4
	for _, f := range fields {
		n += 4 + len(f)
	}
	if n-4 > MaxReply {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrFrame, n-4, MaxReply)
	}
	b := make([]byte, 4, n)
	binary.BigEndian.PutUint32(b, uint32(n-4))
	for _, f := range fields {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// EncodeStrings makes a frame of string fields.
func EncodeStrings(fields ...string) ([]byte, error) {
	b := make([][]byte, len(fields))
	for i, f := range fields {
		b[i] = []byte(f)
	}
	return Encode(b...)
}

// FrameLen reads the length prefix of a frame and checks it against limit.
func FrameLen(prefix [4]byte, limit int) (int, error) {
	n := binary.BigEndian.Uint32(prefix[:])
	if n > uint32(limit) {
		return 0, fmt.Errorf("%w: %d bytes, more than %d", ErrFrame, n, limit)
	}
	return int(n), nil
}

// Decode splits a frame's body (the bytes after the length prefix) into
// its fields. The fields alias body.
func Decode(body []byte) ([][]byte, error) {
	var fields [][]byte
	for len(body) > 0 {
		if len(fields) == MaxFields {
			return nil, fmt.Errorf("%w: more than %d fields", ErrFrame, MaxFields)
		}
		if len(body) < 4 {
			return nil, fmt.Errorf("%w: truncated field length", ErrFrame)
		}
		n := binary.BigEndian.Uint32(body)
		body = body[4:]
		if uint64(n) > uint64(len(body)) {
			return nil, fmt.Errorf("%w: field of %d bytes in %d", ErrFrame, n, len(body))
		}
		fields = append(fields, body[:n])
		body = body[n:]
	}
	return fields, nil
}

// FileID identifies the content of a conf file as the file system sees it.
// virtuald sends the one it stats; the daemon answers from its copy only
// when that copy was read from a file with the same identity, so the daemon
// and the file can never disagree after a rename or an edit.
type FileID struct {
	Dev, Ino, Size uint64
	MtimeNs        int64
	CtimeNs        int64
}

// FileIDOf is the identity of the file st describes; virtuald, ipwatchctl
// and the daemon all compute it here, so they compare like with like.
func FileIDOf(st *unix.Stat_t) FileID {
	return FileID{Dev: st.Dev, Ino: st.Ino, Size: uint64(st.Size), MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}
}

// Fields gives the identity as request fields.
func (id FileID) Fields() []string {
	return []string{u64(id.Dev), u64(id.Ino), u64(id.Size), i64(id.MtimeNs), i64(id.CtimeNs)}
}

// ParseFileID reads an identity from five fields.
func ParseFileID(f [][]byte) (FileID, error) {
	if len(f) != 5 {
		return FileID{}, fmt.Errorf("%w: file identity needs 5 fields", ErrFrame)
	}
	var id FileID
	var err error
	var errs [5]error
	id.Dev, errs[0] = parseU64(f[0])
	id.Ino, errs[1] = parseU64(f[1])
	id.Size, errs[2] = parseU64(f[2])
	id.MtimeNs, errs[3] = strconv.ParseInt(string(f[3]), 10, 64)
	id.CtimeNs, errs[4] = strconv.ParseInt(string(f[4]), 10, 64)
	if err = errors.Join(errs[:]...); err != nil {
		return FileID{}, fmt.Errorf("%w: file identity: %v", ErrFrame, err)
	}
	return id, nil
}

// Answer is the daemon's reply to a resolve: what Lookup gave for the
// address in the daemon's copy of the conf file.
type Answer struct {
	Generation uint64
	Rule       string // "exact", "prefix", "default", "none"
	Line       int
	Key        string
	Root       string
	User       string
	Group      string
	Refusal    string // non-empty: refuse the connection, for this reason
}

// Fields gives the answer as reply fields, after ReplyOK.
func (a *Answer) Fields() []string {
	return []string{u64(a.Generation), a.Rule, u64(uint64(a.Line)), a.Key, a.Root, a.User, a.Group, a.Refusal}
}

// Match turns the answer to a question about addr back into the lookup
// result it carries, as the file itself would have given it, after
// checking it as the parser would: a rule it can name, an entry in
// canonical form that this rule picks for addr, and, when the answer says
// serve, a valid entry. Anything else is an error, and the caller reads
// the file instead: an answer that fails validation is not believed.
func (a *Answer) Match(addr netip.Addr) (conf.Match, error) {
	m := conf.Match{Rule: conf.ParseRule(a.Rule)}
	if m.Rule == conf.RuleNone {
		if a.Rule != conf.RuleNone.String() || a.Key != "" || a.Refusal == "" {
			return conf.Match{}, fmt.Errorf("%w: rule %q with key %q and no refusal", ErrAnswer, a.Rule, a.Key)
		}
		m.Err = errors.New(a.Refusal)
		return m, nil
	}
	e, err := conf.EntryOf(a.Line, a.Key, a.Root, a.User, a.Group)
	switch {
	case err != nil && a.Refusal == "":
		return conf.Match{}, fmt.Errorf("%w: entry %q: %v", ErrAnswer, a.Key, err)
	case err != nil:
		// An invalid entry is refused; keep what it says for the log.
		e = &conf.Entry{Line: a.Line, Key: a.Key, Root: a.Root}
	case !e.Serves(addr, m.Rule):
		return conf.Match{}, fmt.Errorf("%w: entry %s is not a %s match for %s", ErrAnswer, a.Key, m.Rule, addr)
	}
	m.Entry = e
	if a.Refusal != "" {
		m.Err = errors.New(a.Refusal)
	}
	return m, nil
}

// ErrAnswer is returned for an answer that fails validation.
var ErrAnswer = errors.New("malformed answer")

// ParseAnswer reads an answer from the fields after ReplyOK.
func ParseAnswer(f [][]byte) (*Answer, error) {
	if len(f) != 8 {
		return nil, fmt.Errorf("%w: an answer has 8 fields, not %d", ErrFrame, len(f))
	}
	gen, err1 := parseU64(f[0])
	line, err2 := parseU64(f[2])
	if err := errors.Join(err1, err2); err != nil || line > 1<<31 {
		return nil, fmt.Errorf("%w: answer numbers", ErrFrame)
	}
	return &Answer{
		Generation: gen, Rule: string(f[1]), Line: int(line), Key: string(f[3]),
		Root: string(f[4]), User: string(f[5]), Group: string(f[6]), Refusal: string(f[7]),
	}, nil
}

func parseU64(b []byte) (uint64, error) { return strconv.ParseUint(string(b), 10, 64) }

func u64(n uint64) string { return strconv.FormatUint(n, 10) }

func i64(n int64) string { return strconv.FormatInt(n, 10) }
