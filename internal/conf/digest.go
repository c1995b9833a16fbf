package conf

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
)

// Digest names what the file means, not how it is written: a SHA-256 of
// its entries in canonical form (key, root, user=, group=; invalid ones
// marked), sorted, and of whether its catch-alls are suspended. Comments,
// blank lines, white space, line order and the spelling of keys
// (2001:DB8::1 or 2001:db8::1) leave it unchanged, since none changes an
// answer; any change to an entry changes it. Hosts that share a virtual
// IP compare it to know that they would serve the same roots.
//
// It covers the text only: the roots' contents and the users and groups
// named are each host's own (a name may be another uid elsewhere).
func (f *File) Digest() string {
	lines := make([]string, 0, len(f.Entries)+1)
	for _, e := range f.Entries {
		l := e.String()
		if e.Err != nil {
			l += " invalid"
		}
		lines = append(lines, l)
	}
	// Keys are unique among the entries (a duplicate is left out), so
	// this order is the keys' order, whatever the file's.
	slices.Sort(lines)
	if f.suspect != 0 {
		lines = append(lines, "catch-alls suspended")
	}
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
