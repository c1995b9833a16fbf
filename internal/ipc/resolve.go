package ipc

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/virtuald/virtuald/internal/conf"
	"golang.org/x/sys/unix"
)

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

// fileIDFields is how many fields a FileID takes.
const fileIDFields = 5

func (id FileID) appendFields(b []byte) []byte {
	b = appendUint(b, id.Dev)
	b = appendUint(b, id.Ino)
	b = appendUint(b, id.Size)
	b = appendInt(b, id.MtimeNs)
	return appendInt(b, id.CtimeNs)
}

func parseFileID(f [][]byte) (id FileID, err error) {
	if id.Dev, err = parseUint("device", f[0]); err != nil {
		return FileID{}, err
	}
	if id.Ino, err = parseUint("inode", f[1]); err != nil {
		return FileID{}, err
	}
	if id.Size, err = parseUint("size", f[2]); err != nil {
		return FileID{}, err
	}
	if id.MtimeNs, err = parseInt("mtime", f[3]); err != nil {
		return FileID{}, err
	}
	if id.CtimeNs, err = parseInt("ctime", f[4]); err != nil {
		return FileID{}, err
	}
	return id, nil
}

// ResolveRequest asks which entry of a conf file serves an address:
// virtuald's question on every connection (OpResolve), or ipwatchctl's
// (OpLookup), which the daemon answers the same way without counting it
// or adopting the file.
type ResolveRequest struct {
	Conf   string
	Addr   netip.Addr
	ID     FileID // the conf file as the asker found it
	Lookup bool
	// Program is the program virtuald will start, as its command line
	// names it, and Path the PATH it looks a name without a slash up in
	// ("" for none): the answer says what the daemon found of it inside
	// the entry's root (Answer.Program). Empty: none asked about.
	Program, Path string
}

// AppendFrame appends the request's frame to b.
func (r *ResolveRequest) AppendFrame(b []byte) []byte {
	op := OpResolve
	if r.Lookup {
		op = OpLookup
	}
	b, frame := beginRequest(b, op)
	b = appendField(b, r.Conf)
	b = appendAddr(b, r.Addr)
	b = r.ID.appendFields(b)
	b = appendField(b, r.Program)
	return closeLength(appendField(b, r.Path), frame)
}

// ParseResolveRequest reads a resolve or lookup request from the fields of
// its frame.
func ParseResolveRequest(req [][]byte) (ResolveRequest, error) {
	args, err := requestArgs(req, 4+fileIDFields, false, OpResolve, OpLookup)
	if err != nil {
		return ResolveRequest{}, err
	}
	r := ResolveRequest{Conf: string(args[0]), Lookup: string(req[1]) == OpLookup}
	if r.Addr, err = netip.ParseAddr(string(args[1])); err != nil {
		return ResolveRequest{}, fmt.Errorf("%w: bad address %q", ErrFrame, args[1])
	}
	if r.ID, err = parseFileID(args[2 : 2+fileIDFields]); err != nil {
		return ResolveRequest{}, err
	}
	r.Program, r.Path = string(args[2+fileIDFields]), string(args[3+fileIDFields])
	return r, nil
}

// Answer is the daemon's reply to a resolve: what Lookup gave for the
// address in the daemon's copy of the conf file.
type Answer struct {
	Generation uint64
	Rule       string // "exact", "prefix", "default", "none"
	Line       int
	Key        string
	Root       string
	Options    string // the entry's options in canonical form (conf.Options.String)
	Refusal    string // non-empty: refuse the connection, for this reason
	Program    ProgramCheck
}

// ProgramCheck is what ipwatchd's validator found, in its last pass over
// the conf file, of the program a resolve asked about, inside the root of
// the entry that answers it: virtuald needs no check of its own to warn
// of the shared libraries the root lacks (the loader would tell only the
// client).
type ProgramCheck struct {
	// State is ProgramUnchecked (the zero value stands for it) when the
	// validator did not check that program in that root, ProgramReady, or
	// why the program cannot start there, with Reason in words.
	State  string
	Reason string
}

