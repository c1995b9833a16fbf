package main

import "sync"

// fairStarts gives the entries of accept mode their turns at starting a
// service: at most max starts run at once in turns, and when more wait,
// the entries take turns, one start each, whatever the number each has
// waiting. A flooded entry then slows its own connections, not the
// others': starting a service (the fork, exec and namespaces) is what a
// connection costs, and forks are serialized in a Go process anyway
// (syscall.ForkLock), first come first served, so without turns one
// entry's 64 connections in line put another's 64 starts behind. Half
// the CPUs start services in turns (at least one), the rest is for the
// services and everything else: on 2 cores, one start at a time gave
// another entry 0.30x its rate alone during a flood, two at a time 0.14x
// (BenchmarkFlood), for the same total.
//
// Besides the turns, an entry with no start running and none other
// waiting has a lane of its own while fewer than spare starts run (the
// CPUs): its start begins at once, beside the flood's, instead of
// waiting for one of them; no entry runs two starts at once that way.
// An entry with a backlog (a flood) takes turns only: when its start
// ends while a lane's runs, its next waits for the lane's, since two
// starts at once slow each other (a quiet entry's start took 2-4 times
// as long beside the flood's, its wait for a turn nothing).
// BenchmarkFlood without limits, interleaved on 2 cores: 0.42-0.50 so,
// 0.33-0.39 with lanes for backlogs too, 0.26-0.32 without lanes; the
// favour of the quiet entry's service (favour.go) brings it to about
// half (BENCHMARKS.md, with what else was tried).
type fairStarts struct {
	max, spare int
	mu         sync.Mutex
	busy       int                        // starts running
	running    map[string]int             // starts running, by entry
	order      []string                   // entries with starts waiting, in turn order
	waiting    map[string][]chan struct{} // by entry, first come first
}

func newFairStarts(turns, spare int) *fairStarts {
	return &fairStarts{max: turns, spare: max(turns, spare), running: map[string]int{}, waiting: map[string][]chan struct{}{}}
}

// do runs start for entry in its turn. How many may wait is bounded by
// the caller (accept mode's -max-per-entry and -max-children slots).
func (q *fairStarts) do(entry string, start func()) {
	q.mu.Lock()
	if len(q.waiting[entry]) == 0 && (len(q.order) == 0 && q.busy < q.max || q.lane(entry, 0)) {
		q.busy++
		q.running[entry]++
		q.mu.Unlock()
	} else {
		turn := make(chan struct{})
		if len(q.waiting[entry]) == 0 {
			q.order = append(q.order, entry)
		}
		q.waiting[entry] = append(q.waiting[entry], turn)
		q.mu.Unlock()
		<-turn // next counted this start as running
	}
	defer q.next(entry)
	start()
}

// lane reports whether entry may start beside the turns: it has no start
// running, at most the one in hand waiting (waiting: 0 for a start that
// arrives, 1 for one in line), and fewer than spare run. q.mu is held.
// An entry with more waiting has a backlog: it takes turns only, so that
// its next start waits for a lane's to end instead of running beside it.
func (q *fairStarts) lane(entry string, waiting int) bool {
	return q.running[entry] == 0 && len(q.waiting[entry]) <= waiting && q.busy < q.spare
}

// next counts a start of entry as ended and gives the places free to the
// entries waiting, in turn order: a turn while fewer than max run, a lane
// to an entry with none running and no backlog; an entry that still has
// starts waiting goes to the back of the line.
func (q *fairStarts) next(entry string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.busy--
	if q.running[entry]--; q.running[entry] == 0 {
		delete(q.running, entry)
	}
	for i := 0; i < len(q.order); {
		e := q.order[i]
		if q.busy >= q.max && !q.lane(e, 1) {
			i++
			continue
		}
		q.order = append(q.order[:i:i], q.order[i+1:]...)
		w := q.waiting[e]
		if len(w) > 1 {
			q.waiting[e] = w[1:]
			q.order = append(q.order, e)
		} else {
			delete(q.waiting, e)
		}
		q.busy++
		q.running[e]++
		close(w[0])
	}
}
