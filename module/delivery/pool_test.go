package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/callhook/caddy-callhook/module/queue"
)

type outcome struct {
	id, final string
	attempt   queue.Attempt
	next      time.Time
}

type recorder struct {
	mu  sync.Mutex
	out []outcome
}

func (o *recorder) Outcome(d *queue.Delivery, r Result, final string, next time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.out = append(o.out, outcome{d.ID, final, r.Attempt, next})
}

func (o *recorder) finals(id string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var fs []string
	for _, x := range o.out {
		if x.id == id {
			fs = append(fs, x.final)
		}
	}
	return fs
}

type poolEnv struct {
	q    *testQueue
	pool *Pool
	obs  *recorder
	logs *observer.ObservedLogs
}

// startPool runs a pool over a fresh memQueue; the pool is stopped at cleanup
// (cleanups run last-in first-out, so servers registered later close first;
// their handlers must not block the pool's Stop beyond its timeout).
func startPool(t *testing.T, o PoolOptions, ds ...*queue.Delivery) *poolEnv {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	env := &poolEnv{q: newMemQueue(t), obs: &recorder{}, logs: logs}
	env.q.add(ds...)
	o.Queue = env.q
	if o.Sender == nil {
		o.Sender = newTestSender(t, SenderOptions{})
	}
	o.Logger = zap.New(core)
	o.Observer = env.obs
	env.pool = NewPool(o)
	env.pool.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := env.pool.Stop(ctx); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
	})
	return env
}

func newDelivery(id, url, dest string, p queue.Policy) *queue.Delivery {
	d := delivery(url)
	d.ID, d.Destination, d.Policy = id, dest, p
	d.CreatedAt = time.Now()
	d.NextAttempt = d.CreatedAt
	return d
}

var fastPolicy = queue.Policy{
	Timeout:     5 * time.Second,
	BackoffMin:  10 * time.Millisecond,
	BackoffMax:  50 * time.Millisecond,
	MaxAttempts: 5,
	MaxAge:      time.Hour,
}

func (e *poolEnv) waitState(t *testing.T, id string, want queue.State) *queue.Delivery {
	t.Helper()
	var d *queue.Delivery
	eventually(t, fmt.Sprintf("%s is %s", id, want), func() bool {
		d = e.q.get(id)
		return d.State == want
	})
	return d
}

func TestPoolDelivers(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { hits.Add(1) })
	var ds []*queue.Delivery
	for i := range 20 {
		ds = append(ds, newDelivery(fmt.Sprintf("d%d", i), srv.URL, srv.URL, fastPolicy))
	}
	env := startPool(t, PoolOptions{Workers: 4}, ds...)
	for _, d := range ds {
		got := env.waitState(t, d.ID, queue.Delivered)
		if len(got.Attempts) != 1 || got.Attempts[0].Status != 200 {
			t.Errorf("%s: attempts %+v", d.ID, got.Attempts)
		}
		// The observer hears of an outcome just after the queue records it.
		eventually(t, d.ID+" observed", func() bool { return len(env.obs.finals(d.ID)) > 0 })
		if f := env.obs.finals(d.ID); len(f) != 1 || f[0] != OutcomeDelivered {
			t.Errorf("%s: observer saw %v", d.ID, f)
		}
	}
	if n := hits.Load(); n != 20 {
		t.Errorf("receiver hit %d times, want 20", n)
	}
	if len(env.q.doubleLeased) > 0 {
		t.Errorf("leased while still held: %v", env.q.doubleLeased)
	}
	entries := env.logs.FilterMessage("webhook delivered").All()
	if len(entries) != 20 {
		t.Fatalf("%d delivered log lines, want 20", len(entries))
	}
	fields := entries[0].ContextMap()
	for _, k := range []string{"webhook", "event", "target", "call_id", "delivery_id", "attempt", "status", "duration"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("log line lacks %s: %v", k, fields)
		}
	}
}

