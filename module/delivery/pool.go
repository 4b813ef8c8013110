package delivery

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/internal/redact"
	"github.com/callhook/caddy-callhook/module/queue"
)

// Outcomes passed to Observer.Outcome.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"
	OutcomeDead      = "dead"
)

// ReasonExpired is the reason of a delivery that outlived its max_age before
// it could be attempted (again).
const ReasonExpired = "expired: older than max_age"

const (
	// DefaultWorkers is the default number of concurrent attempts.
	DefaultWorkers = 64
	// DefaultLease is the default lease on top of a delivery's timeout: time
	// to record the outcome before another worker may pick it up again.
	DefaultLease = 30 * time.Second

	// maxIdle is the longest one lease call waits (a long poll) before the
	// dispatcher looks at its budgets again.
	maxIdle = time.Second
	// queueOpTimeout bounds recording an outcome; it does not use the worker
	// context because a release must still be recorded once Stop cancels it.
	queueOpTimeout = 10 * time.Second
)

// Observer is told every outcome, for metrics. It is called from workers and
// must be cheap and safe for concurrent use.
type Observer interface {
	// Outcome reports an attempt's result (r.Attempt is zero when the
	// delivery expired without one). final is "delivered", "retry" or "dead";
	// next is the next attempt time for "retry", zero otherwise.
	Outcome(d *queue.Delivery, r Result, final string, next time.Time)
}

// PoolOptions configures a Pool.
type PoolOptions struct {
	Queue  queue.Work
	Sender *Sender
	// Workers is the number of concurrent attempts (default 64).
	Workers int
	// PerDestination caps concurrent attempts per Delivery.Destination
	// (default DefaultPerDestination(Workers)), so one slow receiver cannot take every
	// worker. Deliveries without a Destination are not capped.
	PerDestination int
	// Lease is added to a delivery's timeout to form its lease (default 30s).
	Lease time.Duration
	// Limits, when set, gives per-webhook budgets (rate_limit,
	// concurrency) and paused webhooks for each lease, and is told every
	// attempt that starts and ends.
	Limits   *Limiter
	Logger   *zap.Logger
	Observer Observer // may be nil
	Now      func() time.Time
}

// Pool leases due deliveries and attempts them with bounded concurrency.
type Pool struct {
	q     queue.Work
	s     *Sender
	log   *zap.Logger
	obs   Observer
	now   func() time.Time
	lease time.Duration

	// ctx is what attempts run under. It is derived from Background, never
	// from a config context, so a reload does not cut attempts short; only
	// Stop cancels it, once its caller runs out of patience.
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{} // closed by Stop: lease nothing more
	wake   chan struct{} // capacity 1: Notify and freed slots coalesce
	wg     sync.WaitGroup
	// limits gives per-webhook budgets and pauses for each lease; nil
	// means none.
	limits *Limiter

	mu          sync.Mutex
	workers     int
	perDest     int
	perDestAuto bool // PerDestination follows Workers on SetWorkers
	inflight    int
	// recording counts finished attempts whose outcome is still being
	// written after they gave their slot back (at most workers); see work.
	recording int
	byDest    map[string]int
	started   bool
	stopped   bool
	// cancelLease ends the dispatcher's waiting lease call.
	cancelLease context.CancelFunc
	// unwatch ends Start's subscription to changes of limits and pauses.
	unwatch func()

	// leaseTimeout is the lease's share for the attempt; a delivery with a
	// longer timeout extends its lease before it is sent.
	leaseTimeout time.Duration
}

