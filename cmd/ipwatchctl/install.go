package main

import (
	"flag"
	"fmt"

	"github.com/virtuald/virtuald/internal/install"
	"golang.org/x/sys/unix"
)

const installUsage = "usage: ipwatchctl install [-n] [-dev] [-user NAME] [-profile NAME]... ROOT [PROGRAM...]\n" +
	"       ipwatchctl install -profile list\n"

// install builds a root: the programs with everything the loader needs,
// what the profiles name, optionally devices and a user's lines (see
// package install).
func (e *env) install(args []string) int {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var o install.Options
	var names []string
	fs.BoolVar(&o.DryRun, "n", false, "print what would change, change nothing")
	fs.BoolVar(&o.Dev, "dev", false, "make dev/null, dev/zero, dev/urandom, and dev/ for ipwatchd's log relay")
	fs.StringVar(&o.User, "user", "", "write the passwd and group lines of this host user into the root's etc/")
	fs.Func("profile", "what a service needs besides its program (repeat for several; list shows them)", func(s string) error {
		names = append(names, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		fmt.Fprint(e.stderr, installUsage)
		return 2
	}
	if len(names) == 1 && names[0] == "list" && fs.NArg() == 0 {
		return e.listProfiles()
	}
	if fs.NArg() < 1 || (fs.NArg() < 2 && !o.Dev && o.User == "" && len(names) == 0) {
		fmt.Fprint(e.stderr, installUsage)
		return 2
	}
	for _, n := range names {
		p, err := install.LoadProfile(e.profilesDir(), n)
		if err != nil {
			return e.fail("install: %v", err)
		}
		o.Profiles = append(o.Profiles, p)
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

// listProfiles prints every profile: its name, where it comes from and
// what it is for.
func (e *env) listProfiles() int {
	list, err := install.Profiles(e.profilesDir())
	if err != nil {
		return e.fail("install: %v", err)
	}
	for _, p := range list {
		fmt.Fprintf(e.stdout, "%-10s %-8s %s\n", p.Name, p.Source, p.About)
		if p.Inetd != "" {
			fmt.Fprintf(e.stdout, "%-19s inetd.conf: %s\n", "", p.Inetd)
		}
	}
	fmt.Fprintf(e.stdout, "(an admin's own: %s/NAME.profile, which takes precedence over a shipped one)\n", e.profilesDir())
	return 0
}

// profilesDir is where the admin's profiles are: $VIRTUALD_PROFILES, for
// tests, else install.ProfilesDir.
func (e *env) profilesDir() string {
	if d := e.getenv("VIRTUALD_PROFILES"); d != "" {
		return d
	}
	return install.ProfilesDir
}
