package main

import (
	"flag"
	"fmt"

	"github.com/virtuald/virtuald/internal/install"
	"golang.org/x/sys/unix"
)

// install builds a root: the programs with everything the loader needs,
// optionally devices and a user's lines (see package install).
func (e *env) install(args []string) int {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var o install.Options
	fs.BoolVar(&o.DryRun, "n", false, "print what would change, change nothing")
	fs.BoolVar(&o.Dev, "dev", false, "make dev/null, dev/zero, dev/urandom, and dev/ for ipwatchd's log relay")
	fs.StringVar(&o.User, "user", "", "write the passwd and group lines of this host user into the root's etc/")
	if err := fs.Parse(args); err != nil || fs.NArg() < 1 || (fs.NArg() < 2 && !o.Dev && o.User == "") {
		fmt.Fprint(e.stderr, "usage: ipwatchctl install [-n] [-dev] [-user NAME] ROOT PROGRAM...\n")
		return 2
	}
	if unix.Geteuid() != 0 && !o.DryRun {
		return e.fail("install is for root (a root's files must be root's)")
	}
	o.Out = e.stdout
	root := fs.Arg(0)
	n, err := install.Run(root, fs.Args()[1:], o)
	if err != nil {
		return e.fail("install: %v", err)
	}
	switch {
	case n == 0:
		fmt.Fprintf(e.stdout, "%s: nothing to change, already installed\n", root)
	case o.DryRun:
		fmt.Fprintf(e.stdout, "%s: %d changes would be made (dry run: nothing changed)\n", root, n)
	default:
		fmt.Fprintf(e.stdout, "%s: %d changes\n", root, n)
	}
	return 0
}