// NewPool returns a pool; call Start to run it.
func NewPool(o PoolOptions) *Pool {
	p := &Pool{
		q:            o.Queue,
		s:            o.Sender,
		log:          o.Logger,
		obs:          o.Observer,
		now:          o.Now,
		lease:        o.Lease,
		stop:         make(chan struct{}),
		wake:         make(chan struct{}, 1),
		byDest:       make(map[string]int),
		leaseTimeout: DefaultTimeout,
		limits:       o.Limits,
	}
	if p.s == nil {
		p.s = NewSender(SenderOptions{})
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.lease <= 0 {
		p.lease = DefaultLease
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.perDest = o.PerDestination
	p.perDestAuto = o.PerDestination <= 0
	p.setWorkersLocked(o.Workers)
	return p
}

func (p *Pool) setWorkersLocked(n int) {
	if n <= 0 {
		n = DefaultWorkers
	}
	p.workers = n
	if p.perDestAuto {
		p.perDest = DefaultPerDestination(n)
	}
}

// DefaultPerDestination is the per-destination cap for a number of workers
// when none is configured: a quarter of them, at least one.
func DefaultPerDestination(workers int) int { return max(1, workers/4) }

// SetLimits changes the number of concurrent attempts and the cap per
// destination (<= 0 means the defaults). Attempts already running above a
// lowered limit finish normally.
func (p *Pool) SetLimits(workers, perDestination int) {
	p.mu.Lock()
	p.perDest = perDestination
	p.perDestAuto = perDestination <= 0
	p.setWorkersLocked(workers)
	p.mu.Unlock()
	p.Notify()
}

// SetWorkers changes the number of concurrent attempts (n <= 0 means the
// default). Attempts already running above a lowered limit finish normally.
func (p *Pool) SetWorkers(n int) {
	p.mu.Lock()
	p.setWorkersLocked(n)
	p.mu.Unlock()
	p.Notify()
}

// Start runs the dispatcher. It does nothing after Stop or a second time.
func (p *Pool) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.stopped {
		return
	}
	p.started = true
	if p.limits != nil {
		p.unwatch = p.limits.watch(p.askAgain)
	}
	p.wg.Add(1)
	go p.dispatch()
}

// askAgain ends the waiting lease call, asked with budgets or pauses that
// no longer hold, so that the dispatcher asks again at once.
func (p *Pool) askAgain() {
	p.mu.Lock()
	cancel := p.cancelLease
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.Notify()
}

// Notify says new work may be due now. It never blocks; calls coalesce.
func (p *Pool) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Stop stops leasing and waits for in-flight attempts until ctx is done, then
// cancels them; a delivery whose attempt was canceled is released, due now,
// without counting as a failure. When Stop returns, every goroutine the pool
// started has exited. It returns ctx.Err() if it had to cancel attempts.
func (p *Pool) Stop(ctx context.Context) error {
	p.mu.Lock()
	if !p.stopped {
		p.stopped = true
		close(p.stop)
		if p.cancelLease != nil {
			p.cancelLease()
		}
	}
	unwatch := p.unwatch
	p.unwatch = nil
	p.mu.Unlock()
	if unwatch != nil {
		unwatch()
	}

	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel()
		<-done
		return ctx.Err()
	}
}

// startRecording reports whether one more outcome may be written without
// its slot: fewer than workers are. It follows SetWorkers.
func (p *Pool) startRecording() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recording >= p.workers {
		return false
	}
	p.recording++
	return true
}

func (p *Pool) doneRecording() {
	p.mu.Lock()
	p.recording--
	p.mu.Unlock()
}

func (p *Pool) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// sleep waits for d, a wake-up or Stop; it reports false on Stop.
func (p *Pool) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.stop:
		return false
	case <-p.wake:
		return true
	case <-t.C:
		return true
	}
}

