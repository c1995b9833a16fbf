package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// usage is logged when virtuald is started the wrong way.
const usage = "usage: virtuald [-socket PATH] [-allow-wildcard-dgram] CONF PROGRAM [ARG...] (started by inetd with the connection on fd 0), or virtuald -accept [-socket PATH] [-max-children N] [-max-per-entry N] [-stop-timeout DURATION] [-idle-exit DURATION] CONF PROGRAM [ARG...] (with a listening socket), or virtuald -version (prints its version)"

// options are virtuald's flags. Only these start with '-': the conf path
// comes next, as in the seed's inetd lines.
type options struct {
	version     bool // print the version and exit
	help        bool // print the usage and exit (-h, -help, --help)
	socket      string
	accept      bool
	maxChildren int
	maxPerEntry int
	stopTimeout time.Duration // accept mode: how long SIGTERM waits for running services
	idleExit    time.Duration // accept mode: exit after this long without connections (0: never)
	// allowWildcardDgram serves a "dgram ... wait" socket bound to a
	// wildcard address, which carries every address's datagrams to the
	// one service started for the first.
	allowWildcardDgram bool
}

func parseOptions(args []string) (options, []string, error) {
	o := options{maxChildren: defaultMaxChildren, maxPerEntry: defaultMaxPerEntry, stopTimeout: defaultStopTimeout}
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
			o.version = true
			continue
		case "h", "help":
			o.help = true
			continue
		case "accept":
			o.accept = true
			continue
		case "allow-wildcard-dgram":
			o.allowWildcardDgram = true
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
			o.socket = value
			continue
		case "max-children":
			n, err = strconv.Atoi(value)
			o.maxChildren = n
		case "max-per-entry":
			n, err = strconv.Atoi(value)
			o.maxPerEntry = n
		case "stop-timeout", "idle-exit":
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return o, nil, fmt.Errorf("-%s takes a duration (e.g. 30s)", name)
			}
			if name == "stop-timeout" {
				o.stopTimeout = d
			} else {
				o.idleExit = d
			}
			continue
		default:
			return o, nil, fmt.Errorf("unknown option -%s", name)
		}
		if err != nil || n < 1 {
			return o, nil, fmt.Errorf("-%s takes a positive number", name)
		}
	}
	if o.idleExit > 0 && !o.accept {
		return o, nil, fmt.Errorf("-idle-exit is for accept mode (-accept)")
	}
	return o, append([]string{args[0]}, rest...), nil
}
