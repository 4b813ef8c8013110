package delivery

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func TestNextDelayBounds(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	p := queue.Policy{BackoffMin: time.Second, BackoffMax: time.Minute}
	for attempts := 1; attempts <= 20; attempts++ {
		ceiling := time.Minute
		if attempts < 10 {
			ceiling = min(time.Second<<(attempts-1), time.Minute)
		}
		var lo, hi time.Duration = math.MaxInt64, 0
		for range 2000 {
			d := NextDelay(p, attempts, 0, rnd)
			if d < p.BackoffMin || d > ceiling {
				t.Fatalf("attempts=%d: delay %s outside [%s, %s]", attempts, d, p.BackoffMin, ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter: the draws should spread over the range, not stick to
		// one end.
		if ceiling > p.BackoffMin && hi-lo < (ceiling-p.BackoffMin)/2 {
			t.Errorf("attempts=%d: draws only span [%s, %s] of [%s, %s]", attempts, lo, hi, p.BackoffMin, ceiling)
		}
	}
	// The first retry waits exactly min: the ceiling is min itself.
	if d := NextDelay(p, 1, 0, rnd); d != time.Second {
		t.Errorf("attempt 1: %s, want 1s", d)
	}
}

func TestNextDelayDefaults(t *testing.T) {
	for range 1000 {
		d := NextDelay(queue.Policy{}, 30, 0, nil)
		if d < DefaultBackoffMin || d > DefaultBackoffMax {
			t.Fatalf("default policy delay %s outside [1s, 1h]", d)
		}
	}
}

func TestNextDelayRetryAfter(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	p := queue.Policy{BackoffMin: 10 * time.Millisecond, BackoffMax: time.Second}
	for range 1000 {
		// The receiver's wish wins even beyond max.
		if d := NextDelay(p, 2, 5*time.Minute, rnd); d != 5*time.Minute {
			t.Fatalf("Retry-After 5m gave %s", d)
		}
		// A short Retry-After is only a floor.
		if d := NextDelay(p, 5, 20*time.Millisecond, rnd); d < 20*time.Millisecond || d > 160*time.Millisecond {
			t.Fatalf("Retry-After 20ms at attempt 5 gave %s", d)
		}
	}
	// Absurd Retry-After is capped at an hour.
	if d := NextDelay(p, 1, 1000*time.Hour, rnd); d != time.Hour {
		t.Fatalf("Retry-After 1000h gave %s, want 1h", d)
	}
}

func TestNextDelayOverflow(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	cases := []queue.Policy{
		{BackoffMin: time.Second, BackoffMax: time.Hour},
		{BackoffMin: time.Duration(math.MaxInt64 / 2), BackoffMax: time.Duration(math.MaxInt64)},
		{BackoffMin: time.Hour, BackoffMax: time.Second}, // max below min: min wins
		{BackoffMin: 1, BackoffMax: time.Duration(math.MaxInt64)},
	}
	for _, p := range cases {
		hi := max(p.BackoffMax, p.BackoffMin)
		for _, attempts := range []int{0, 1, 2, 31, 62, 63, 64, 65, 1000, math.MaxInt} {
			d := NextDelay(p, attempts, 0, rnd)
			if d < p.BackoffMin || d > hi {
				t.Fatalf("policy %+v attempts=%d: delay %s outside [%s, %s]", p, attempts, d, p.BackoffMin, hi)
			}
		}
	}
}