func TestPoolNotifyPicksUpNewWork(t *testing.T) {
	srv := statusServer(t, 204, nil, "")
	env := startPool(t, PoolOptions{Workers: 2})
	d := newDelivery("late", srv.URL, srv.URL, fastPolicy)
	env.q.add(d)
	env.pool.Notify()
	env.waitState(t, "late", queue.Delivered)
}

func TestPoolRetriesThenDelivers(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		if hits.Add(1) <= 2 {
			w.WriteHeader(503)
		}
	})
	env := startPool(t, PoolOptions{}, newDelivery("flaky", srv.URL, srv.URL, fastPolicy))
	got := env.waitState(t, "flaky", queue.Delivered)
	if len(got.Attempts) != 3 {
		t.Fatalf("%d attempts, want 3", len(got.Attempts))
	}
	for i, want := range []int{503, 503, 200} {
		if got.Attempts[i].Status != want {
			t.Errorf("attempt %d status %d, want %d", i+1, got.Attempts[i].Status, want)
		}
	}
	eventually(t, "the delivery observed", func() bool { return len(env.obs.finals("flaky")) == 3 })
	if f := env.obs.finals("flaky"); strings.Join(f, ",") != "retry,retry,delivered" {
		t.Errorf("observer saw %v", f)
	}
	retries := env.logs.FilterMessage("webhook attempt failed; will retry").All()
	if len(retries) != 2 {
		t.Fatalf("%d retry log lines, want 2", len(retries))
	}
	if m := retries[0].ContextMap(); m["reason"] != "http 503" || m["next_attempt"] == nil {
		t.Errorf("retry log fields: %v", m)
	}
}

func TestPoolPermanentFailureIsDead(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		hits.Add(1)
		w.WriteHeader(404)
	})
	env := startPool(t, PoolOptions{}, newDelivery("gone", srv.URL, srv.URL, fastPolicy))
	got := env.waitState(t, "gone", queue.Dead)
	if len(got.Attempts) != 1 || got.LastError != "http 404" {
		t.Fatalf("attempts %d, last error %q", len(got.Attempts), got.LastError)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("hits = %d", n)
	}
	eventually(t, "the death observed", func() bool { return len(env.obs.finals("gone")) == 1 })
	if f := env.obs.finals("gone"); strings.Join(f, ",") != "dead" {
		t.Errorf("observer saw %v", f)
	}
	if n := len(env.logs.FilterLevelExact(zapcore.ErrorLevel).All()); n != 1 {
		t.Errorf("%d error log lines, want 1", n)
	}
}

func TestPoolMaxAttemptsExhausted(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		hits.Add(1)
		w.WriteHeader(500)
	})
	p := fastPolicy
	p.MaxAttempts = 3
	env := startPool(t, PoolOptions{}, newDelivery("down", srv.URL, srv.URL, p))
	got := env.waitState(t, "down", queue.Dead)
	if len(got.Attempts) != 3 || hits.Load() != 3 {
		t.Fatalf("%d attempts, %d hits, want 3", len(got.Attempts), hits.Load())
	}
	if got.LastError != "http 500 (gave up after 3 attempts)" {
		t.Errorf("last error %q", got.LastError)
	}
}

func TestPoolManualRetryGetsFreshBudget(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		hits.Add(1)
		w.WriteHeader(500)
	})
	p := fastPolicy
	p.MaxAttempts = 2
	d := newDelivery("again", srv.URL, srv.URL, p)
	// Three attempts from an earlier life, then a manual retry.
	for i := range 3 {
		d.Attempts = append(d.Attempts, queue.Attempt{Start: d.CreatedAt.Add(-time.Duration(3-i) * time.Hour), Status: 500})
	}
	d.State = queue.Dead
	env := startPool(t, PoolOptions{})
	env.q.add(d)
	if n, err := env.q.RetryDead(context.Background(), d.ID); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	got := env.waitState(t, "again", queue.Dead)
	if hits.Load() != 2 || len(got.Attempts) != 5 {
		t.Fatalf("%d hits, %d attempts in history; want 2 new attempts", hits.Load(), len(got.Attempts))
	}
}

