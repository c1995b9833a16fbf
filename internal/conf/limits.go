package conf

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limits are an entry's connection limits (max=, rate=, per-source=):
// a connection past one is closed with zero bytes, logged and counted,
// before anything is done for it. Zero values mean no limit.
type Limits struct {
	Max       int  // max=: the entry's connections at once
	Rate      Rate // rate=: new connections a second (or a minute)
	PerSource int  // per-source=: the entry's connections at once from one client address
}

// Rate is rate='s value: N new connections per second or per minute.
type Rate struct {
	N   int           // 0: no limit
	Per time.Duration // time.Second or time.Minute
}

// MaxLimit bounds max=, per-source= and rate='s N: a million is past what
// one host serves at once or a second, and keeps the arithmetic of a
// token bucket exact.
const MaxLimit = 1_000_000

// Set reports whether any limit is set.
func (l Limits) Set() bool { return l.Max > 0 || l.Rate.N > 0 || l.PerSource > 0 }

// String gives the limits as a conf line holds them, in canonical form
// ("" for none).
func (l Limits) String() string {
	var words []string
	if l.Max > 0 {
		words = append(words, "max="+strconv.Itoa(l.Max))
	}
	if l.Rate.N > 0 {
		words = append(words, "rate="+l.Rate.String())
	}
	if l.PerSource > 0 {
		words = append(words, "per-source="+strconv.Itoa(l.PerSource))
	}
	return strings.Join(words, " ")
}

// String gives the rate as rate= takes it: "50/s", "10/m".
func (r Rate) String() string {
	unit := "s"
	if r.Per == time.Minute {
		unit = "m"
	}
	return strconv.Itoa(r.N) + "/" + unit
}

// PerSecond is the rate in connections a second.
func (r Rate) PerSecond() float64 { return float64(r.N) / r.Per.Seconds() }

// Burst is how many connections a token bucket for the rate lets through
// at once: the rate of one second, at least 1.
func (r Rate) Burst() float64 { return max(1, r.PerSecond()) }

// parseCount parses the value of max= and per-source=: a whole number
// from 1 to MaxLimit.
func parseCount(v string) (int, error) {
	if !isDigits(v) {
		return 0, fmt.Errorf("not a whole number (1 to %d)", MaxLimit)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, fmt.Errorf("out of range (1 to %d; without the option there is no limit)", MaxLimit)
	}
	return n, nil
}

// ParseRate parses rate='s value: N/s (connections a second) or N/m (a
// minute), N from 1 to MaxLimit.
func ParseRate(v string) (Rate, error) {
	num, unit, ok := strings.Cut(v, "/")
	if !ok {
		return Rate{}, errors.New("not N/s or N/m (connections a second or a minute)")
	}
	var r Rate
	switch unit {
	case "s":
		r.Per = time.Second
	case "m":
		r.Per = time.Minute
	default:
		return Rate{}, fmt.Errorf("unit %s is not s or m (connections a second or a minute)", quote(unit))
	}
	n, err := parseCount(num)
	if err != nil {
		return Rate{}, err
	}
	r.N = n
	return r, nil
}

// check refuses limits that contradict one another.
func (l Limits) check() error {
	if l.Max > 0 && l.PerSource > l.Max {
		return fmt.Errorf("per-source=%d is more than max=%d, so it would never apply", l.PerSource, l.Max)
	}
	return nil
}
