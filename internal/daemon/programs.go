package daemon

import (
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/ipc/admin"
	"github.com/virtuald/virtuald/internal/service"
	"github.com/virtuald/virtuald/internal/superserver"
)

// program is one program the services of a conf file start inside its
// roots, with the PATH virtuald looks it up in there: two services that
// name it alike under the same PATH are checked once.
type program struct {
	name     string   // as the super-server's line gives it
	path     string   // the PATH virtuald has ("" for none: service.DefaultPath)
	services []string // the services that start it, as "NAME at FROM"
}

// programsOf lists the distinct programs of services, in the order they
// are first named.
func programsOf(services []superserver.Service) []program {
	var out []program
	for _, sv := range services {
		label := sv.Name + " at " + sv.From
		i := slices.IndexFunc(out, func(p program) bool { return p.name == sv.Program && p.path == sv.Path })
		if i < 0 {
			out = append(out, program{name: sv.Program, path: sv.Path})
			i = len(out) - 1
		}
		out[i].services = append(out[i].services, label)
	}
	return out
}

func (p program) env() []string {
	if p.path == "" {
		return nil
	}
	return []string{"PATH=" + p.path}
}

// programCheck is what one validator pass found of one program in every
// root of a file whose entry is valid: only the failures are kept, by
// line, with their reasons stored once (most roots that lack a program
// lack it for the same reason).
type programCheck struct {
	program
	failures []programFailure
	reasons  []string
}

type programFailure struct {
	line   int32
	state  uint8 // index into programStates
	reason uint32
}

// programStates are the states a program can be in inside a root; the
// first is the good one.
var programStates = []string{admin.ProgramReady, admin.ProgramMissing, admin.ProgramInterpreterMissing, admin.ProgramLibrariesMissing}

func programState(err error) uint8 {
	switch {
	case errors.Is(err, service.ErrInterpreterMissing):
		return 2
	case errors.Is(err, service.ErrLibrariesMissing):
		return 3
	}
	return 1
}

// rootPrograms checks every program inside each root once in a pass (up
// to maxProgramRoots roots, then once per entry): a pass costs what the
// distinct roots hold, however many lines map them.
type rootPrograms map[string][]error // per root, per program; nil when the root cannot be opened

const maxProgramRoots = 1 << 16

func (rp rootPrograms) check(root string, programs []*programCheck) []error {
	if results, ok := rp[root]; ok {
		return results
	}
	results := checkPrograms(root, programs)
	if len(rp) < maxProgramRoots {
		rp[root] = results
	}
	return results
}

func checkPrograms(root string, programs []*programCheck) []error {
	d, err := chroot.Open(root)
	if err != nil { // the root's own check failed in between: said by the entry's state
		return nil
	}
	defer d.Close()
	results := make([]error, len(programs))
	r := service.In(d.Fd())
	for i, p := range programs {
		_, results[i] = r.Check(p.name, p.env())
	}
	return results
}

// record adds one entry's result for p.
func (p *programCheck) record(line int, err error) {
	if err == nil {
		return
	}
	why := err.Error()
	i := slices.Index(p.reasons, why)
	if i < 0 {
		p.reasons = append(p.reasons, why)
		i = len(p.reasons) - 1
	}
	p.failures = append(p.failures, programFailure{line: int32(line), state: programState(err), reason: uint32(i)})
}

// at returns the state and reason of p in the root of the entry on line.
// The failures are recorded in line order.
func (p *programCheck) at(line int) (state, reason string) {
	i := sort.Search(len(p.failures), func(i int) bool { return int(p.failures[i].line) >= line })
	if i < len(p.failures) && int(p.failures[i].line) == line {
		f := p.failures[i]
		return programStates[f.state], p.reasons[f.reason]
	}
	return admin.ProgramReady, ""
}

// programIn says what pass r found of the program name, looked up in
// PATH path, inside the root of the entry on line: unchecked when r is
// nil (no pass over this snapshot yet), when the root failed the pass,
// or when no service of the file starts that program.
func (r *rootCheck) programIn(line int, name, path string) ipc.ProgramCheck {
	if r == nil || r.failedLine(line) {
		return ipc.ProgramCheck{State: ipc.ProgramUnchecked}
	}
	for _, p := range r.programs {
		// execvp looks a name with a slash up nowhere.
		if p.name == name && (p.path == path || strings.Contains(name, "/")) {
			state, reason := p.at(line)
			return ipc.ProgramCheck{State: state, Reason: reason}
		}
	}
	return ipc.ProgramCheck{State: ipc.ProgramUnchecked}
}

// entryPrograms says, for the entry on line, whether each program that
// services (its file's) start is ready inside its root. r is the
// validator's pass over these services (nil before it is done); valid is
// whether the entry itself is served.
func entryPrograms(r *rootCheck, services []superserver.Service, line int, valid bool) []admin.ProgramStatus {
	if r == nil {
		var out []admin.ProgramStatus
		for _, p := range programsOf(services) {
			out = append(out, admin.ProgramStatus{Program: p.name, Services: p.services, State: admin.ProgramUnchecked,
				Reason: "not checked yet: ipwatchd checks every root in the background after a change"})
		}
		return out
	}
	out := make([]admin.ProgramStatus, len(r.programs))
	for i, p := range r.programs {
		ps := admin.ProgramStatus{Program: p.name, Services: p.services}
		switch {
		case !valid:
			ps.State, ps.Reason = admin.ProgramUnchecked, "the entry itself is refused"
		case r.failedLine(line):
			ps.State, ps.Reason = admin.ProgramUnchecked, "the entry's root failed the last check"
		default:
			ps.State, ps.Reason = p.at(line)
		}
		out[i] = ps
	}
	return out
}

// notReady counts the entries with a program that cannot start.
func (r *rootCheck) notReady() int {
	if r == nil {
		return 0
	}
	var lines []int32
	for _, p := range r.programs {
		for _, f := range p.failures {
			lines = append(lines, f.line)
		}
	}
	slices.Sort(lines)
	return len(slices.Compact(lines))
}

// programProblems lists each program that cannot start in an entry's
// root, as `ipwatchctl check -program` says it, at most limit of them,
// and how many more there are.
func programProblems(path string, s *snapshot, r *rootCheck, limit int) (out []string, more int) {
	if r == nil {
		return nil, 0
	}
	type failure struct {
		line int
		text string
	}
	var all []failure
	for _, p := range r.programs {
		for _, f := range p.failures {
			if len(all) >= limit {
				more++
				continue
			}
			e := s.file.EntryAt(int(f.line))
			if e == nil {
				continue
			}
			all = append(all, failure{int(f.line), path + ":" + strconv.Itoa(int(f.line)) + ": " + e.Key + ": " + p.name + " (" + strings.Join(p.services, ", ") + ") cannot start in " + e.Root + ": " + p.reasons[f.reason]})
		}
	}
	slices.SortStableFunc(all, func(a, b failure) int { return a.line - b.line })
	for _, f := range all {
		out = append(out, f.text)
	}
	return out, more
}
