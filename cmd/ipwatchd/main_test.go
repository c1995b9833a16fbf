package main

import (
	"bytes"
	"testing"

	"github.com/virtuald/virtuald/internal/buildinfo"
)

// ipwatchd -version prints its version and exits 0, starting nothing; a
// bad flag or argument is a usage error.
func TestFlags(t *testing.T) {
	for _, c := range []struct {
		args        []string
		code        int
		stdout      string
		stderrHolds string
	}{
		{[]string{"-version"}, 0, "ipwatchd " + buildinfo.Version() + "\n", ""},
		{[]string{"-frobnicate"}, 2, "", "flag provided but not defined: -frobnicate"},
		{[]string{"extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"-log-format", "xml"}, 2, "", "-log-format must be console or json"},
	} {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut, func(string) string { return "" })
		if code != c.code || out.String() != c.stdout || !bytes.Contains(errOut.Bytes(), []byte(c.stderrHolds)) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", c.args, code, out.String(), errOut.String())
		}
	}
}
