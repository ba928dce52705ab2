package agent

import (
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	var r rateLimiter
	type step struct {
		at         time.Duration
		ok         bool
		suppressed int
	}
	steps := []step{
		{0, true, 0}, // the first event always passes
		{10 * time.Second, false, 0},
		{59 * time.Second, false, 0},
		{60 * time.Second, true, 2}, // one minute later, with the count
		{61 * time.Second, false, 0},
		{179 * time.Second, false, 0},
		{180 * time.Second, true, 2}, // the period doubled to 2 min
		{180*time.Second + 4*time.Minute, true, 0},
		{180*time.Second + 4*time.Minute + 8*time.Minute, true, 0},
		{24*time.Minute + 16*time.Minute, true, 0},
		{40*time.Minute + 32*time.Minute, true, 0},
		{72*time.Minute + 64*time.Minute, true, 0},
		{136*time.Minute + 59*time.Minute, false, 0}, // capped at one hour
		{136*time.Minute + 60*time.Minute, true, 1},
		// A quiet spell of more than two hours past the next slot resets it.
		{196*time.Minute + 4*time.Hour, true, 0},
		{196*time.Minute + 4*time.Hour + 30*time.Second, false, 0},
		{196*time.Minute + 4*time.Hour + time.Minute, true, 1},
	}
	for i, s := range steps {
		n, ok := r.allow(s.at)
		if ok != s.ok || n != s.suppressed {
			t.Fatalf("step %d: allow(%v) = %d, %v; want %d, %v", i, s.at, n, ok, s.suppressed, s.ok)
		}
	}
}
