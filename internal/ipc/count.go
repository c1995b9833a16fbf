package ipc

import (
	"fmt"
	"strconv"
)

// CountRequest reports connections that accept mode answered from the
// daemon's answers it keeps, so that the daemon's per-entry counts of
// resolved connections stay whole (OpCount); or, with Refused, the
// connections it refused for the entries' limits (max=, rate=,
// per-source=, -max-per-entry: OpRefused), which only it can know. Only
// root's reports count.
type CountRequest struct {
	Conf    string
	Counts  []EntryCount // at most MaxCounts
	Refused bool         // the counts are refusals (OpRefused)
}

// EntryCount is the connections one entry, by its key, served (or had
// refused).
type EntryCount struct {
	Key         string
	Connections uint64
}

// MaxCounts is how many entries one CountRequest carries: what fits in a
// frame's MaxFields beside the version, the operation and the conf path.
const MaxCounts = (MaxFields - 3) / 2

// AppendFrame appends the request's frame to b.
func (r *CountRequest) AppendFrame(b []byte) ([]byte, error) {
	if len(r.Counts) > MaxCounts {
		return b, fmt.Errorf("%w: %d counts in one request, more than %d", ErrFrame, len(r.Counts), MaxCounts)
	}
	op := OpCount
	if r.Refused {
		op = OpRefused
	}
	b, frame := beginRequest(b, op)
	b = appendField(b, r.Conf)
	for _, c := range r.Counts {
		b = appendField(b, c.Key)
		b = appendUint(b, c.Connections)
	}
	return closeLength(b, frame), nil
}

// ParseCountRequest reads a count request from the fields of its frame.
func ParseCountRequest(req [][]byte) (CountRequest, error) {
	args, err := requestArgs(req, 1, true, OpCount, OpRefused)
	if err != nil {
		return CountRequest{}, err
	}
	pairs := args[1:]
	if len(pairs)%2 != 0 {
		return CountRequest{}, fmt.Errorf("%w: count takes a conf path, then key and count pairs", ErrFrame)
	}
	r := CountRequest{Conf: string(args[0]), Counts: make([]EntryCount, 0, len(pairs)/2), Refused: string(req[1]) == OpRefused}
	for i := 0; i < len(pairs); i += 2 {
		n, err := parseUint("count", pairs[i+1])
		if err != nil {
			return CountRequest{}, err
		}
		r.Counts = append(r.Counts, EntryCount{Key: string(pairs[i]), Connections: n})
	}
	return r, nil
}

// CountReply is the reply to a count: the daemon's generation of the conf
// file (0 when it has not loaded it yet), which tells accept mode when to
// drop the answers it keeps; or err, ErrUnknown for a file the daemon does
// not serve and any other error for an error reply.
func CountReply(generation uint64, err error) [][]byte {
	switch {
	case err != nil:
		return statusReply(err)
	case generation == 0:
		return [][]byte{[]byte(ReplyOK)}
	}
	return [][]byte{[]byte(ReplyOK), strconv.AppendUint(nil, generation, 10)}
}

// ParseCountReply reads the reply to a count: the generation, or
// ErrUnknown, a *RefusedError, or ErrFrame for a malformed one.
func ParseCountReply(reply [][]byte) (generation uint64, err error) {
	status, f, err := SplitReply(reply)
	switch {
	case err != nil:
		return 0, err
	case status == ReplyUnknown:
		return 0, ErrUnknown
	case status != ReplyOK:
		return 0, unexpected(status)
	case len(f) == 0:
		return 0, nil
	case len(f) > 1:
		return 0, fmt.Errorf("%w: a count reply of %d fields", ErrFrame, 1+len(f))
	}
	return parseUint("generation", f[0])
}