func TestPoolExpiredIsKilledWithoutAttempt(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { hits.Add(1) })
	d := newDelivery("old", srv.URL, srv.URL, fastPolicy)
	d.CreatedAt = time.Now().Add(-2 * fastPolicy.MaxAge)
	env := startPool(t, PoolOptions{}, d)
	got := env.waitState(t, "old", queue.Dead)
	if got.LastError != ReasonExpired || len(got.Attempts) != 0 || hits.Load() != 0 {
		t.Fatalf("last error %q, %d attempts, %d hits", got.LastError, len(got.Attempts), hits.Load())
	}
}

func TestPoolGivesUpWhenNextAttemptPassesMaxAge(t *testing.T) {
	srv := statusServer(t, 503, http.Header{"Retry-After": {"3600"}}, "")
	p := fastPolicy
	p.MaxAge = time.Minute
	env := startPool(t, PoolOptions{}, newDelivery("late", srv.URL, srv.URL, p))
	got := env.waitState(t, "late", queue.Dead)
	if len(got.Attempts) != 1 || !strings.Contains(got.LastError, "max_age") {
		t.Fatalf("%d attempts, last error %q", len(got.Attempts), got.LastError)
	}
}

func TestPoolSlowDestinationDoesNotStarveOthers(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	var slowHits, fastHits atomic.Int64
	slow := server(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		slowHits.Add(1)
		select { // black hole: never answers while the test looks
		case <-release:
		case <-done:
		case <-r.Context().Done():
		}
	})
	fast := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { fastHits.Add(1) })

	p := fastPolicy
	p.Timeout = time.Minute
	var ds []*queue.Delivery
	for i := range 10 { // the slow ones first in line
		ds = append(ds, newDelivery(fmt.Sprintf("slow%d", i), slow.URL, slow.URL, p))
	}
	for i := range 10 {
		ds = append(ds, newDelivery(fmt.Sprintf("fast%d", i), fast.URL, fast.URL, p))
	}
	env := startPool(t, PoolOptions{Workers: 4, PerDestination: 2}, ds...)
	t.Cleanup(unblock) // runs before the pool's Stop

	for i := range 10 {
		env.waitState(t, fmt.Sprintf("fast%d", i), queue.Delivered)
	}
	if n := fastHits.Load(); n != 10 {
		t.Errorf("fast receiver hit %d times, want 10", n)
	}
	// Every healthy delivery arrived while the slow receiver holds its cap
	// of attempts (they may still be on their way to it) and nothing of it
	// has finished.
	eventually(t, "the slow receiver holds its cap", func() bool { return slowHits.Load() >= 2 })
	if n := slowHits.Load(); n != 2 {
		t.Errorf("slow receiver hit %d times, want PerDestination=2", n)
	}
	for i := range 10 {
		if d := env.q.get(fmt.Sprintf("slow%d", i)); (d.State != queue.Pending && d.State != queue.Leased) || len(d.Attempts) != 0 {
			t.Errorf("slow%d: %s with %d attempts", i, d.State, len(d.Attempts))
		}
	}

	// Once the black hole answers, the backlog drains.
	unblock()
	for i := range 10 {
		env.waitState(t, fmt.Sprintf("slow%d", i), queue.Delivered)
	}
}

