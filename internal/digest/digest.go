// Package digest names what a conf file means, for hosts that must
// serve alike. It is apart from package conf so that virtuald, which
// imports conf once per connection, does not also load a hash it never
// uses.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"

	"github.com/virtuald/virtuald/internal/conf"
)

// Of names what the file f means, not how it is written: a SHA-256 of
// its entries in canonical form (key, root, user=, group=; invalid ones
// marked), sorted, and of whether its catch-alls are suspended. Comments,
// blank lines, white space, line order and the spelling of keys
// (2001:DB8::1 or 2001:db8::1) leave it unchanged, since none changes an
// answer; any change to an entry changes it. Hosts that share a virtual
// IP compare it to know that they would serve the same roots.
//
// It covers the text only: the roots' contents and the users and groups
// named are each host's own (a name may be another uid elsewhere).
func Of(f *conf.File) string {
	lines := make([]string, 0, f.Len()+1)
	for _, e := range f.All() {
		l := e.String()
		if e.Err != nil {
			l += " invalid"
		}
		lines = append(lines, l)
	}
	// Keys are unique among the entries (a duplicate is left out), so
	// this order is the keys' order, whatever the file's.
	slices.Sort(lines)
	if f.CatchAllsSuspended() {
		lines = append(lines, "catch-alls suspended")
	}
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
