package conf

import (
	"errors"
	"fmt"
	"strings"
)

// Options are what may follow an entry's root: who its service runs as,
// the namespaces it runs in, the name it sees and its connection limits.
// One function parses
// them (parseOptions) and one writes them in canonical form
// (Options.String), which is also how they travel in the daemon's answers:
// a new option touches the parser and its user, never the protocol.
type Options struct {
	User       string    // user= as written, "" when absent
	Group      string    // group= as written, "" when absent
	Isolate    Isolation // isolate=, when IsolateSet
	IsolateSet bool      // false: the service gets the default (virtuald's -isolate, else IsolateAll)
	Hostname   string    // hostname=, "" when absent
	Limits               // max=, rate=, per-source=: zero when absent
}

// Isolation is a set of namespaces a service runs in, besides its root.
type Isolation uint8

// The namespaces; IsolateNone is the seed's chroot alone.
const (
	IsolateMount Isolation = 1 << iota // the root is the root of its own mount namespace
	IsolatePID                         // its own processes only, with a reaping pid 1
	IsolateIPC                         // its own System V IPC and POSIX message queues
	IsolateUTS                         // its own host name (hostname=)
	IsolateUser                        // root inside is an unprivileged uid outside (opt-in)

	IsolateNone Isolation = 0
	IsolateAll            = IsolateMount | IsolatePID | IsolateIPC | IsolateUTS
)

var isolationWords = []struct {
	word string
	bit  Isolation
}{{"mount", IsolateMount}, {"pid", IsolatePID}, {"ipc", IsolateIPC}, {"uts", IsolateUTS}, {"user", IsolateUser}}

const isolationHelp = "none, all, all,user, or a comma list of mount, pid, ipc, uts, user"

// ParseIsolation parses isolate='s value: none, all, or a comma list of
// mount, pid, ipc, uts and user, where all may stand for the first four
// (all,user). user needs mount: the root's files keep their owners
// inside through an idmapped mount of the root.
func ParseIsolation(s string) (Isolation, error) {
	switch s {
	case "none":
		return IsolateNone, nil
	case "":
		return 0, errors.New("empty value (" + isolationHelp + ")")
	}
	var i Isolation
	words := strings.Split(s, ",")
	for _, w := range words {
		bit := Isolation(0)
		for _, n := range isolationWords {
			if w == n.word {
				bit = n.bit
			}
		}
		switch {
		case w == "all" && i&IsolateAll == 0 && (len(words) == 1 || len(words) == 2 && strings.Contains(s, "user")):
			bit = IsolateAll
		case w == "all":
			return 0, errors.New(`"all" combines only with user (all,user)`)
		case w == "none":
			return 0, errors.New(`"none" stands alone`)
		case bit == 0:
			return 0, fmt.Errorf("unknown namespace %s (%s)", quote(w), isolationHelp)
		case i&bit != 0:
			return 0, fmt.Errorf("%s given twice", w)
		}
		i |= bit
	}
	if i&IsolateUser != 0 && i&IsolateMount == 0 {
		return 0, errors.New("user needs mount: the root is mapped into the user namespace by an idmapped mount")
	}
	return i, nil
}

// String gives the isolation as isolate= takes it, in canonical form.
func (i Isolation) String() string {
	if i == IsolateNone {
		return "none"
	}
	var words []string
	if i&IsolateAll == IsolateAll {
		words, i = []string{"all"}, i&^IsolateAll
	}
	for _, n := range isolationWords {
		if i&n.bit != 0 {
			words = append(words, n.word)
		}
	}
	return strings.Join(words, ",")
}

// Isolation is the isolation the service gets: the entry's own, else def
// (virtuald's -isolate, or IsolateAll without it).
func (o *Options) Isolation(def Isolation) Isolation {
	if o.IsolateSet {
		return o.Isolate
	}
	return def
}

