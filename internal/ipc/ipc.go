// Package ipc is the protocol between ipwatchd and its clients (virtuald on
// every connection, ipwatchctl): its wire format, its messages, and the
// client. Every request and reply is a type here with its encoder and
// decoder (resolve.go, count.go), so that no caller assembles a message by
// hand. The server lives in ipc/server, so that virtuald, which imports
// this package, does not link the net package and its start-up cost; the
// operator's requests, whose replies are JSON, live in ipc/admin, so that
// virtuald does not link encoding/json either.
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
	"strconv"
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
	OpResolve = "resolve" // virtuald's question (ResolveRequest): counted per entry
	OpLookup  = "lookup"  // the same question from ipwatchctl: not counted
	OpCount   = "count"   // connections accept mode answered itself (CountRequest)
	OpRefused = "refused" // connections accept mode refused for the entries' limits (CountRequest with Refused)
	OpStatus  = "status"  // the status of the conf files and addresses (ipc/admin)
	OpConfs   = "confs"   // the conf files served, without entries (ipc/admin)
	OpReload  = "reload"  // reload every conf file now (ipc/admin)
)

// Reply statuses, the first field of every reply.
const (
	ReplyOK      = "ok"
	ReplyStale   = "stale"   // the daemon's copy of the conf file is not the file on disk now
	ReplyRacy    = "racy"    // the file changed too recently for its status to name its content
	ReplyUnknown = "unknown" // the daemon does not know the conf file (yet)
	ReplyError   = "error"   // the daemon refused the request; the reason follows
	// A streamed reply (status with "all"): ReplyOK and its header first,
	// then ReplyEntries frames (conf path, a JSON array of entries), then
	// ReplyEnd.
	ReplyEntries = "entries"
	ReplyEnd     = "end"
)

// DefaultSocket is where ipwatchd listens unless told otherwise.
const DefaultSocket = "/run/ipwatchd/ipwatchd.sock"

// SocketEnv names the environment variable that overrides DefaultSocket
// for all three programs.
const SocketEnv = "VIRTUALD_SOCKET"

// SocketPath returns the socket to use: flag if set, else fromEnv (the
// value of $VIRTUALD_SOCKET, which each program reads from the environment
// it was handed), else DefaultSocket.
func SocketPath(flag, fromEnv string) string {
	if flag != "" {
		return flag
	}
	if fromEnv != "" {
		return fromEnv
	}
	return DefaultSocket
}

// ErrFrame is returned for a frame that breaks the format or its limits,
// and for a message whose fields are not what its operation takes.
var ErrFrame = errors.New("malformed frame")

// RefusedError is the daemon's error reply: it would not answer the
// request, for Reason.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "ipwatchd: " + e.Reason }

// ErrorReply is the reply that refuses a request for reason.
func ErrorReply(reason string) [][]byte {
	return [][]byte{[]byte(ReplyError), []byte(reason)}
}

// SplitReply returns a reply's status and the fields after it. An error
// reply is a *RefusedError, an empty one ErrFrame.
func SplitReply(reply [][]byte) (status string, rest [][]byte, err error) {
	switch {
	case len(reply) == 0:
		return "", nil, fmt.Errorf("%w: an empty reply", ErrFrame)
	case string(reply[0]) == ReplyError && len(reply) == 2:
		return "", nil, &RefusedError{Reason: string(reply[1])}
	}
	return string(reply[0]), reply[1:], nil
}

// unexpected is the error for a reply whose status its request does not
// expect.
func unexpected(status string) error {
	return fmt.Errorf("%w: unexpected reply %q", ErrFrame, status)
}

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

// AppendRequest appends to b the frame of a request for op whose
// arguments are strings (the operator's requests of ipc/admin).
func AppendRequest(b []byte, op string, args ...string) []byte {
	b, frame := beginRequest(b, op)
	for _, a := range args {
		b = appendField(b, a)
	}
	return closeLength(b, frame)
}

// The request encoders append straight into one buffer, a field at a
// time: virtuald sends one on every connection, and a []string turned
// into [][]byte would cost an allocation a field.

// beginRequest appends the start of a request frame for op; closeLength
// with the returned offset ends it.
func beginRequest(b []byte, op string) ([]byte, int) {
	b, frame := openLength(b)
	b = appendField(b, Version)
	return appendField(b, op), frame
}

// openLength appends a length prefix to be filled in by closeLength, and
// returns its offset.
func openLength(b []byte) ([]byte, int) { return append(b, 0, 0, 0, 0), len(b) }

// closeLength sets the prefix at offset at to the length of what follows.
func closeLength(b []byte, at int) []byte {
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

func appendField(b []byte, f string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

func appendUint(b []byte, n uint64) []byte {
	b, at := openLength(b)
	return closeLength(strconv.AppendUint(b, n, 10), at)
}

func appendInt(b []byte, n int64) []byte {
	b, at := openLength(b)
	return closeLength(strconv.AppendInt(b, n, 10), at)
}

func appendAddr(b []byte, a netip.Addr) []byte {
	b, at := openLength(b)
	return closeLength(a.AppendTo(b), at)
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

// requestArgs checks that req (every field of a request frame) is a
// request for one of ops with n arguments, or at least n when atLeast, and
// returns them.
func requestArgs(req [][]byte, n int, atLeast bool, ops ...string) ([][]byte, error) {
	if len(req) < 2 || string(req[0]) != Version {
		return nil, fmt.Errorf("%w: not a version %s request", ErrFrame, Version)
	}
	known := false
	for _, op := range ops {
		known = known || string(req[1]) == op
	}
	args := req[2:]
	switch {
	case !known:
		return nil, fmt.Errorf("%w: operation %q is not %q", ErrFrame, req[1], ops)
	case len(args) < n, len(args) > n && !atLeast:
		return nil, fmt.Errorf("%w: %s takes %d arguments, not %d", ErrFrame, req[1], n, len(args))
	}
	return args, nil
}

func parseUint(field string, b []byte) (uint64, error) {
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q is not a number", ErrFrame, field, b)
	}
	return n, nil
}

func parseInt(field string, b []byte) (int64, error) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q is not a number", ErrFrame, field, b)
	}
	return n, nil
}
