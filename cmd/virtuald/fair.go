package main

import "sync"

// fairStarts gives the entries of accept mode their turns at starting a
// service: at most max starts run at once, and when more wait, the
// entries take turns, one start each, whatever the number each has
// waiting. A flooded entry then slows its own connections, not the
// others': starting a service (the fork, exec and namespaces) is what a
// connection costs, and forks are serialized in a Go process anyway
// (syscall.ForkLock), first come first served, so without turns one
// entry's 64 connections in line put another's 64 starts behind. Half
// the CPUs start services (at least one), the rest is for the services
// and everything else: on 2 cores, one start at a time gave another
// entry 0.30x its rate alone during a flood, two at a time 0.14x
// (BenchmarkFlood), for the same total.
type fairStarts struct {
	max     int
	mu      sync.Mutex
	busy    int                        // starts running
	order   []string                   // entries with starts waiting, in turn order
	waiting map[string][]chan struct{} // by entry, first come first
}

func newFairStarts(max int) *fairStarts {
	return &fairStarts{max: max, waiting: map[string][]chan struct{}{}}
}

// do runs start for entry in its turn. How many may wait is bounded by
// the caller (accept mode's -max-per-entry and -max-children slots).
func (q *fairStarts) do(entry string, start func()) {
	q.mu.Lock()
	if q.busy < q.max && len(q.order) == 0 {
		q.busy++
		q.mu.Unlock()
	} else {
		turn := make(chan struct{})
		if len(q.waiting[entry]) == 0 {
			q.order = append(q.order, entry)
		}
		q.waiting[entry] = append(q.waiting[entry], turn)
		q.mu.Unlock()
		<-turn // the finishing start hands its place over
	}
	defer q.next()
	start()
}

// next hands the place of a finished start to the next entry in turn,
// which goes to the back of the line if it has more waiting.
func (q *fairStarts) next() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		q.busy--
		return
	}
	entry := q.order[0]
	q.order = q.order[1:]
	w := q.waiting[entry]
	if len(w) > 1 {
		q.waiting[entry] = w[1:]
		q.order = append(q.order, entry)
	} else {
		delete(q.waiting, entry)
	}
	close(w[0])
}
