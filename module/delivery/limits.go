package delivery

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// WebhookLimit caps one webhook's attempts (the webhook options rate_limit
// and concurrency). Zero fields are unlimited.
type WebhookLimit struct {
	// Rate is how many attempts may start per second.
	Rate rate.Limit
	// Burst is how many may start at once when the webhook has been idle;
	// 0 means one second's worth of Rate (at least 1).
	Burst int
	// Concurrency is how many attempts may be in flight at once.
	Concurrency int
}

// Limiter holds per-webhook limits and pauses for a Pool, by
// queue.WebhookKey. The pool asks it for each lease's WebhookBudget and
// Paused, so the queue skips a limited or paused webhook's deliveries in
// place: they hold no worker and delay no other webhook. It is safe for
// concurrent use.
type Limiter struct {
	mu     sync.Mutex
	hooks  map[string]*hookLimit
	paused map[string]bool
	// inflight counts attempts by webhook, limited or not, so a limit set
	// while attempts run counts them.
	inflight map[string]int
	// watchers are told when limits or pauses change: a pool's lease that
	// is waiting was asked with the old ones and must be asked again, or
	// a webhook paused meanwhile would still be leased (and a resumed one
	// wait out the long poll).
	watchers map[int]func()
	nextID   int
}

// watch calls f (outside the limiter's lock) after every change of limits
// or pauses, until the returned function is called.
func (l *Limiter) watch(f func()) (stop func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watchers == nil {
		l.watchers = map[int]func(){}
	}
	id := l.nextID
	l.nextID++
	l.watchers[id] = f
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.watchers, id)
	}
}

// changedUnlock tells the watchers of a change. Called with l.mu held; it
// unlocks before calling them.
func (l *Limiter) changedUnlock() {
	fs := slices.Collect(maps.Values(l.watchers))
	l.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

type hookLimit struct {
	limit  WebhookLimit
	bucket *rate.Limiter // nil without a rate
}

// NewLimiter returns a limiter with no limits and no pauses.
func NewLimiter() *Limiter {
	return &Limiter{hooks: map[string]*hookLimit{}, paused: map[string]bool{}, inflight: map[string]int{}}
}

// SetLimits replaces every webhook's limits. A webhook whose rate is
// unchanged keeps its bucket (a reload does not grant a fresh burst).
func (l *Limiter) SetLimits(limits map[string]WebhookLimit) {
	l.mu.Lock()
	defer l.changedUnlock()
	next := make(map[string]*hookLimit, len(limits))
	for k, lim := range limits {
		if lim.Rate <= 0 && lim.Concurrency <= 0 {
			continue
		}
		if lim.Rate > 0 && lim.Burst <= 0 {
			lim.Burst = max(1, int(lim.Rate))
		}
		h := &hookLimit{limit: lim}
		if old := l.hooks[k]; old != nil && old.bucket != nil && old.limit.Rate == lim.Rate && old.limit.Burst == lim.Burst {
			h.bucket = old.bucket
		} else if lim.Rate > 0 {
			h.bucket = rate.NewLimiter(lim.Rate, lim.Burst)
		}
		next[k] = h
	}
	l.hooks = next
}

// SetPaused pauses or resumes a webhook.
func (l *Limiter) SetPaused(key string, paused bool) {
	l.mu.Lock()
	if l.paused[key] == paused {
		l.mu.Unlock()
		return
	}
	if paused {
		l.paused[key] = true
	} else {
		delete(l.paused, key)
	}
	l.changedUnlock()
}

// Paused reports whether a webhook is paused.
func (l *Limiter) Paused(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.paused[key]
}

// budgets returns the WebhookBudget and Paused of a lease at now, and how
// long until a rate-limited webhook has its next token (0: none waits on a
// token).
func (l *Limiter) budgets(now time.Time) (map[string]int, map[string]bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var budget map[string]int
	var wake time.Duration
	for k, h := range l.hooks {
		n := -1 // unlimited
		if c := h.limit.Concurrency; c > 0 {
			n = max(c-l.inflight[k], 0)
		}
		if h.bucket != nil {
			tokens := h.bucket.TokensAt(now)
			t := max(int(tokens), 0)
			if n < 0 || t < n {
				n = t
			}
			if t == 0 {
				w := time.Duration((1 - tokens) / float64(h.limit.Rate) * float64(time.Second))
				w = max(w, time.Millisecond)
				if wake == 0 || w < wake {
					wake = w
				}
			}
		}
		if n >= 0 {
			if budget == nil {
				budget = make(map[string]int, len(l.hooks))
			}
			budget[k] = n
		}
	}
	var paused map[string]bool
	if len(l.paused) > 0 {
		paused = maps.Clone(l.paused)
	}
	return budget, paused, wake
}

// start records an attempt of a webhook starting at now: it takes a rate
// token and counts the attempt in flight.
func (l *Limiter) start(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight[key]++
	if h := l.hooks[key]; h != nil && h.bucket != nil {
		h.bucket.AllowN(now, 1)
	}
}

// done records the end of an attempt started with start.
func (l *Limiter) done(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight[key]--; l.inflight[key] <= 0 {
		delete(l.inflight, key)
	}
}

// TryStart starts an attempt of a webhook at now if it is not paused and
// its limits allow one at once; it never waits, because a sync webhook's
// caller is waiting. Otherwise it reports why not (without the webhook's
// name). An attempt started with TryStart ends with Done.
func (l *Limiter) TryStart(key string, now time.Time) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paused[key] {
		return false, "the webhook is paused (disable_after); resume it with POST /callhook/webhooks/<target>/<webhook>/resume"
	}
	if h := l.hooks[key]; h != nil {
		if c := h.limit.Concurrency; c > 0 && l.inflight[key] >= c {
			return false, fmt.Sprintf("its concurrency limit is reached (%d calls in flight)", c)
		}
		if h.bucket != nil && !h.bucket.AllowN(now, 1) {
			return false, "its rate_limit is reached"
		}
	}
	l.inflight[key]++
	return true, ""
}

// Done ends an attempt started with TryStart.
func (l *Limiter) Done(key string) { l.done(key) }
