package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every command and flag in ipwatchctl's usage is in its man page,
// docs/ipwatchctl.8.md.
func TestManPageCommands(t *testing.T) {
	page, err := os.ReadFile("../../docs/ipwatchctl.8.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range regexp.MustCompile(`(?m)^  ([a-z]+) `).FindAllStringSubmatch(usage, -1) {
		if !strings.Contains(string(page), "- `"+cmd[1]+"`: ") {
			t.Errorf("command %s is not described in docs/ipwatchctl.8.md", cmd[1])
		}
	}
	for _, f := range regexp.MustCompile(`\[(-[a-z]+)`).FindAllStringSubmatch(usage, -1) {
		if !strings.Contains(string(page), "["+f[1]) {
			t.Errorf("%s is not in the synopsis of docs/ipwatchctl.8.md", f[1])
		}
	}
}
