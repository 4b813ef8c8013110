package callhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/internal/redact"
	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
)

// hookStats are the outcome figures of each webhook (by queue.WebhookKey)
// since this process started, and the failure streaks disable_after
// watches.
type hookStats struct {
	mu sync.Mutex
	m  map[string]*hookStat
}

type hookStat struct {
	attempts, delivered, failed int64
	lastSuccess, lastFailure    time.Time
	// failingSince is the first failed attempt since the last success;
	// zero while the last attempt succeeded.
	failingSince time.Time
}

// record counts one attempt's outcome at now and reports since when every
// attempt of the webhook has failed (zero after a success).
func (s *hookStats) record(key string, ok bool, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]*hookStat)
	}
	st := s.m[key]
	if st == nil {
		st = new(hookStat)
		s.m[key] = st
	}
	st.attempts++
	if ok {
		st.delivered++
		st.lastSuccess = now
		st.failingSince = time.Time{}
	} else {
		st.failed++
		st.lastFailure = now
		if st.failingSince.IsZero() {
			st.failingSince = now
		}
	}
	return st.failingSince
}

// get returns a copy of a webhook's figures.
func (s *hookStats) get(key string) hookStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.m[key]; st != nil {
		return *st
	}
	return hookStat{}
}

// resetStreak forgets a webhook's failure streak (on resume).
func (s *hookStats) resetStreak(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.m[key]; st != nil {
		st.failingSince = time.Time{}
	}
}

// Outcome is the pool's observer: metrics, the webhook's figures, and
// disable_after. It runs on the worker that made the attempt.
func (e *engine) Outcome(d *queue.Delivery, r delivery.Result, final string, next time.Time) {
	outcomeMetrics{}.Outcome(d, r, final, next)
	if r.Attempt.Start.IsZero() {
		return // expired before an attempt
	}
	key := d.WebhookKey()
	since := e.hooks.record(key, final == delivery.OutcomeDelivered, r.Attempt.Start.Add(r.Attempt.Duration))
	if since.IsZero() || e.limiter.Paused(key) {
		// (A paused webhook's attempts that were in flight finish; their
		// failures do not pause it again.)
		return
	}
	after := e.disableAfter(d.Target, d.Webhook)
	if after <= 0 || time.Since(since) < after {
		return
	}
	// The reason is logged, stored with the pause and shown by the admin
	// API and the dashboard: redacted like every outcome reason (a
	// receiver's Location can carry credentials).
	reason := redact.For(d).Text(r.Reason)
	e.pauseWebhook(d.Target, d.Webhook, since, fmt.Sprintf("every attempt failed for %s (disable_after %s); last error: %s", time.Since(since).Round(time.Second), after, reason))
}

// disableAfter is a webhook's disable_after in the running config.
func (e *engine) disableAfter(target, webhook string) time.Duration {
	h, _ := e.current().webhook(target, webhook)
	if h == nil {
		return 0
	}
	return h.limits[webhook].disableAfter
}

// pauses are the paused webhooks as this engine applies them. mu
// serializes pausing, resuming and reading the pauses back from the
// queue, so a refresh never undoes a pause or resume made meanwhile.
type pauses struct {
	mu sync.Mutex
	m  map[string]queue.Pause // by queue.WebhookKey
	// unreachable is set once a read failed because the queue could not
	// be reached, so that an outage is logged once, not every refresh (the
	// queue says when it is back).
	unreachable bool
}

// setLocked applies one webhook's pause (p != nil) or its end to the
// pool's limits and the callhook_webhook_paused metric. ps.mu must be held.
func (e *engine) setPauseLocked(target, webhook string, p *queue.Pause) {
	key := queue.WebhookKey(target, webhook)
	if p == nil {
		delete(e.paused.m, key)
	} else {
		if e.paused.m == nil {
			e.paused.m = make(map[string]queue.Pause)
		}
		e.paused.m[key] = *p
	}
	e.limiter.SetPaused(key, p != nil)
	setPaused(target, webhook, p != nil)
}

// pauseWebhook pauses a webhook that kept failing: in the queue (so the
// pause survives reloads and restarts), in the pool's limits, and in the
// callhook_webhook_paused metric. It logs once.
func (e *engine) pauseWebhook(target, webhook string, since time.Time, reason string) {
	key := queue.WebhookKey(target, webhook)
	e.paused.mu.Lock()
	defer e.paused.mu.Unlock()
	if _, ok := e.paused.m[key]; ok {
		return // another worker's outcome was first
	}
	p := &queue.Pause{Target: target, Webhook: webhook, Since: time.Now().UTC(), Reason: reason}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	err := e.q.SetPause(ctx, target, webhook, p)
	e.setPauseLocked(target, webhook, p)
	fields := []zap.Field{
		zap.String("target", target), zap.String("webhook", webhook),
		zap.Time("failing_since", since), zap.String("reason", reason),
		zap.String("resume", "POST /callhook/webhooks/"+target+"/"+webhook+"/resume on Caddy's admin endpoint"),
	}
	if err != nil {
		e.logger.Error("webhook paused, but the pause could not be stored: it holds until Caddy restarts", append(fields, zap.Error(err))...)
		return
	}
	e.logger.Warn("webhook paused: its deliveries stay pending and none is attempted until it is resumed", fields...)
}

// loadPauses applies the pauses stored in the queue: at start, and then
// every pauseRefresh, so that with a queue shared by several nodes a pause
// or resume on one reaches the others.
func (e *engine) loadPauses() {
	e.paused.mu.Lock()
	defer e.paused.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	ps, err := e.q.Pauses(ctx)
	if err != nil {
		quiet := errors.Is(err, queue.ErrClosed) || e.pruneCtx.Err() != nil ||
			errors.Is(err, queue.ErrUnavailable) && e.paused.unreachable
		if !quiet {
			e.logger.Error("cannot read paused webhooks from the queue; will try again every 5s", zap.Error(err))
		}
		e.paused.unreachable = e.paused.unreachable || errors.Is(err, queue.ErrUnavailable)
		return
	}
	e.paused.unreachable = false
	stored := make(map[string]bool, len(ps))
	for _, p := range ps {
		key := queue.WebhookKey(p.Target, p.Webhook)
		stored[key] = true
		if _, ok := e.paused.m[key]; !ok {
			e.setPauseLocked(p.Target, p.Webhook, &p)
		}
	}
	for key, p := range e.paused.m {
		if !stored[key] {
			e.setPauseLocked(p.Target, p.Webhook, nil)
		}
	}
}

// pauseRefresh is how often the pauses are read again from the queue, so
// that with a shared queue a pause or resume on one node reaches the others.
const pauseRefresh = 5 * time.Second

// pauseLoop reads the stored pauses every pauseRefresh until Destruct.
func (e *engine) pauseLoop() {
	defer close(e.pauseDone)
	t := time.NewTicker(pauseRefresh)
	defer t.Stop()
	for {
		select {
		case <-e.pruneCtx.Done():
			return
		case <-t.C:
			e.loadPauses()
		}
	}
}
