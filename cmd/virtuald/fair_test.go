package main

import (
	"sync"
	"testing"
	"time"
)

// With one start at a time, a flooded entry's queue does not hold
// another entry back: while "flood" has 50 starts waiting, "quiet"'s one
// start comes after at most one of them.
func TestFairStartsTakeTurns(t *testing.T) {
	q := newFairStarts(1, 1)
	var mu sync.Mutex
	var order []string
	record := func(name string) func() {
		return func() {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		}
	}
	hold := make(chan struct{})
	running := make(chan struct{})
	go q.do("flood", func() { close(running); <-hold }) // holds the one place
	<-running
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); q.do("flood", record("flood")) }()
	}
	waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.waiting["flood"]) == 50 })
	wg.Add(1)
	go func() { defer wg.Done(); q.do("quiet", record("quiet")) }()
	waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.waiting["quiet"]) == 1 })
	close(hold)
	wg.Wait()
	for i, name := range order {
		if name == "quiet" && i > 1 {
			t.Errorf("quiet started after %d of flood's starts, want at most 1", i)
		}
	}
	if q.busy != 0 || len(q.order) != 0 || len(q.waiting) != 0 {
		t.Errorf("after every start: busy %d, order %v, waiting %v", q.busy, q.order, q.waiting)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the condition never held")
		}
	}
}

// An entry with no start running has a lane of its own while fewer than
// spare starts run: "quiet" starts at once beside the flood's start,
// without waiting for it; the flood never runs two at once, and its
// queue keeps its turns.
func TestFairStartsOwnLane(t *testing.T) {
	q := newFairStarts(1, 2)
	hold := make(chan struct{})
	running := make(chan struct{})
	var mu sync.Mutex
	floodAtOnce, floodMax := 0, 0
	flood := func() {
		mu.Lock()
		floodAtOnce++
		floodMax = max(floodMax, floodAtOnce)
		mu.Unlock()
		time.Sleep(time.Millisecond) // a start takes time: overlaps show
		mu.Lock()
		floodAtOnce--
		mu.Unlock()
	}
	go q.do("flood", func() { close(running); <-hold }) // the flood's start in progress
	<-running
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); q.do("flood", flood) }()
	}
	waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.waiting["flood"]) == 20 })
	quiet := make(chan struct{})
	go q.do("quiet", func() { close(quiet) })
	select {
	case <-quiet: // started beside the flood's, which still holds its place
	case <-time.After(10 * time.Second):
		t.Fatal("quiet waited for the flood's start")
	}
	close(hold)
	wg.Wait()
	if floodMax != 1 {
		t.Errorf("the flood ran %d starts at once, want 1", floodMax)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.busy != 0 || len(q.order) != 0 || len(q.waiting) != 0 || len(q.running) != 0 {
		t.Errorf("after every start: busy %d, order %v, waiting %v, running %v", q.busy, q.order, q.waiting, q.running)
	}
}

// An entry with a backlog takes turns only: when the flood's start ends
// while "quiet"'s runs in its lane, the flood's next waits for quiet's
// to end, instead of taking a lane beside it (where the two starts
// slowed each other: BenchmarkFlood).
func TestFairStartsBacklogTakesTurns(t *testing.T) {
	q := newFairStarts(1, 2)
	holdFlood, holdQuiet := make(chan struct{}), make(chan struct{})
	floodRunning, quietRunning := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var order []string
	go q.do("flood", func() { close(floodRunning); <-holdFlood })
	<-floodRunning
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.do("flood", func() { mu.Lock(); order = append(order, "flood"); mu.Unlock() })
		}()
	}
	waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.waiting["flood"]) == 5 })
	wg.Add(1)
	go func() {
		defer wg.Done()
		q.do("quiet", func() { close(quietRunning); <-holdQuiet; mu.Lock(); order = append(order, "quiet"); mu.Unlock() })
	}()
	<-quietRunning // in its lane, beside the flood's start
	close(holdFlood)
	waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return q.busy == 1 && q.running["flood"] == 0 })
	close(holdQuiet)
	wg.Wait()
	if len(order) != 6 || order[0] != "quiet" {
		t.Errorf("starts in the order %v, want quiet's first, then the flood's 5", order)
	}
}