// dispatch leases what the free workers and the per-destination budgets
// allow, as a long poll: the queue answers as soon as something is due.
// A finishing worker cancels a waiting lease, because it changed the
// budgets the lease was asked with.
func (p *Pool) dispatch() {
	defer p.wg.Done()
	var errDelay time.Duration
	backoff := func() time.Duration {
		errDelay = min(max(2*errDelay, 100*time.Millisecond), time.Second)
		return errDelay
	}

	for !p.stopping() {
		p.mu.Lock()
		free := p.workers - p.inflight
		perDest := p.perDest
		var budget map[string]int
		if len(p.byDest) > 0 {
			budget = make(map[string]int, len(p.byDest))
			for k, v := range p.byDest {
				budget[k] = max(perDest-v, 0)
			}
		}
		p.mu.Unlock()

		if free <= 0 {
			// A finishing worker wakes us.
			if !p.sleep(maxIdle) {
				return
			}
			continue
		}
		req := queue.LeaseRequest{
			Max:                      free,
			Lease:                    p.leaseTimeout + p.lease,
			Wait:                     maxIdle,
			DestinationBudget:        budget,
			DefaultDestinationBudget: perDest,
		}
		if p.limits != nil {
			var wake time.Duration
			req.WebhookBudget, req.Paused, wake = p.limits.budgets(p.now())
			if wake > 0 {
				// A rate-limited webhook gets its next token then: look
				// again, rather than wait out the whole long poll.
				req.Wait = min(req.Wait, wake)
			}
		}
		ctx, cancel := context.WithCancel(p.ctx)
		p.mu.Lock()
		p.cancelLease = cancel
		p.mu.Unlock()
		// A slot freed between the snapshot above and now would not
		// cancel this lease: look at the wake channel first.
		select {
		case <-p.wake:
			p.mu.Lock()
			p.cancelLease = nil
			p.mu.Unlock()
			cancel()
			continue
		default:
		}
		ls, err := p.q.Lease(ctx, req)
		woken := ctx.Err() != nil
		p.mu.Lock()
		p.cancelLease = nil
		p.mu.Unlock()
		cancel()
		if err != nil && woken {
			if p.stopping() {
				return
			}
			continue // woken: budgets changed
		}
		if err != nil {
			if p.stopping() {
				return // not worth a 3 a.m. error line
			}
			wait := backoff()
			p.log.Error("cannot lease due webhook deliveries; retrying shortly",
				zap.Error(err), zap.Duration("retry_in", wait))
			if !p.sleep(wait) {
				return
			}
			continue
		}
		errDelay = 0
		for _, l := range ls {
			if p.stopping() {
				p.release(l, "lease canceled by shutdown")
				continue
			}
			p.startWorker(l)
		}
	}
}

func (p *Pool) startWorker(l queue.Lease) {
	d := l.Delivery
	p.mu.Lock()
	p.inflight++
	if d.Destination != "" {
		p.byDest[d.Destination]++
	}
	p.mu.Unlock()
	if p.limits != nil {
		p.limits.start(d.WebhookKey(), p.now())
	}
	p.wg.Add(1)
	go p.work(l)
}

func (p *Pool) finished(d *queue.Delivery) {
	if p.limits != nil {
		p.limits.done(d.WebhookKey())
	}
	dest := d.Destination
	p.mu.Lock()
	p.inflight--
	if dest != "" {
		if p.byDest[dest]--; p.byDest[dest] <= 0 {
			delete(p.byDest, dest)
		}
	}
	p.mu.Unlock()
	p.askAgain() // the waiting lease was asked with budgets that just grew
}

// attemptNumber is the number of the attempt about to be made in the
// delivery's current life (a manual retry starts a new one).
func attemptNumber(d *queue.Delivery) int { return d.AttemptCount + 1 }

// deadline is when the delivery's max_age runs out: counted from its
// creation, or from the manual retry that gave it a fresh budget.
func deadline(d *queue.Delivery, maxAge time.Duration) (time.Time, bool) {
	start := d.CreatedAt
	if d.RetriedAt.After(start) {
		start = d.RetriedAt
	}
	return start.Add(maxAge), !start.IsZero()
}

