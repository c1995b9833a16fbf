package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/cmdline"
)

// Every flag in virtuald's usage is described in its man page,
// docs/virtuald.8.md, and its synopsis is the usage's.
func TestManPageFlags(t *testing.T) {
	page, err := os.ReadFile("../../docs/virtuald.8.md")
	if err != nil {
		t.Fatal(err)
	}
	flags := regexp.MustCompile(`\[?(-[a-z-]+)`).FindAllStringSubmatch(cmdline.Usage, -1)
	for _, f := range flags {
		if !strings.Contains(string(page), "- `"+f[1]) {
			t.Errorf("%s is in virtuald's usage but not described in docs/virtuald.8.md (- `%s ...`: ...)", f[1], f[1])
		}
	}
	for _, form := range strings.Split(strings.TrimPrefix(cmdline.Usage, "usage: "), ", or ") {
		synopsis := form[:strings.Index(form, " (")]
		if !strings.Contains(string(page), "\n"+synopsis+"\n") {
			t.Errorf("the synopsis of docs/virtuald.8.md lacks %q", synopsis)
		}
	}
}
