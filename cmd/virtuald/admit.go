package main

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/slots"
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
	perEntry  map[string]int           // running services per entry (conf path and key)
	running   int                      // running services in all
	perSource map[sourceKey]int        // running services per entry and client address
	buckets   map[string]*slots.Bucket // rate= per entry
	refused   map[string]uint64        // refusals per entry since the start, for the log
	pending   map[string]uint64        // refusals per entry not yet reported to the daemon
	byAddr    map[netip.Addr]memo      // the limited entry each local address was last resolved to
}

// memo is what a full resolution found for a local address whose entry
// has limits, or is at -max-per-entry: enough to refuse the next
// connections to it while the entry is at a limit without resolving them
// (see quick).
type memo struct {
	entry  string // conf path and key
	line   int
	root   string
	limits conf.Limits
	at     time.Time
}

// memoTTL is how long a memo is used: as long as accept mode keeps a
// daemon's answer (answerTTL). A memo only ever refuses, never serves: a
// conf change that lifts a limit or moves the address to another entry
// can refuse a connection for that long at most, never serve one from a
// root its address does not map to.
const memoTTL = answerTTL

type sourceKey struct {
	entry string
	addr  netip.Addr
}

func newAdmission(maxPerEntry int) *admission {
	return &admission{maxPerEntry: maxPerEntry, perEntry: map[string]int{}, perSource: map[sourceKey]int{},
		buckets: map[string]*slots.Bucket{}, refused: map[string]uint64{}, pending: map[string]uint64{}, byAddr: map[netip.Addr]memo{}}
}

// take admits a connection from src to entry, whose limits are l, at
// now, and counts it as running; or returns why not (and counts the
// refusal, returning the entry's count). The limits on running services
// come first, so that a connection they refuse takes no token of rate=.
func (ad *admission) take(entry string, src netip.Addr, l conf.Limits, now time.Time) (refusal string, refused uint64) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	src = src.Unmap()
	if refusal = ad.verdict(entry, src, l, now); refusal != "" {
		return refusal, ad.countRefusal(entry)
	}
	if l.Rate.N > 0 {
		ad.bucket(entry).Tokens--
	}
	ad.perEntry[entry]++
	ad.running++
	if l.PerSource > 0 && src.IsValid() {
		ad.perSource[sourceKey{entry, src}]++
	}
	return "", 0
}

// verdict says why a connection from src to entry would be refused now,
// or ""; it changes nothing but the refill of the entry's bucket. ad.mu
// is held.
func (ad *admission) verdict(entry string, src netip.Addr, l conf.Limits, now time.Time) string {
	switch {
	case ad.perEntry[entry] >= ad.maxPerEntry:
		return "too many connections to this entry at once (-max-per-entry " + strconv.Itoa(ad.maxPerEntry) + ")"
	case l.Max > 0 && ad.perEntry[entry] >= l.Max:
		return maxRefusal(l.Max)
	case l.PerSource > 0 && src.IsValid() && ad.perSource[sourceKey{entry, src}] >= l.PerSource:
		return perSourceRefusal(src, l.PerSource)
	case l.Rate.N > 0 && ad.bucket(entry).Fill(l.Rate, now) < 1:
		return rateRefusal(l.Rate)
	}
	return ""
}

// maxRefusal, perSourceRefusal and rateRefusal say why a connection past
// max=, per-source= or rate= was refused, in both modes.
func maxRefusal(n int) string {
	return "too many connections to this entry at once (max=" + strconv.Itoa(n) + ")"
}

func perSourceRefusal(src netip.Addr, n int) string {
	return "too many connections to this entry at once from " + src.String() + " (per-source=" + strconv.Itoa(n) + ")"
}

func rateRefusal(r conf.Rate) string {
	return "too many new connections to this entry (rate=" + r.String() + ")"
}

// countRefusal counts a refusal for entry and returns its count; ad.mu is
// held.
func (ad *admission) countRefusal(entry string) uint64 {
	ad.refused[entry]++
	ad.pending[entry]++
	return ad.refused[entry]
}

// remember keeps, for the local address addr, the entry a full
// resolution found, when it has limits or is at -max-per-entry (and
// forgets the address otherwise), for quick: a flood's connections past
// -max-per-entry are then refused in the accept loop, without the
// goroutine and the resolution that would take CPU from the other
// entries' starts.
func (ad *admission) remember(addr netip.Addr, m memo) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	addr = addr.Unmap()
	if !m.limits.Set() && ad.perEntry[m.entry] < ad.maxPerEntry {
		delete(ad.byAddr, addr)
		return
	}
	if len(ad.byAddr) >= maxLimited {
		clear(ad.byAddr) // bounded: forgetting only costs a resolution
	}
	ad.byAddr[addr] = m
}

// limited reports whether any local address has a memo: until one has,
// quick has nothing to do, and accept mode does not ask for the local
// address.
func (ad *admission) limited() bool {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	return len(ad.byAddr) > 0
}

// quick refuses, without a resolution, a connection from src to the
// local address addr whose entry (as a resolution at most memoTTL ago
// found it) is at one of its limits, and counts the refusal; ok is false
// when it cannot tell, and the connection goes the full way (resolved,
// then take).
func (ad *admission) quick(addr, src netip.Addr, now time.Time) (m memo, refusal string, refused uint64, ok bool) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	m, ok = ad.byAddr[addr.Unmap()]
	if !ok || now.Sub(m.at) > memoTTL || now.Before(m.at) {
		return memo{}, "", 0, false
	}
	if refusal = ad.verdict(m.entry, src.Unmap(), m.limits, now); refusal == "" {
		return memo{}, "", 0, false
	}
	return m, refusal, ad.countRefusal(m.entry), true
}

// release gives back what take counted for a connection from src to
// entry.
func (ad *admission) release(entry string, src netip.Addr) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if ad.perEntry[entry]--; ad.perEntry[entry] <= 0 {
		delete(ad.perEntry, entry)
	}
	ad.running--
	sk := sourceKey{entry, src.Unmap()}
	if n, ok := ad.perSource[sk]; ok {
		if n <= 1 {
			delete(ad.perSource, sk)
		} else {
			ad.perSource[sk] = n - 1
		}
	}
}

// favour is the nice of the favour (favour.go) that a service of entry
// starting now gets: 0 unless entry runs fewer services than the entries
// that run any do on average (one of two entries beside a flood; never
// an entry alone or on a par with the others), else as much as gives
// its services the weight of the busiest entry's.
func (ad *admission) favour(entry string) int {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	own := ad.perEntry[entry]
	if own*len(ad.perEntry) >= ad.running {
		return 0
	}
	busiest := 0
	for _, n := range ad.perEntry {
		busiest = max(busiest, n)
	}
	return favourNice(busiest, own)
}

// bucket is entry's token bucket; ad.mu is held. The map is bounded:
// forgetting a bucket gives its entry one burst more, no more.
func (ad *admission) bucket(entry string) *slots.Bucket {
	b := ad.buckets[entry]
	if b == nil {
		if len(ad.buckets) >= maxLimited {
			clear(ad.buckets)
		}
		b = &slots.Bucket{}
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
