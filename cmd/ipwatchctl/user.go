package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"

	"github.com/virtuald/virtuald/internal/crypt"
	"github.com/virtuald/virtuald/internal/install"
	"golang.org/x/sys/unix"
)

const maxPassword = 1024 // a password line read from stdin at most

// adduser adds a user that exists only inside a root (install.AddUser).
func (e *env) adduser(args []string) int {
	fs := flag.NewFlagSet("adduser", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	u := install.User{UID: -1}
	fs.IntVar(&u.UID, "uid", -1, "its uid and gid (default: the first free from 1000)")
	fs.StringVar(&u.Home, "home", "", "its home inside the root (default /home/NAME)")
	fs.StringVar(&u.Shell, "shell", "", "its shell inside the root (default /bin/sh)")
	fs.StringVar(&u.Gecos, "gecos", "", "its full name (etc/passwd's fifth field, which finger shows)")
	fromStdin := fs.Bool("password-stdin", false, "read its password from the first line of stdin (else it has none: no password login)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fmt.Fprint(e.stderr, "usage: ipwatchctl adduser [-uid N] [-home DIR] [-shell PATH] [-gecos TEXT] [-password-stdin] ROOT NAME\n")
		return 2
	}
	if unix.Geteuid() != 0 {
		return e.fail("adduser is for root (a root's etc/shadow is root's)")
	}
	u.Name = fs.Arg(1)
	if *fromStdin {
		if e.stdio[0] == nil {
			return e.fail("adduser: -password-stdin: no stdin")
		}
		pw, err := readPassword(e.stdio[0])
		if err != nil {
			return e.fail("adduser: %v", err)
		}
		if u.Hash, err = crypt.SHA512(pw); err != nil {
			return e.fail("adduser: %v", err)
		}
	}
	if err := install.AddUser(fs.Arg(0), u, e.stdout); err != nil {
		return e.fail("adduser: %v", err)
	}
	return 0
}

// deluser removes a root's user (install.DelUser); its home is kept.
func (e *env) deluser(args []string) int {
	if len(args) != 2 {
		fmt.Fprint(e.stderr, "usage: ipwatchctl deluser ROOT NAME\n")
		return 2
	}
	if unix.Geteuid() != 0 {
		return e.fail("deluser is for root (a root's etc/shadow is root's)")
	}
	if err := install.DelUser(args[0], args[1], e.stdout); err != nil {
		return e.fail("deluser: %v", err)
	}
	return 0
}

// readPassword reads one line: the password, without its line break.
func readPassword(stdin io.Reader) ([]byte, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(stdin, maxPassword+1), maxPassword+1).ReadSlice('\n')
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("-password-stdin: a line of at most %d bytes: %v", maxPassword, err)
	}
	pw := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	switch {
	case len(pw) == 0:
		return nil, fmt.Errorf("-password-stdin: an empty password")
	case len(line) > maxPassword:
		return nil, fmt.Errorf("-password-stdin: more than %d bytes", maxPassword)
	}
	return pw, nil
}
