// Package cmdline is virtuald's command line: its options, then CONF
// PROGRAM [ARG...]. It is its own package so that ipwatchd, reading the
// super-servers' configuration, understands a virtuald line exactly as
// virtuald does; it imports nothing heavier than strconv, time and conf
// (which virtuald links anyway), since virtuald starts once per
// connection.
package cmdline

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
)

// Usage is logged when virtuald is started the wrong way.
const Usage = "usage: virtuald [-socket PATH] [-isolate LIST] [-allow-wildcard-dgram] CONF PROGRAM [ARG...] (started by inetd with the connection on fd 0), or virtuald -accept [-socket PATH] [-isolate LIST] [-max-children N] [-max-per-entry N] [-stop-timeout DURATION] [-idle-exit DURATION] [-cpu-share entry|service] [-favour DURATION] CONF PROGRAM [ARG...] (with a listening socket), or virtuald -version (prints its version)"

// Defaults of the accept-mode limits: enough for a busy host, few enough
// that a flood of connections cannot fork the host to death, and a single
// customer cannot take every slot.
const (
	DefaultMaxChildren = 512
	DefaultMaxPerEntry = 64
)

// DefaultStopTimeout bounds the wait for running services after SIGTERM;
// past it they are killed, so a stop always ends (systemd's own stop
// timeout is 90 s).
const DefaultStopTimeout = 30 * time.Second

// DefaultFavour is how long accept mode favours the service of an entry
// that runs fewer services than the others (cmd/virtuald/favour.go): the
// start and first answer of a classic service, not its whole session.
const DefaultFavour = 20 * time.Millisecond

// The values of -cpu-share.
const (
	CPUShareEntry   = "entry"
	CPUShareService = "service"
)

// Options are virtuald's flags. Only these start with '-': the conf path
// comes next, as in the seed's inetd lines.
type Options struct {
	Version     bool // print the version and exit
	Help        bool // print the usage and exit (-h, -help, --help)
	Socket      string
	Accept      bool
	MaxChildren int
	MaxPerEntry int
	StopTimeout time.Duration // accept mode: how long SIGTERM waits for running services
	IdleExit    time.Duration // accept mode: exit after this long without connections (0: never)
	Favour      time.Duration // accept mode: how long a service of an entry below its share is favoured (0: never)
	// CPUShare is how accept mode weighs its services for the scheduler:
	// CPUShareEntry, one weight per entry (a cpu cgroup each, package
	// cpugroup), or CPUShareService, one per service (its session's
	// autogroup, with -favour), which is also what the first falls back
	// to where it cannot make cgroups.
	CPUShare string
	// AllowWildcardDgram serves a "dgram ... wait" socket bound to a
	// wildcard address, which carries every address's datagrams to the
	// one service started for the first.
	AllowWildcardDgram bool
	// Isolate is the isolation of the conf file's entries that have no
	// isolate= of their own (-isolate; conf.IsolateAll without it).
	Isolate conf.Isolation
}

// Parse reads the options of args (args[0] is virtuald's argv[0]) and
// returns them with the rest of the command line, args[0] first: CONF
// PROGRAM [ARG...] follow it when the line is complete.
func Parse(args []string) (Options, []string, error) {
	o := Options{MaxChildren: DefaultMaxChildren, MaxPerEntry: DefaultMaxPerEntry, StopTimeout: DefaultStopTimeout, Favour: DefaultFavour, CPUShare: CPUShareEntry, Isolate: conf.IsolateAll}
	favourSet, shareSet := false, false
	rest := args[1:]
	for len(rest) > 0 && strings.HasPrefix(rest[0], "-") {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(rest[0], "-"), "=")
		name = strings.TrimPrefix(name, "-")
		rest = rest[1:]
		if name == "" { // "--" ends the options
			break
		}
		switch name {
		case "version":
			o.Version = true
			continue
		case "h", "help":
			o.Help = true
			continue
		case "accept":
			o.Accept = true
			continue
		case "allow-wildcard-dgram":
			o.AllowWildcardDgram = true
			continue
		}
		if !hasValue {
			if len(rest) == 0 {
				return o, nil, fmt.Errorf("-%s needs a value", name)
			}
			value, rest = rest[0], rest[1:]
		}
		var n int
		var err error
		switch name {
		case "socket":
			o.Socket = value
			continue
		case "isolate":
			if o.Isolate, err = conf.ParseIsolation(value); err != nil {
				return o, nil, fmt.Errorf("-isolate %s: %v", strconv.Quote(value), err)
			}
			continue
		case "cpu-share":
			if value != CPUShareEntry && value != CPUShareService {
				return o, nil, fmt.Errorf("-cpu-share takes %s or %s", CPUShareEntry, CPUShareService)
			}
			o.CPUShare, shareSet = value, true
			continue
		case "max-children":
			n, err = strconv.Atoi(value)
			o.MaxChildren = n
		case "max-per-entry":
			n, err = strconv.Atoi(value)
			o.MaxPerEntry = n
		case "stop-timeout", "idle-exit", "favour":
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return o, nil, fmt.Errorf("-%s takes a duration (e.g. 30s)", name)
			}
			switch name {
			case "stop-timeout":
				o.StopTimeout = d
			case "idle-exit":
				o.IdleExit = d
			default:
				o.Favour, favourSet = d, true
			}
			continue
		default:
			return o, nil, fmt.Errorf("unknown option -%s", name)
		}
		if err != nil || n < 1 {
			return o, nil, fmt.Errorf("-%s takes a positive number", name)
		}
	}
	if o.IdleExit > 0 && !o.Accept {
		return o, nil, fmt.Errorf("-idle-exit is for accept mode (-accept)")
	}
	if favourSet && !o.Accept {
		return o, nil, fmt.Errorf("-favour is for accept mode (-accept)")
	}
	if shareSet && !o.Accept {
		return o, nil, fmt.Errorf("-cpu-share is for accept mode (-accept)")
	}
	return o, append([]string{args[0]}, rest...), nil
}