func (p *Pool) work(l queue.Lease) {
	defer p.wg.Done()
	d := l.Delivery
	slot := true
	free := func() {
		if slot {
			slot = false
			p.finished(d)
		}
	}
	defer free()

	pol := withDefaults(d.Policy)
	n := attemptNumber(d)
	deadline, hasDeadline := deadline(d, pol.MaxAge)

	if hasDeadline && p.now().After(deadline) {
		r := Result{Reason: ReasonExpired}
		p.record(d, "dead", func(ctx context.Context) error {
			return p.q.Dead(ctx, l.Token, queue.Attempt{}, ReasonExpired)
		})
		p.report(d, r, 0, OutcomeDead, ReasonExpired, time.Time{})
		return
	}
	if need := p.now().Add(pol.Timeout + p.lease); need.After(l.Until) {
		// The lease would end mid-attempt and another worker could send
		// it twice: extend it to cover this delivery's timeout.
		if err := p.q.Extend(p.ctx, l.Token, need); err != nil {
			p.log.Warn("cannot extend the lease of a webhook delivery for its long timeout; it is attempted when the lease ends", append(deliveryFields(d), zap.Error(err))...)
			return
		}
	}

	r := p.s.Send(p.ctx, d)
	if !r.OK && p.ctx.Err() != nil {
		// Stop ran out of patience: not the receiver's fault, so no attempt
		// is recorded and it goes out first thing after the restart.
		p.release(l, "attempt interrupted by shutdown")
		return
	}

	// The attempt is over, so its slot (and its destination's) goes to the
	// next delivery now rather than after the outcome is written. The
	// delivery stays leased until the write lands, so nobody sends it
	// again meanwhile. At most `workers` outcomes wait like this; past that
	// a worker keeps its slot, so a stalled disk slows sending down
	// instead of piling up goroutines.
	if p.startRecording() {
		free()
		defer p.doneRecording()
	}

	now := p.now()
	switch {
	case r.OK:
		p.record(d, "ack", func(ctx context.Context) error { return p.q.Ack(ctx, l.Token, r.Attempt) })
		p.report(d, r, n, OutcomeDelivered, "", time.Time{})
	case !r.Retryable:
		p.kill(l, r, n, r.Reason)
	case n >= pol.MaxAttempts:
		p.kill(l, r, n, fmt.Sprintf("%s (gave up after %d attempts)", r.Reason, n))
	default:
		next := now.Add(NextDelay(pol, n, r.RetryAfter, nil))
		if hasDeadline && next.After(deadline) {
			p.kill(l, r, n, fmt.Sprintf("%s (gave up: the next attempt would be past max_age %s)", r.Reason, pol.MaxAge))
			return
		}
		p.record(d, "retry", func(ctx context.Context) error { return p.q.Retry(ctx, l.Token, r.Attempt, next, r.Reason) })
		p.report(d, r, n, OutcomeRetry, r.Reason, next)
	}
}

func (p *Pool) kill(l queue.Lease, r Result, n int, reason string) {
	p.record(l.Delivery, "dead", func(ctx context.Context) error { return p.q.Dead(ctx, l.Token, r.Attempt, reason) })
	p.report(l.Delivery, r, n, OutcomeDead, reason, time.Time{})
}

// release hands a leased delivery back, due now, without an attempt.
func (p *Pool) release(l queue.Lease, why string) {
	d := l.Delivery
	p.record(d, "release", func(ctx context.Context) error { return p.q.Release(ctx, l.Token, p.now()) })
	if why != "" {
		p.log.Info(why+"; delivery released, due again now", deliveryFields(d)...)
	}
}

// record runs one queue write with its own deadline; a failure is logged and
// otherwise left to the lease expiring, which makes the delivery due again.
func (p *Pool) record(d *queue.Delivery, op string, f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), queueOpTimeout)
	defer cancel()
	if err := f(ctx); err != nil {
		p.log.Error("cannot record webhook delivery outcome ("+op+"); it will be attempted again when its lease ends",
			append(deliveryFields(d), zap.Error(err))...)
	}
}

func (p *Pool) report(d *queue.Delivery, r Result, n int, final, reason string, next time.Time) {
	// A reason quotes URLs (a receiver's Location, net/http's errors) and
	// receivers' messages: it is logged through the one redactor.
	reason = redact.For(d).Text(reason)
	fs := append(deliveryFields(d),
		zap.Int("attempt", n),
		zap.Int("status", r.Attempt.Status),
		zap.Duration("duration", r.Attempt.Duration),
	)
	switch final {
	case OutcomeDelivered:
		p.log.Info("webhook delivered", fs...)
	case OutcomeRetry:
		p.log.Warn("webhook attempt failed; will retry",
			append(fs, zap.String("reason", reason), zap.Time("next_attempt", next))...)
	default:
		p.log.Error("webhook delivery is dead; giving up (retry it by hand once fixed)",
			append(fs, zap.String("reason", reason))...)
	}
	if p.obs != nil {
		p.obs.Outcome(d, r, final, next)
	}
}

// deliveryFields identifies a delivery in logs. It holds no header values,
// bodies or secrets.
func deliveryFields(d *queue.Delivery) []zap.Field {
	return []zap.Field{
		zap.String("webhook", d.Webhook),
		zap.String("event", d.Event),
		zap.String("target", d.Target),
		zap.String("call_id", d.CallID),
		zap.String("delivery_id", d.ID),
	}
}