// Program states: what ipwatchd's validator found of a program inside a
// root (status's too).
const (
	ProgramReady              = "ready"               // found, executable, with its interpreter and every library
	ProgramMissing            = "missing"             // not found, not a regular file, or not executable
	ProgramInterpreterMissing = "interpreter-missing" // its ELF or #! interpreter is not inside the root
	ProgramLibrariesMissing   = "libraries-missing"   // a shared library of its closure is not inside the root
	ProgramUnchecked          = "unchecked"           // not checked (see where each says why)
)

// answerFields is how many fields an Answer takes after ReplyOK.
const answerFields = 9

// ResolveReply is the reply to a resolve: the answer, or err, which is
// ErrStale, ErrRacy or ErrUnknown for those replies and any other error
// for an error reply.
func ResolveReply(a *Answer, err error) [][]byte {
	if err != nil {
		return statusReply(err)
	}
	f := make([][]byte, 0, 1+answerFields)
	f = append(f, []byte(ReplyOK), strconv.AppendUint(nil, a.Generation, 10), []byte(a.Rule), strconv.AppendInt(nil, int64(a.Line), 10))
	state := a.Program.State
	if state == "" {
		state = ProgramUnchecked
	}
	for _, s := range []string{a.Key, a.Root, a.Options, a.Refusal, state, a.Program.Reason} {
		f = append(f, []byte(s))
	}
	return f
}

// statusReply is the reply that says err: ErrStale, ErrRacy and ErrUnknown
// have statuses of their own, any other error is an error reply (a
// *RefusedError of the reason it carries).
func statusReply(err error) [][]byte {
	var refused *RefusedError
	if errors.As(err, &refused) {
		return ErrorReply(refused.Reason)
	}
	for _, s := range []struct {
		err    error
		status string
	}{{ErrStale, ReplyStale}, {ErrRacy, ReplyRacy}, {ErrUnknown, ReplyUnknown}} {
		if errors.Is(err, s.err) {
			return [][]byte{[]byte(s.status)}
		}
	}
	return ErrorReply(err.Error())
}

// ParseResolveReply reads the reply to a resolve: the answer, or ErrStale,
// ErrRacy, ErrUnknown, a *RefusedError, or ErrFrame for a malformed one.
// The answer is not yet checked against the address: see Match.
func ParseResolveReply(reply [][]byte) (*Answer, error) {
	status, f, err := SplitReply(reply)
	if err != nil {
		return nil, err
	}
	switch status {
	case ReplyOK:
	case ReplyStale:
		return nil, ErrStale
	case ReplyRacy:
		return nil, ErrRacy
	case ReplyUnknown:
		return nil, ErrUnknown
	default:
		return nil, unexpected(status)
	}
	if len(f) != answerFields {
		return nil, fmt.Errorf("%w: an answer has %d fields, not %d", ErrFrame, answerFields, len(f))
	}
	gen, err := parseUint("generation", f[0])
	if err != nil {
		return nil, err
	}
	line, err := parseUint("line", f[2])
	if err != nil {
		return nil, err
	}
	if line > 1<<31 {
		return nil, fmt.Errorf("%w: line %d", ErrFrame, line)
	}
	switch string(f[7]) {
	case ProgramUnchecked, ProgramReady, ProgramMissing, ProgramInterpreterMissing, ProgramLibrariesMissing:
	default:
		return nil, fmt.Errorf("%w: program state %q", ErrFrame, f[7])
	}
	return &Answer{
		Generation: gen, Rule: string(f[1]), Line: int(line), Key: string(f[3]),
		Root: string(f[4]), Options: string(f[5]), Refusal: string(f[6]),
		Program: ProgramCheck{State: string(f[7]), Reason: string(f[8])},
	}, nil
}

// ErrAnswer is returned for an answer that fails validation.
var ErrAnswer = errors.New("malformed answer")

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
	e, err := conf.EntryOf(a.Line, a.Key, a.Root, a.Options)
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