// String gives the options in canonical form, as a conf line holds them
// after its root ("" for none).
func (o *Options) String() string {
	var b strings.Builder
	add := func(name, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(name + "=" + v)
	}
	if o.User != "" {
		add("user", o.User)
	}
	if o.Group != "" {
		add("group", o.Group)
	}
	if o.IsolateSet {
		add("isolate", o.Isolate.String())
	}
	if o.Hostname != "" {
		add("hostname", o.Hostname)
	}
	if l := o.Limits.String(); l != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(l)
	}
	return b.String()
}

// optionNames is what an error about an option lists.
const optionNames = "options are user=, group=, isolate=, hostname=, max=, rate= and per-source="

// parseOptions parses the fields after an entry's root.
func parseOptions(fields []string) (Options, error) {
	var o Options
	seen := map[string]bool{}
	for _, opt := range fields {
		name, value, ok := strings.Cut(opt, "=")
		if !ok {
			return Options{}, fmt.Errorf("unexpected field %s after the root (%s; paths with spaces are not supported)", quote(opt), optionNames)
		}
		if seen[name] {
			return Options{}, fmt.Errorf("%s= given twice", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "user", "group":
			if err = checkIDSyntax(value); err == nil && name == "user" {
				o.User = value
			} else if err == nil {
				o.Group = value
			}
		case "isolate":
			o.Isolate, err = ParseIsolation(value)
			o.IsolateSet = true
		case "hostname":
			err = checkHostname(value)
			o.Hostname = value
		case "max":
			o.Max, err = parseCount(value)
		case "per-source":
			o.PerSource, err = parseCount(value)
		case "rate":
			o.Rate, err = ParseRate(value)
		default:
			return Options{}, fmt.Errorf("unknown option %s (%s)", quote(name), optionNames)
		}
		if err != nil {
			return Options{}, fmt.Errorf("%s=%s: %v", name, quote(value), err)
		}
	}
	if o.Hostname != "" && o.IsolateSet && o.Isolate&IsolateUTS == 0 {
		return Options{}, fmt.Errorf("hostname=%s needs uts in isolate= (isolate=%s)", o.Hostname, o.Isolate)
	}
	if err := o.Limits.check(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// hostNameMax is the kernel's HOST_NAME_MAX.
const hostNameMax = 64

// checkHostname accepts a host name as RFC 1123 writes one: dot-separated
// labels of letters, digits and '-', none empty, none starting or ending
// with '-', at most 63 characters each and 64 in all.
func checkHostname(v string) error {
	if v == "" || len(v) > hostNameMax {
		return fmt.Errorf("a host name has 1 to %d characters", hostNameMax)
	}
	for label := range strings.SplitSeq(v, ".") {
		switch {
		case label == "":
			return errors.New("a host name has no empty label")
		case len(label) > 63:
			return errors.New("a label of a host name has at most 63 characters")
		case label[0] == '-' || label[len(label)-1] == '-':
			return errors.New("a label of a host name neither starts nor ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("a host name cannot hold %q", c)
			}
		}
	}
	return nil
}

// UserRange is how many ids a user namespace maps (isolate=user): the
// 16-bit ids that classic services and their etc/passwd use.
const UserRange = 65536

// UserBase is the uid and gid outside that root (uid 0) inside an
// isolate=user service of the root at path maps to; inside ids 0 to
// UserRange-1 map to UserBase to UserBase+UserRange-1. Like
// systemd-nspawn's --private-users=pick, the range is one of the 64Ki
// blocks from 0x80000 to 0x6fff0000 (above every ordinary user, below
// the ids systemd keeps for itself), picked by a hash of the root's
// path, so that every program that starts the same root's services maps
// it the same, with no state to keep. Two roots may pick the same block
// (1 in 28,664 for a pair): ipwatchctl check says so.
func UserBase(path string) uint32 {
	const first, blocks = 0x80000, (0x6fff0000 - 0x80000) / UserRange
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(path); i++ {
		h = (h ^ uint32(path[i])) * 16777619
	}
	return first + h%blocks*UserRange
}
