package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/virtuald/virtuald/internal/conf"
)

const usage = `usage: ipwatchctl check CONF...

  check    validate conf files offline, with the rules virtuald applies:
           every problem as FILE:LINE: what is wrong; exit 0 when clean, 1 when not
`

// run is the whole command, with its output injected so that tests run it
// in-process.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "check":
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		return check(args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "ipwatchctl: unknown command %s\n%s", strconv.Quote(args[0]), usage)
	return 2
}

// check validates each file: the text rules first, then every entry
// against the system (its root, user and group), as virtuald would.
func check(paths []string, out io.Writer) int {
	status := 0
	for _, path := range paths {
		f, err := conf.Load(path)
		if err != nil {
			fmt.Fprintln(out, err)
			status = 1
			continue
		}
		problems := len(f.Errors)
		for _, e := range f.Errors {
			fmt.Fprintln(out, e)
		}
		invalid := 0
		for _, e := range f.Entries {
			if e.Err != nil {
				invalid++
				continue
			}
			if err := e.Validate(); err != nil {
				fmt.Fprintf(out, "%s:%d: %s: %v\n", path, e.Line, e.Key, err)
				invalid++
				problems++
			}
		}
		fmt.Fprintf(out, "%s: %d entries, %d invalid, %d problems\n", path, len(f.Entries), invalid, problems)
		if problems > 0 {
			status = 1
		}
	}
	return status
}
