package main

import (
	"os/exec"
	"strings"
	"testing"
)

// virtuald starts once per connection, and every package it links runs
// its init and faults in its pages on every connection. This guards the
// graph against packages that cost that start and that virtuald never
// needs (a digest of the conf once pulled all of crypto in through the
// conf package).
func TestImportGraphStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v (needs the go command)", err)
	}
	forbidden := []string{"crypto", "net", "net/http", "encoding/json", "log", "log/syslog", "os/exec", "time/tzdata",
		"go.uber.org/zap", "github.com/vishvananda/netlink", "github.com/cilium/ebpf", "github.com/prometheus/client_golang/prometheus"}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") && f != "net" {
				t.Errorf("virtuald links %s (through %s)", f, d)
			}
		}
	}
}
