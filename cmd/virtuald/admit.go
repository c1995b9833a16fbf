package main

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
)

// admission decides, in accept mode, whether a connection whose entry is
// known may go on to its service: the entry's limits from the conf
// (max=, rate=, per-source=) and -max-per-entry. It runs before anything
// is done for the connection (no root opened, no fork), so a refusal
// costs an accept, a resolution from the kept answers and a close.
// The counts of services running are given back by release when a
// service ends, or when none starts after all.
type admission struct {
	maxPerEntry int

	mu        sync.Mutex
	perEntry  map[string]int     // running services per entry (conf path and key)
	perSource map[sourceKey]int  // running services per entry and client address
	buckets   map[string]*bucket // rate= per entry
	refused   map[string]uint64  // refusals per entry since the start, for the log
	pending   map[string]uint64  // refusals per entry not yet reported to the daemon
}

type sourceKey struct {
	entry string
	addr  netip.Addr
}

func newAdmission(maxPerEntry int) *admission {
	return &admission{maxPerEntry: maxPerEntry, perEntry: map[string]int{}, perSource: map[sourceKey]int{},
		buckets: map[string]*bucket{}, refused: map[string]uint64{}, pending: map[string]uint64{}}
}

// take admits a connection from src to entry, whose limits are l, at
// now, and counts it as running; or returns why not (and counts the
// refusal). The limits on running services come first, so that a
// connection they refuse takes no token of rate=.
func (ad *admission) take(entry string, src netip.Addr, l conf.Limits, now time.Time) (refusal string, refused uint64) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	src = src.Unmap()
	sk := sourceKey{entry, src}
	switch {
	case ad.perEntry[entry] >= ad.maxPerEntry:
		refusal = "too many connections to this entry at once (-max-per-entry " + strconv.Itoa(ad.maxPerEntry) + ")"
	case l.Max > 0 && ad.perEntry[entry] >= l.Max:
		refusal = "too many connections to this entry at once (max=" + strconv.Itoa(l.Max) + ")"
	case l.PerSource > 0 && src.IsValid() && ad.perSource[sk] >= l.PerSource:
		refusal = "too many connections to this entry at once from " + src.String() + " (per-source=" + strconv.Itoa(l.PerSource) + ")"
	case l.Rate.N > 0 && !ad.bucket(entry).take(l.Rate, now):
		refusal = "too many new connections to this entry (rate=" + l.Rate.String() + ")"
	}
	if refusal != "" {
		ad.refused[entry]++
		ad.pending[entry]++
		return refusal, ad.refused[entry]
	}
	ad.perEntry[entry]++
	if l.PerSource > 0 && src.IsValid() {
		ad.perSource[sk]++
	}
	return "", 0
}

// release gives back what take counted for a connection from src to
// entry.
func (ad *admission) release(entry string, src netip.Addr) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if ad.perEntry[entry]--; ad.perEntry[entry] <= 0 {
		delete(ad.perEntry, entry)
	}
	sk := sourceKey{entry, src.Unmap()}
	if n, ok := ad.perSource[sk]; ok {
		if n <= 1 {
			delete(ad.perSource, sk)
		} else {
			ad.perSource[sk] = n - 1
		}
	}
}

// bucket is entry's token bucket; ad.mu is held. The map is bounded:
// forgetting a bucket gives its entry one burst more, no more.
func (ad *admission) bucket(entry string) *bucket {
	b := ad.buckets[entry]
	if b == nil {
		if len(ad.buckets) >= maxLimited {
			clear(ad.buckets)
		}
		b = &bucket{}
		ad.buckets[entry] = b
	}
	return b
}

// takePending returns the refusals not yet reported, by entry, and
// forgets them; putBack keeps the ones the daemon did not take.
func (ad *admission) takePending() map[string]uint64 {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	p := ad.pending
	ad.pending = map[string]uint64{}
	return p
}

func (ad *admission) putBack(entry string, n uint64) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.pending[entry] += n
}

// bucket is a token bucket for rate=: it holds up to the rate's burst
// (a second's worth, at least one), fills at the rate, and a connection
// takes one token.
type bucket struct {
	rate   conf.Rate // the rate it was filled for: a reload that changes it starts it full
	tokens float64
	at     time.Time
}

func (b *bucket) take(r conf.Rate, now time.Time) bool {
	if b.rate != r || b.at.IsZero() {
		*b = bucket{rate: r, tokens: r.Burst(), at: now}
	}
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(r.Burst(), b.tokens+elapsed.Seconds()*r.PerSecond())
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
