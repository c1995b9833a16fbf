package scripts

import (
	"os/exec"
	"strings"
	"testing"
)

// Every form git describe gives becomes a Debian version that sorts where
// it belongs (dpkg --compare-versions checks the order).
func TestDebversion(t *testing.T) {
	order := []struct{ in, want string }{
		{"0a5bb50", "0.0.0~git0a5bb50"},
		{"0a5bb50-dirty", "0.0.0~git0a5bb50.dirty"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-4-gabc1234", "1.2.3+git4.abc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+git4.abc1234.dirty"},
		{"v1.2.3-10-g0000000", "1.2.3+git10.0000000"},
	}
	prev := ""
	for _, c := range order {
		out, err := exec.Command("./debversion", c.in).Output()
		got := strings.TrimSpace(string(out))
		if err != nil || got != c.want {
			t.Errorf("debversion %s = %q, %v; want %q", c.in, got, err, c.want)
			continue
		}
		if prev != "" {
			if dpkg, err := exec.LookPath("dpkg"); err == nil && exec.Command(dpkg, "--compare-versions", prev, "lt", got).Run() != nil {
				t.Errorf("%s does not sort before %s", prev, got)
			}
		}
		prev = got
	}
}
