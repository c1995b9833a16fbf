package scripts

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtuald/virtuald/internal/testbed"
)

// scripts/fuzz counts as run only the pass Go's coordinator failed with
// its deadline race (go.dev/issue/75804) and no failing input; a pass
// that wrote a failing input, or failed otherwise, fails. The go command
// is a stand-in that prints what go test prints in each case.
func TestFuzzScript(t *testing.T) {
	const race = "fuzz: elapsed: 15s, execs: 1488757 (0/sec), new interesting: 1 (total: 160)\n--- FAIL: FuzzReply (15.15s)\n    context deadline exceeded\nFAIL\n"
	tests := []struct {
		name  string
		go_   string // the stand-in's script; $CORPUS is the target's corpus
		fails bool
	}{
		{"a clean pass", "echo ok; exit 0", false},
		{"the coordinator's deadline race", "printf '" + race + "'; exit 1", false},
		{"a failing input written", "echo x > \"$CORPUS/f00d\"; printf '" + race + "'; exit 1", true},
		{"another failure", "printf -- '--- FAIL: FuzzReply (1.00s)\\n    reply.go:10: bad\\n'; exit 1", true},
		{"a build failure", "echo 'undefined: x'; exit 2", true},
	}
	script, _ := filepath.Abs("fuzz")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			corpus := filepath.Join(dir, "pkg", "testdata", "fuzz", "FuzzReply")
			testbed.Must(t, os.MkdirAll(corpus, 0o755))
			goCmd := filepath.Join(dir, "go")
			testbed.Must(t, os.WriteFile(goCmd, []byte("#!/bin/sh\nCORPUS="+corpus+"\n"+tt.go_+"\n"), 0o755))
			cmd := exec.Command(script, "15s", filepath.Join(dir, "pkg"), "FuzzReply")
			cmd.Env = append(os.Environ(), "GO="+goCmd)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			switch {
			case err != nil && !errors.As(err, &exit):
				t.Fatal(err)
			case tt.fails != (err != nil):
				t.Errorf("exit %v, want failure %v; output:\n%s", err, tt.fails, out)
			case !tt.fails && strings.Contains(tt.go_, "deadline") && !strings.Contains(string(out), "go.dev/issue/75804"):
				t.Errorf("the race passed without saying so:\n%s", out)
			}
		})
	}
}
