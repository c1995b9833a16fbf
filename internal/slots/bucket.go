package slots

import (
	"time"

	"github.com/virtuald/virtuald/internal/conf"
)

// Bucket is a token bucket for rate=, the one both modes keep: accept
// mode in memory, per connection in the entry's file (File.Take). It
// holds up to the rate's burst (a second's worth, at least one), fills at
// the rate, and a connection takes one token.
type Bucket struct {
	Rate   conf.Rate // the rate it was filled for: a reload that changes it starts it full
	Tokens float64
	At     time.Time
}

// Fill adds the tokens earned since the last fill, up to the burst, and
// returns what the bucket holds; a bucket met with another rate (a
// reload changed it) starts full.
func (b *Bucket) Fill(r conf.Rate, now time.Time) float64 {
	if b.Rate != r || b.At.IsZero() {
		*b = Bucket{Rate: r, Tokens: r.Burst(), At: now}
	}
	if elapsed := now.Sub(b.At); elapsed > 0 {
		b.Tokens = min(r.Burst(), b.Tokens+elapsed.Seconds()*r.PerSecond())
		b.At = now
	}
	return b.Tokens
}
