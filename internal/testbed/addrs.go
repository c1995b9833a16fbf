package testbed

import (
	"strings"
)

// IP runs `ip args...` in the namespace and fails the test if it fails.
func (ns *NetNS) IP(args ...string) {
	ns.t.Helper()
	if out, err := ns.Exec("ip", args...).CombinedOutput(); err != nil {
		ns.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// AddDummy adds a link that holds addresses and carries no traffic, up or
// down as up says: a dummy, or an ifb where the kernel has no dummy driver
// (some VM kernels). Both are NOARP and have carrier, so they behave alike
// for addresses, and an ifb drops what it is sent.
func (ns *NetNS) AddDummy(name string, up bool) {
	ns.t.Helper()
	out, err := ns.Exec("ip", "link", "add", name, "type", "dummy").CombinedOutput()
	if err != nil {
		if !strings.Contains(string(out), "Unknown device type") {
			ns.t.Fatalf("ip link add %s type dummy: %v: %s", name, err, out)
		}
		ns.IP("link", "add", name, "type", "ifb")
	}
	if up {
		ns.IP("link", "set", name, "up")
	}
}
