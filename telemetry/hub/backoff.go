package hub

import (
	"math/rand/v2"
	"time"
)

// backoff computes the waits between connection attempts: jittered,
// exponential in the number of consecutive failures, bounded by [min, max].
type backoff struct {
	min, max time.Duration
	failures int
	rng      *rand.Rand
}

// next returns the wait after one more failure. A throttled failure waits
// in the upper half of [min, max].
func (b *backoff) next(throttled bool) time.Duration {
	if b.failures < 62 {
		b.failures++
	}
	lo, hi := b.min, b.ceiling()
	if throttled {
		lo = b.min + (b.max-b.min)/2
		hi = b.max
	}
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(b.rng.Int64N(int64(hi-lo)+1))
}

// ceiling is min·2^failures capped at max.
func (b *backoff) ceiling() time.Duration {
	c := b.min
	for i := 0; i < b.failures; i++ {
		if c >= b.max/2 {
			return b.max
		}
		c *= 2
	}
	return min(c, b.max)
}

// reset forgets the failures, after a connection that stayed up.
func (b *backoff) reset() { b.failures = 0 }