func TestPoolStopReleasesInFlight(t *testing.T) {
	entered := make(chan struct{}, 10)
	srv := server(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	// Everything running now is the test's; anything new after Stop is a leak.
	q := newMemQueue(t)
	before := goleak.IgnoreCurrent()
	sender := NewSender(SenderOptions{Guard: allowLoopback()})
	q.add(newDelivery("stuck", srv.URL, srv.URL, fastPolicy))
	pool := NewPool(PoolOptions{Queue: q, Sender: sender})
	pool.Start()
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- pool.Stop(ctx) }()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return after its context ended")
	}

	d := q.get("stuck")
	if d.State != queue.Pending || !d.LeasedUntil.IsZero() || len(d.Attempts) != 0 || d.LastError != "" {
		t.Fatalf("after Stop: %s leased=%v attempts=%d error=%q", d.State, d.LeasedUntil, len(d.Attempts), d.LastError)
	}
	if d.NextAttempt.After(time.Now()) {
		t.Errorf("released delivery is not due now: %v", d.NextAttempt)
	}
	if n := q.releaseCount(); n != 1 {
		t.Errorf("%d releases, want 1", n)
	}

	// Nothing the pool started may survive Stop. Close the client side
	// first: kept-alive connections belong to the Sender, not the pool.
	sender.CloseIdleConnections()
	goleak.VerifyNone(t, before)

	// A second Stop and a late Start are harmless.
	if err := pool.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	pool.Start()
	if err := pool.Stop(context.Background()); err != nil {
		t.Errorf("Stop after late Start: %v", err)
	}
}

func TestPoolStopWaitsForInFlight(t *testing.T) {
	entered := make(chan struct{}, 1)
	finish := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		entered <- struct{}{}
		select {
		case <-finish:
		case <-done:
		}
	})
	q := newMemQueue(t)
	q.add(newDelivery("slowish", srv.URL, srv.URL, fastPolicy))
	pool := NewPool(PoolOptions{Queue: q, Sender: newTestSender(t, SenderOptions{})})
	pool.Start()
	<-entered

	stopped := make(chan error, 1)
	go func() { stopped <- pool.Stop(context.Background()) }()
	close(finish)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if d := q.get("slowish"); d.State != queue.Delivered {
		t.Fatalf("in-flight attempt was not allowed to finish: %s", d.State)
	}
}

func TestPoolBacksOffOnQueueErrors(t *testing.T) {
	srv := statusServer(t, 200, nil, "")
	core, logs := observer.New(zapcore.DebugLevel)
	q := newMemQueue(t)
	q.leaseErrs = 3
	q.add(newDelivery("d", srv.URL, srv.URL, fastPolicy))
	pool := NewPool(PoolOptions{Queue: q, Sender: newTestSender(t, SenderOptions{}), Logger: zap.New(core)})
	pool.Start()
	t.Cleanup(func() { pool.Stop(context.Background()) })

	eventually(t, "delivered after the queue recovers", func() bool { return q.get("d").State == queue.Delivered })
	if n := logs.FilterMessage("cannot lease due webhook deliveries; retrying shortly").Len(); n != 3 {
		t.Errorf("%d lease error log lines, want 3", n)
	}
	q.mu.Lock()
	calls := q.leaseCalls
	q.mu.Unlock()
	// With a 100ms+ pause after each error the three failures cost three
	// calls, not a spin.
	if calls > 20 {
		t.Errorf("%d Lease calls: the dispatcher is spinning", calls)
	}
}

func TestPoolLongTimeoutGetsLongEnoughLease(t *testing.T) {
	srv := statusServer(t, 200, nil, "")
	p := fastPolicy
	p.Timeout = 2 * time.Minute // longer than the default the lease assumes
	env := startPool(t, PoolOptions{Lease: time.Second}, newDelivery("long", srv.URL, srv.URL, p))
	env.waitState(t, "long", queue.Delivered)
	// The lease was too short for a 2m attempt, so it was extended; the
	// attempt itself ran once and nothing was handed back.
	if d := env.q.get("long"); len(d.Attempts) != 1 {
		t.Fatalf("%d attempts", len(d.Attempts))
	}
	if n := env.q.releaseCount(); n != 0 {
		t.Errorf("%d releases, want 0", n)
	}
}

