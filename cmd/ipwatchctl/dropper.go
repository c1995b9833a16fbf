package main

import (
	"debug/elf"
	"path"
	"slices"
	"strings"

	"github.com/virtuald/virtuald/internal/elfdeps"
	"github.com/virtuald/virtuald/internal/service"
)

// Services come in two kinds. Those that drop privileges themselves (an
// FTP server authenticating through PAM, in.tftpd -u) must start as root,
// so their entries have no user=, and their users live in the root's own
// etc/passwd. The others get user= and never run as root. Started as an
// entry's user, a service of the first kind fails on every connection
// (in.tftpd: "cannot set groups for user"; in.ftpd: every login 530),
// which check can foresee from the program's dynamic symbols and libraries.

// privilegeCalls are the calls only root may make that a service uses to
// take on a user's groups, the first step of dropping privileges.
var privilegeCalls = []string{"initgroups", "setgroups"}

// dropsPrivileges says why the program at prog inside the root looks
// like a service that drops privileges itself ("" when it does not): it
// calls initgroups or setgroups, or links libpam. A file check cannot
// read as ELF says nothing.
func dropsPrivileges(root service.Root, prog string) string {
	var why []string
	if f, err := root.Open(prog); err == nil {
		// debug/elf reads section data through saferio: a header that
		// lies about a size fails at the end of the file instead of
		// allocating what it claims.
		if e, err := elf.NewFile(f); err == nil {
			syms, _ := e.ImportedSymbols()
			for _, s := range syms {
				if slices.Contains(privilegeCalls, s.Name) && !slices.Contains(why, "calls "+s.Name) {
					why = append(why, "calls "+s.Name)
				}
			}
		}
		f.Close()
	}
	if c, err := elfdeps.Resolve(root, prog, ""); err == nil {
		for _, o := range c.Objects[1:] {
			if strings.HasPrefix(path.Base(o.Path), "libpam.so") {
				why = append(why, "links libpam")
				break
			}
		}
	}
	return strings.Join(why, " and ")
}
