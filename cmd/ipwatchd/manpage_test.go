package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every flag ipwatchd takes is in its man page, docs/ipwatchd.8.md.
func TestManPageFlags(t *testing.T) {
	page, err := os.ReadFile("../../docs/ipwatchd.8.md")
	if err != nil {
		t.Fatal(err)
	}
	var help bytes.Buffer
	run([]string{"-h"}, &help, &help, func(string) string { return "" })
	flags := regexp.MustCompile(`(?m)^  (-[a-z-]+)`).FindAllStringSubmatch(help.String(), -1)
	if len(flags) < 5 {
		t.Fatalf("found %d flags in -h:\n%s", len(flags), help.String())
	}
	for _, f := range flags {
		// A flag with a value is described as `-flag VALUE`, a switch as `-flag`.
		if !strings.Contains(string(page), "`"+f[1]+" ") && !strings.Contains(string(page), "`"+f[1]+"`") {
			t.Errorf("%s is not described in docs/ipwatchd.8.md (as `%s ...`: ...)", f[1], f[1])
		}
	}
}
