package delivery

import (
	"math/rand/v2"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Policy defaults, used where a queue.Policy field is zero.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultBackoffMin  = time.Second
	DefaultBackoffMax  = time.Hour
	DefaultMaxAttempts = 12
	DefaultMaxAge      = 72 * time.Hour

	// maxRetryAfter bounds how long a receiver's Retry-After can hold a
	// delivery back, so a bogus header cannot park it for days.
	maxRetryAfter = time.Hour
)

// withDefaults fills the zero fields of p.
func withDefaults(p queue.Policy) queue.Policy {
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	if p.BackoffMin <= 0 {
		p.BackoffMin = DefaultBackoffMin
	}
	if p.BackoffMax <= 0 {
		p.BackoffMax = DefaultBackoffMax
	}
	if p.BackoffMax < p.BackoffMin {
		p.BackoffMax = p.BackoffMin
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.MaxAge <= 0 {
		p.MaxAge = DefaultMaxAge
	}
	return p
}

// NextDelay is the wait before the next attempt after `attempts` failed
// attempts (attempts >= 1): exponential with full jitter between the bounds,
// ceiling = min(max, min*2^(attempts-1)) and delay uniform in [min, ceiling].
// Jitter keeps a receiver that comes back from being hit by every queued
// delivery at once. If retryAfter > 0 the delay is at least retryAfter (capped
// at 1h), even when that exceeds max: the receiver asked for it. rnd may be nil
// for the global source.
func NextDelay(p queue.Policy, attempts int, retryAfter time.Duration, rnd *rand.Rand) time.Duration {
	p = withDefaults(p)
	lo, hi := p.BackoffMin, p.BackoffMax
	shift := max(attempts, 1) - 1

	// lo<<shift > hi exactly when lo > hi>>shift; testing it that way cannot
	// overflow however many attempts there were.
	ceiling := hi
	if shift < 63 && lo <= hi>>shift {
		ceiling = min(lo<<shift, hi)
	}

	d := lo
	if span := int64(ceiling - lo); span > 0 {
		if rnd != nil {
			d += time.Duration(rnd.Int64N(span + 1))
		} else {
			d += time.Duration(rand.Int64N(span + 1))
		}
	}
	if retryAfter > 0 {
		d = max(d, min(retryAfter, maxRetryAfter))
	}
	return d
}
