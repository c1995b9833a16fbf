package main

import (
	"sync"
	"time"
)

// logLimit lets one line a second through per entry, so that a flood's
// refusals cost a close, not a log line each: count says how many were
// not logged since the last line that was (to say in the next), or -1
// when this one is not to be logged.
type logLimit struct {
	mu   sync.Mutex
	last map[string]*limited
}

type limited struct {
	at      time.Time
	dropped int
}

func (l *logLimit) count(entry string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]*limited{}
	}
	e := l.last[entry]
	if e == nil {
		if len(l.last) >= maxLimited {
			clear(l.last) // bounded: forgetting only lets a line more through
		}
		e = &limited{}
		l.last[entry] = e
	} else if now.Sub(e.at) < time.Second {
		e.dropped++
		return -1
	}
	n := e.dropped
	e.at, e.dropped = now, 0
	return n
}

const maxLimited = 4096 // entries whose refusals logLimit remembers
