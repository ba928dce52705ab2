package hub

import (
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	b := &backoff{min: time.Second, max: 30 * time.Second, rng: newRand("dev-1")}
	ceilings := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for round := range 50 {
		b.reset()
		for i, ceil := range ceilings {
			d := b.next(false)
			if d < b.min || d > ceil {
				t.Fatalf("round %d: wait after failure %d = %v, want in [%v, %v]", round, i+1, d, b.min, ceil)
			}
		}
	}
	// Many failures stay capped (no overflow).
	for range 200 {
		if d := b.next(false); d < b.min || d > b.max {
			t.Fatalf("wait after many failures = %v, want in [%v, %v]", d, b.min, b.max)
		}
	}
}

func TestBackoffJitterSpreads(t *testing.T) {
	b := &backoff{min: time.Second, max: time.Minute, rng: newRand("dev-1")}
	seen := map[time.Duration]bool{}
	var lo, hi time.Duration = time.Hour, 0
	for range 200 {
		b.failures = 10
		d := b.next(false)
		seen[d] = true
		lo, hi = min(lo, d), max(hi, d)
	}
	if len(seen) < 150 {
		t.Errorf("200 waits gave %d distinct values; the jitter is not spreading", len(seen))
	}
	if lo > 15*time.Second || hi < 45*time.Second {
		t.Errorf("waits span [%v, %v]; want them to cover most of [1s, 1m]", lo, hi)
	}
}

func TestBackoffThrottled(t *testing.T) {
	b := &backoff{min: time.Second, max: 61 * time.Second, rng: newRand("dev-1")}
	for range 100 {
		b.reset()
		if d := b.next(true); d < 31*time.Second || d > 61*time.Second {
			t.Fatalf("throttled wait = %v, want in [31s, 61s]", d)
		}
	}
}

func TestBackoffMinEqualsMax(t *testing.T) {
	b := &backoff{min: time.Second, max: time.Second, rng: newRand("x")}
	for range 5 {
		if d := b.next(false); d != time.Second {
			t.Fatalf("wait = %v, want 1s", d)
		}
		if d := b.next(true); d != time.Second {
			t.Fatalf("throttled wait = %v, want 1s", d)
		}
	}
}

func TestBackoffSeededPerDevice(t *testing.T) {
	seq := func(id string) []time.Duration {
		b := &backoff{min: time.Millisecond, max: time.Hour, rng: newRand(id)}
		var out []time.Duration
		for range 8 {
			b.failures = 20
			out = append(out, b.next(false))
		}
		return out
	}
	a1, a2, b1 := seq("dev-a"), seq("dev-a"), seq("dev-b")
	same := func(x, y []time.Duration) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a1, a2) {
		t.Errorf("the same device id gave different sequences: %v vs %v", a1, a2)
	}
	if same(a1, b1) {
		t.Errorf("two device ids gave the same sequence %v", a1)
	}
}
