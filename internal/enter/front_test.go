package enter

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// virtuald's front (init/front.c) starts an isolated service with Kept as
// its bounding set, written there as a number: the two stay equal.
func TestFrontKeptMask(t *testing.T) {
	src, err := os.ReadFile("init/front.c")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`#define KEPT_CAPS 0x([0-9a-f]+)UL`).FindSubmatch(src)
	if m == nil {
		t.Fatal("init/front.c defines no KEPT_CAPS")
	}
	got, err := strconv.ParseUint(string(m[1]), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if want := keptMask(); got != want {
		t.Errorf("init/front.c's KEPT_CAPS is %#x, Kept is %#x", got, want)
	}
}
