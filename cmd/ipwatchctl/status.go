package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
)

// printStatus renders the status for a person: a header, then per conf file
// its entries by state and a table of those the query listed (with the
// reason of each invalid one under it, and how to list more), then the
// addresses no entry serves.
func printStatus(w io.Writer, st *admin.Status, q admin.StatusQuery) {
	printHeader(w, st)
	for _, c := range st.Confs {
		printConf(w, &c)
		printEntries(w, c.Entries, perConnection(&c), st.Shedding == "on")
		if c.More > 0 {
			fmt.Fprintf(w, "  ... and %d more %s (ipwatchctl status %s)\n", c.More, plural(c.More, "entry", "entries"), moreHint(q))
		}
	}
	printUnmapped(w, st.Unmapped)
}

// moreHint says how to list what a status left out.
func moreHint(q admin.StatusQuery) string {
	var args []string
	if q.State != "" {
		args = append(args, "-state "+q.State)
	}
	args = append(args, "-all")
	if q.Match.IsValid() {
		args = append(args, q.Match.String())
	}
	return strings.Join(args, " ") + ", or -state, -limit, ADDRESS or PREFIX"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func printHeader(w io.Writer, st *admin.Status) {
	fmt.Fprintf(w, "ipwatchd %s, up %s, netlink resyncs %d, bpf %s\n", st.Version,
		(time.Duration(st.UptimeSeconds) * time.Second).String(), st.NetlinkResyncs, st.BPF)
	fmt.Fprintf(w, "questions answered %d, stale %d, racy %d, unknown conf %d, errors %d\n",
		st.Queries.OK, st.Queries.Stale, st.Queries.Racy, st.Queries.Unknown, st.Queries.Error)
	switch {
	case st.Shedding == "on":
		fmt.Fprintf(w, "shedding on: the kernel refuses per-connection services' connections past rate= on %d %s\n",
			st.ShedLimited, plural(st.ShedLimited, "address and port", "addresses and ports"))
	case st.Shedding != "":
		fmt.Fprintf(w, "shedding %s\n", st.Shedding)
	}
	for _, p := range st.ServiceProblems {
		fmt.Fprintf(w, "service problem: %s: %s\n", p.From, p.Reason)
	}
}

// printConf prints a conf file's lines above its entries.
func printConf(w io.Writer, c *admin.ConfStatus) {
	loaded := "never loaded"
	if c.Generation > 0 {
		loaded = fmt.Sprintf("generation %d, loaded %s", c.Generation, c.LoadedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "\n%s: %s\n", c.Path, loaded)
	if strings.HasPrefix(c.Adopted, "asked about") {
		fmt.Fprintf(w, "  served because it was %s; forgotten when the file is gone\n", c.Adopted)
	}
	switch {
	case c.Error != "" && c.Generation == 0:
		fmt.Fprintf(w, "  cannot be loaded (virtuald reads the file itself): %s\n", c.Error)
	case c.Error != "":
		fmt.Fprintf(w, "  the conf file cannot be used as it is now: %s\n  every connection is refused until it is fixed (generation %d was the last good copy)\n", c.Error, c.Generation)
	}
	if c.Generation == 0 {
		return
	}
	n := c.Counts.Live + c.Counts.Absent + c.Counts.Invalid
	checked := ""
	switch {
	case c.Checking:
		checked = " (roots still being checked: the entries not listed count as valid until then)"
	case !c.CheckedAt.IsZero():
		checked = fmt.Sprintf(" (roots of entries not listed checked %s)", c.CheckedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  %d %s: %d live, %d absent, %d invalid%s\n", n, plural(n, "entry", "entries"), c.Counts.Live, c.Counts.Absent, c.Counts.Invalid, checked)
	for _, sv := range c.Services {
		fmt.Fprintf(w, "  service: %s\n", describeService(sv))
	}
	if c.ConnectionsCounted != "" {
		fmt.Fprintf(w, "  connections: %s\n", c.ConnectionsCounted)
	}
	if len(c.Services) > 0 {
		switch {
		case c.ProgramsCheckedAt.IsZero():
			fmt.Fprintf(w, "  programs: not checked yet inside the roots\n")
		default:
			fmt.Fprintf(w, "  programs: %d %s with a program that cannot start (checked inside every root %s)\n",
				c.ProgramsNotReady, plural(c.ProgramsNotReady, "entry", "entries"), c.ProgramsCheckedAt.UTC().Format(time.RFC3339))
		}
	}
	for _, p := range c.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	if c.ProblemsMore > 0 {
		fmt.Fprintf(w, "  ... and %d more problems (ipwatchctl check %s lists them all)\n", c.ProblemsMore, c.Path)
	}
}

// perConnection names the services of a conf file that start one
// virtuald per connection, whose entries' rate= the kernel enforces
// before the super-server accepts (when ipwatchd sheds), and virtuald
// only after it started one for the connection otherwise.
func perConnection(c *admin.ConfStatus) []string {
	var names []string
	for _, sv := range c.Services {
		if !sv.Accept {
			names = append(names, sv.Name)
		}
	}
	return names
}

// printEntries prints a table of entries, then the reasons and warnings
// under it; perConn names the file's services that run one virtuald per
// connection (see perConnection), shedding says whether the kernel
// enforces rate= for them.
func printEntries(w io.Writer, entries []admin.EntryStatus, perConn []string, shedding bool) {
	if len(entries) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	programs := slices.ContainsFunc(entries, func(en admin.EntryStatus) bool { return len(en.Programs) > 0 })
	head := "  KEY\tROOT\tUSER\tISOLATE\tSTATE\tADDRESSES\tCONNECTIONS\tRESOLVED\tLIMITS\tREFUSED"
	if programs {
		head += "\tPROGRAMS"
	}
	fmt.Fprintln(tw, head)
	for _, en := range entries {
		root := en.Root
		if root == "" {
			root = "-" // a line without a root: an empty column would be read as the next one
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d", en.Key, root, userOf(en), isolationOf(en), en.State, addressesOf(en), connectionsOf(en), en.Resolved,
			limitsOf(en), en.Refused)
		if programs {
			fmt.Fprintf(tw, "\t%s", programsOf(en))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	for _, en := range entries {
		if en.Reason != "" {
			fmt.Fprintf(w, "  %s (line %d) is %s: %s\n", en.Key, en.Line, en.State, en.Reason)
		}
		for _, p := range en.Programs {
			switch {
			case p.State == admin.ProgramReady || en.State == admin.StateInvalid:
			case p.State == admin.ProgramUnchecked:
				fmt.Fprintf(w, "  %s (line %d): %s is not checked: %s\n", en.Key, en.Line, p.Program, p.Reason)
			default:
				fmt.Fprintf(w, "  %s (line %d): %s cannot start (%s): %s\n", en.Key, en.Line, p.Program, p.State, p.Reason)
			}
		}
		if en.Warning != "" {
			fmt.Fprintf(w, "  %s (line %d): warning: %s\n", en.Key, en.Line, en.Warning)
		}
		if rate := rateOf(en.Limits); rate != "" && len(perConn) > 0 {
			if shedding {
				fmt.Fprintf(w, "  %s (line %d): %s is enforced in the kernel for %s: %d shed\n", en.Key, en.Line, rate, strings.Join(perConn, ", "), en.Shed)
			} else {
				fmt.Fprintf(w, "  %s (line %d): %s is enforced for %s by each virtuald the super-server started, not before: shedding is off, so a flood still costs a start each and counts against the super-server's own rate limit\n",
					en.Key, en.Line, rate, strings.Join(perConn, ", "))
			}
		}
		if r := en.Relay; r != nil && r.State == "on" {
			fmt.Fprintf(w, "  %s (line %d): log relay on: %d relayed, %d dropped\n", en.Key, en.Line, r.Relayed, r.Dropped)
		} else if r != nil {
			fmt.Fprintf(w, "  %s (line %d): log relay off: %s\n", en.Key, en.Line, r.Reason)
		}
	}
}

// rateOf is the rate= of an entry's limits as status has them, or "".
func rateOf(limits string) string {
	for _, l := range strings.Fields(limits) {
		if strings.HasPrefix(l, "rate=") {
			return l
		}
	}
	return ""
}

// describeService says what a super-server starts virtuald for.
func describeService(sv admin.ServiceStatus) string {
	where := "every address"
	if sv.Address != "" {
		where = sv.Address
	}
	port := "port unknown"
	if sv.Port != 0 {
		port = fmt.Sprintf("port %d", sv.Port)
	}
	mode := "one virtuald per connection"
	if sv.Accept {
		mode = "virtuald -accept"
	}
	if sv.Isolate != "" && sv.Isolate != "all" {
		mode += ", -isolate " + sv.Isolate
	}
	return fmt.Sprintf("%s %s %s on %s (%s %s, %s): %s", sv.Name, sv.Transport, port, where, sv.SuperServer, sv.From, mode, strings.Join(sv.Args, " "))
}

// isolationOf is an entry's isolation, with the host name it gives.
func isolationOf(en admin.EntryStatus) string {
	switch {
	case en.Isolate == "":
		return "-" // an invalid entry
	case en.Hostname != "":
		return en.Isolate + "(" + en.Hostname + ")" // one word: scripts split the table on blanks
	}
	return en.Isolate
}

// limitsOf is an entry's limits in one word (scripts split the table on
// blanks): "max=16,rate=50/s", or "-".
func limitsOf(en admin.EntryStatus) string {
	if en.Limits == "" {
		return "-"
	}
	return strings.ReplaceAll(en.Limits, " ", ",")
}

// connectionsOf is an entry's connections, by port when it has several.
func connectionsOf(en admin.EntryStatus) string {
	total := strconv.FormatUint(en.Connections, 10)
	if len(en.Ports) < 2 {
		return total
	}
	var parts []string
	for _, p := range en.Ports {
		parts = append(parts, fmt.Sprintf("%d:%d", p.Port, p.Connections))
	}
	return total + " (" + strings.Join(parts, " ") + ")"
}

// programsOf sums up an entry's programs: "ready" when every one can
// start, else each that cannot with its state.
func programsOf(en admin.EntryStatus) string {
	var not []string
	for _, p := range en.Programs {
		if p.State != admin.ProgramReady {
			not = append(not, path.Base(p.Program)+": "+p.State)
		}
	}
	switch {
	case len(en.Programs) == 0:
		return "-"
	case len(not) == 0:
		return admin.ProgramReady
	}
	return strings.Join(not, ", ")
}

func printUnmapped(w io.Writer, unmapped []admin.Unmapped) {
	if len(unmapped) == 0 {
		return
	}
	fmt.Fprintln(w, "\naddresses no entry serves:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  ADDRESS\tINTERFACE\tCONNECTIONS")
	for _, u := range unmapped {
		fmt.Fprintf(tw, "  %s\t%s\t%d\n", u.Address, u.Interface, u.Connections)
	}
	tw.Flush()
}

// statusStream prints a streamed status: the header, each batch of
// entries as it arrives, then the end.
type statusStream interface {
	header(st *admin.Status)
	entries(conf string, es []admin.EntryStatus)
	end()
}

// tableStream prints a streamed status as printStatus would, one table
// per batch.
type tableStream struct {
	w    io.Writer
	st   *admin.Status
	conf string
}

func (t *tableStream) header(st *admin.Status) {
	t.st = st
	printHeader(t.w, st)
}

func (t *tableStream) entries(conf string, es []admin.EntryStatus) {
	var perConn []string
	for i := range t.st.Confs {
		if c := &t.st.Confs[i]; c.Path == conf {
			if conf != t.conf {
				printConf(t.w, c)
			}
			perConn = perConnection(c)
		}
	}
	t.conf = conf
	printEntries(t.w, es, perConn, t.st.Shedding == "on")
}

func (t *tableStream) end() { printUnmapped(t.w, t.st.Unmapped) }

// jsonStream prints a streamed status as the same JSON object as
// status -json, writing each entry as it arrives.
type jsonStream struct {
	w        io.Writer
	st       *admin.Status
	tail     []byte // what follows the confs list
	confTail []byte // what follows the open conf's entries
	open     string // the conf whose entries array is open
	nconf    int
	nentry   int
}

func (j *jsonStream) header(st *admin.Status) {
	j.st = st
	head := *st
	head.Confs = nil
	b, _ := json.Marshal(head)
	// {"version":...,"confs":null,"unmapped":[...]}: open the confs list.
	i := bytes.Index(b, []byte(`"confs":null`))
	fmt.Fprintf(j.w, "%s\"confs\":[", b[:i])
	j.tail = b[i+len(`"confs":null`):]
}

func (j *jsonStream) entries(conf string, es []admin.EntryStatus) {
	if conf != j.open {
		j.closeConf()
		for i := range j.st.Confs {
			if j.st.Confs[i].Path == conf {
				j.openConf(&j.st.Confs[i])
			}
		}
	}
	for _, e := range es {
		b, _ := json.Marshal(e)
		if j.nentry > 0 {
			fmt.Fprint(j.w, ",")
		}
		j.w.Write(b)
		j.nentry++
	}
}

// openConf prints a conf file's object up to its entries array.
func (j *jsonStream) openConf(c *admin.ConfStatus) {
	cs := *c
	cs.Entries = []admin.EntryStatus{}
	b, _ := json.Marshal(cs)
	i := bytes.Index(b, []byte(`"entries":[]`))
	if j.nconf > 0 {
		fmt.Fprint(j.w, ",")
	}
	fmt.Fprintf(j.w, "%s\"entries\":[", b[:i])
	j.confTail = b[i+len(`"entries":[]`):]
	j.open, j.nentry = c.Path, 0
	j.nconf++
}

func (j *jsonStream) closeConf() {
	if j.open != "" {
		fmt.Fprintf(j.w, "]%s", j.confTail)
		j.open = ""
	}
}

func (j *jsonStream) end() {
	j.closeConf()
	fmt.Fprintf(j.w, "]%s\n", j.tail)
}

func userOf(en admin.EntryStatus) string {
	switch {
	case en.User != "" && en.Group != "":
		return en.User + ":" + en.Group
	case en.User != "":
		return en.User
	case en.Group != "":
		return ":" + en.Group
	}
	return "-"
}

// addressesOf lists the interface addresses an entry serves, each with its
// label (eth0:1) or interface, and whether it is not live yet.
func addressesOf(en admin.EntryStatus) string {
	if len(en.Addresses) == 0 {
		return "-"
	}
	var as []string
	for _, a := range en.Addresses {
		where := a.Label
		if where == "" {
			where = a.Interface
		}
		if !a.Live {
			where += ", not live"
		}
		as = append(as, a.Address+" ("+where+")")
	}
	return strings.Join(as, ", ")
}
