package manpage

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

// pages returns every man page source under docs/.
func pages(t *testing.T) []string {
	t.Helper()
	srcs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("no man page sources in docs/: %v", err)
	}
	return srcs
}

// The README's copies of the pages' sections are the sections as they
// are: whoever edits one place and not the other is told here.
func TestReadmeInStep(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	synced, err := Sync(readme, func(path string) (*Page, error) { return Load(filepath.Join("../..", path)) })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(synced, readme) {
		t.Errorf("README.md differs from the man page sources it copies (edit docs/*.md, then make docs):\n%s", firstDiff(readme, synced))
	}
	if bytes.Count(readme, []byte("<!-- from docs/")) < 2 {
		t.Error("README.md has lost its regions copied from docs/")
	}
}

func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return "line " + strconv.Itoa(i+1) + ":\n  README: " + al[i] + "\n  docs:   " + bl[i]
		}
	}
	return "lengths differ"
}

// Every page renders without a warning from groff (what lintian checks
// with man --warnings), with the header and sections man(7) expects.
func TestPagesRender(t *testing.T) {
	groff := testbed.RequireTool(t, "groff")
	for _, src := range pages(t) {
		p, err := Load(src)
		if err != nil {
			t.Fatal(err)
		}
		roff := p.Roff("1.2.3", "2026-01-02")
		for _, want := range []string{".TH " + strings.ToUpper(p.Name) + " " + p.Section + ` "2026-01-02" "virtuald 1.2.3"`, "\n.SH NAME\n", "\n.SH SYNOPSIS\n", "\n.SH SEE ALSO\n"} {
			if !bytes.Contains(roff, []byte(want)) {
				t.Errorf("%s: no %q", src, want)
			}
		}
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = bytes.NewReader(roff)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("%s: groff: %v\n%s", src, err, out)
		}
	}
}

// The inline subset: code and bold become bold, backslashes and the dashes
// of options are escaped, hyphens inside words are kept, and a line that
// would start with a dot is guarded.
func TestInline(t *testing.T) {
	for in, want := range map[string]string{
		"`-socket PATH` or **invalid**": `\fB\-socket PATH\fR or \fBinvalid\fR`,
		"per-address, -flag, (-x) a\\b": `per-address, \-flag, (\-x) a\eb`,
		"a `lone backtick and * star":   "a `lone backtick and * star",
		"`C:\\dir`":                     `\fBC:\edir\fR`,
	} {
		if got := inline(in); got != want {
			t.Errorf("inline(%q) = %q, want %q", in, got, want)
		}
	}
	if got := line(".hidden request"); got != "\\&.hidden request\n" {
		t.Errorf("a leading dot: %q", got)
	}
}
