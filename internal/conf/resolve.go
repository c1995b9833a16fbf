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
	t, err := e.Resolve()
	if err != nil {
		return err
	}
	return t.Root.Close()
}

// RootWarning says, for an entry without user=, that its service runs as
// root inside its root ("" otherwise). The seed's meaning is kept (the
// service keeps virtuald's credentials), but root can leave a chroot, so
// check and status say so on every such entry.
func RootWarning(e *Entry) string {
	if e.User != "" {
		return ""
	}
	return "no user=: the service runs as root inside " + e.Root + ", and root can leave a chroot; give the entry user= (and group=) to confine it"
}
