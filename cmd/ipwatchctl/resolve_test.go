package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

// resolve names user= and group= as the entry gives them: no empty group=
// beside a user with its primary group.
func TestResolveCredentials(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	root := roots.Root("r", "")
	conf := roots.WriteConf("conf", "192.0.2.1 "+root+" user=nobody", "192.0.2.2 "+root+" user=nobody group=nogroup", "192.0.2.3 "+root)
	for addr, want := range map[string]string{
		"192.0.2.1": "served from " + root + " as user=nobody (",
		"192.0.2.2": "served from " + root + " as user=nobody group=nogroup (",
		"192.0.2.3": "served from " + root + " (",
	} {
		if code, out, _ := runCtl("-socket", filepath.Join(t.TempDir(), "none"), "resolve", "-conf", conf, addr); code != 0 || !strings.Contains(out, want) {
			t.Errorf("resolve %s: exit %d: %q, want %q", addr, code, out, want)
		}
	}
}
