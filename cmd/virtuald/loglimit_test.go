package main

import (
	"testing"
	"time"
)

// Refusals for an entry's limit are logged once a second, each saying how
// many were not.
func TestLogLimit(t *testing.T) {
	var l logLimit
	t0 := time.Now()
	if n := l.count("a", t0); n != 0 {
		t.Errorf("first: %d", n)
	}
	for i := 1; i <= 5; i++ {
		if n := l.count("a", t0.Add(time.Duration(i)*100*time.Millisecond)); n != -1 {
			t.Errorf("within the second: %d, want -1", n)
		}
	}
	if n := l.count("b", t0); n != 0 {
		t.Errorf("another entry: %d", n)
	}
	if n := l.count("a", t0.Add(time.Second)); n != 5 {
		t.Errorf("a second later: %d, want the 5 not logged", n)
	}
}