func TestPoolSetWorkers(t *testing.T) {
	env := startPool(t, PoolOptions{Workers: 8})
	env.pool.SetWorkers(2)
	env.pool.mu.Lock()
	w, pd := env.pool.workers, env.pool.perDest
	env.pool.mu.Unlock()
	if w != 2 || pd != 1 {
		t.Fatalf("workers %d perDest %d, want 2 and 1", w, pd)
	}
	srv := statusServer(t, 200, nil, "")
	env.q.add(newDelivery("x", srv.URL, srv.URL, fastPolicy))
	env.pool.Notify()
	env.waitState(t, "x", queue.Delivered)
}

func TestAttemptNumber(t *testing.T) {
	d := &queue.Delivery{AttemptCount: 2, Attempts: make([]queue.Attempt, 7)}
	if n := attemptNumber(d); n != 3 {
		t.Fatalf("attemptNumber = %d, want 3 (the history is not the current life)", n)
	}
}

// TestPoolLogsRedactedReason: a receiver that redirects to a URL with a
// token in it (a login page echoing ?api_token=) makes the delivery dead
// with a reason that quotes the Location; the log line must not carry it.
func TestPoolLogsRedactedReason(t *testing.T) {
	const token = "tok-Location-9f8e7d"
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		w.Header().Set("Location", "https://login.example/?api_token="+token+"&next=/hook")
		w.WriteHeader(302)
	})
	env := startPool(t, PoolOptions{}, newDelivery("redirected", srv.URL, srv.URL, fastPolicy))
	got := env.waitState(t, "redirected", queue.Dead)
	if !strings.Contains(got.LastError, token) {
		t.Fatalf("the reason does not quote the Location, so this test proves nothing: %q", got.LastError)
	}
	eventually(t, "the death logged", func() bool {
		return env.logs.FilterMessage("webhook delivery is dead; giving up (retry it by hand once fixed)").Len() == 1
	})
	for _, e := range env.logs.All() {
		for k, v := range e.ContextMap() {
			if strings.Contains(fmt.Sprint(v), token) {
				t.Errorf("log %q field %s holds the token: %v", e.Message, k, v)
			}
		}
	}
	m := env.logs.FilterMessage("webhook delivery is dead; giving up (retry it by hand once fixed)").All()[0].ContextMap()
	if r := fmt.Sprint(m["reason"]); !strings.Contains(r, "api_token=[redacted]&next=/hook") {
		t.Errorf("reason %q", r)
	}
}

// TestPoolPauseAppliesToTheWaitingLease: a pause or resume made while the
// dispatcher waits in a long poll applies at once. The waiting lease was
// asked with the old pauses; without asking again, a delivery queued for a
// just-paused webhook would be sent (and a resumed one would wait out the
// poll).
func TestPoolPauseAppliesToTheWaitingLease(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { hits.Add(1) })
	limits := NewLimiter()
	env := startPool(t, PoolOptions{Workers: 2, Limits: limits})
	time.Sleep(100 * time.Millisecond) // the dispatcher is in its long poll
	d := newDelivery("p1", srv.URL, srv.URL, fastPolicy)
	limits.SetPaused(d.WebhookKey(), true)
	env.q.add(d)
	time.Sleep(700 * time.Millisecond)
	if n := hits.Load(); n != 0 {
		t.Fatalf("a delivery of a paused webhook was sent %d times", n)
	}
	// Resume just after the dispatcher began a long poll (asked with the
	// pause in force), so that a resume that did not end it would wait
	// about maxIdle for the poll to run out.
	calls := func() int {
		env.q.mu.Lock()
		defer env.q.mu.Unlock()
		return env.q.leaseCalls
	}
	for n := calls(); calls() == n; {
		time.Sleep(time.Millisecond)
	}
	resumed := time.Now()
	limits.SetPaused(d.WebhookKey(), false)
	env.waitState(t, "p1", queue.Delivered)
	if waited := time.Since(resumed); waited > maxIdle*7/10 {
		t.Errorf("after the resume the delivery waited %s, as if the long poll ran out first", waited)
	}
}
