package conf

import (
	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/creds"
)

// Target is an entry checked against the running system: its root opened
// and checked component by component, its credentials resolved.
type Target struct {
	Root *chroot.Dir
	Cred *creds.Cred // nil: keep the caller's credentials
}

// Resolve runs the system half of validation for e. It is the only place
// that does, so virtuald (which then enters Target.Root) and ipwatchd and
// ipwatchctl check (which call Validate) apply the same rules. The caller
// must close Target.Root.
func (e *Entry) Resolve() (*Target, error) {
	if e.Err != nil {
		return nil, e.Err
	}
	c, err := creds.Resolve(e.User, e.Group)
	if err != nil {
		return nil, err
	}
	d, err := chroot.Open(e.Root)
	if err != nil {
		return nil, err
	}
	return &Target{Root: d, Cred: c}, nil
}

// Validate reports whether e would be served now, and if not, why.
func (e *Entry) Validate() error {
	var c Checker
	defer c.Close()
	return c.Validate(e)
}

// Checker validates many entries as Entry.Validate does, at one time:
// it resolves each user and group once and checks each root once (up to
// maxCheckedRoots of them), so that a pass over a million entries costs
// what their distinct roots and users cost, not a million reads of
// /etc/passwd and walks of a root's path; and a root's walk opens only
// the directories it does not share with the root before it
// (chroot.Checker). Close it when done.
type Checker struct {
	creds map[[2]string]error
	roots map[string]error
	dirs  chroot.Checker
}

// maxCheckedRoots bounds the roots a Checker remembers: past it each
// further root is checked for each of its entries. A file's entries
// (MaxFileSize: about two million at most) take more than this map
// does, so it keeps a pass over any file proportional to its roots.
const maxCheckedRoots = 1 << 20

// Close closes the directories the Checker keeps open.
func (c *Checker) Close() { c.dirs.Close() }

// Validate reports whether e would be served now, and if not, why.
func (c *Checker) Validate(e *Entry) error {
	if e.Err != nil {
		return e.Err
	}
	if e.User != "" || e.Group != "" {
		k := [2]string{e.User, e.Group}
		err, ok := c.creds[k]
		if !ok {
			_, err = creds.Resolve(e.User, e.Group)
			if c.creds == nil {
				c.creds = map[[2]string]error{}
			}
			c.creds[k] = err
		}
		if err != nil {
			return err
		}
	}
	if err, ok := c.roots[e.Root]; ok {
		return err
	}
	err := c.dirs.Check(e.Root)
	if c.roots == nil {
		c.roots = map[string]error{}
	}
	if len(c.roots) < maxCheckedRoots {
		c.roots[e.Root] = err
	}
	return err
}

// RootWarning says, for an entry whose service runs as root (no user=)
// without a mount namespace of its own (iso, its isolation), that it can
// leave its root ("" otherwise). The seed's meaning is kept (the service
// keeps virtuald's credentials), but root can leave a chroot, so check
// and status say so. In a mount namespace whose root is its root, with
// the capabilities that would undo that dropped, it cannot.
func RootWarning(e *Entry, iso Isolation) string {
	if e.User != "" || iso&IsolateMount != 0 {
		return ""
	}
	return "no user= and isolate=" + iso.String() + ": the service runs as root inside " + e.Root +
		" with nothing but a chroot, which root can leave; give the entry isolate=all (the default) or user= (and group=) to confine it"
}
