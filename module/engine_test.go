package callhook

import (
	"context"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
)

// slowPruneQueue is a queue whose Prune runs until its context ends, like
// a prune of millions of delivered deliveries. Nothing is ever due.
type slowPruneQueue struct {
	queue.Queue // unused methods panic
	pruning     chan struct{}
	maxPending  int
}

func (q *slowPruneQueue) Prune(ctx context.Context, _ queue.PruneRequest) error {
	close(q.pruning)
	<-ctx.Done()
	return ctx.Err()
}

func (q *slowPruneQueue) Lease(ctx context.Context, req queue.LeaseRequest) ([]queue.Lease, error) {
	t := time.NewTimer(req.Wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, nil
	}
}
func (q *slowPruneQueue) Stats(context.Context) (queue.Stats, error)    { return queue.Stats{}, nil }
func (q *slowPruneQueue) Close() error                                  { return nil }
func (q *slowPruneQueue) Pauses(context.Context) ([]queue.Pause, error) { return nil, nil }
func (q *slowPruneQueue) SetMaxPending(n int)                           { q.maxPending = n }

type fakeBackend struct{ q queue.Queue }

func (b fakeBackend) Key() string                           { return "fake" }
func (b fakeBackend) Open(*zap.Logger) (queue.Queue, error) { return b.q, nil }

func testSettings(workers int, drain time.Duration) settings {
	return settings{
		workers: workers, perDestination: 1, guard: delivery.NewGuard(nil),
		drain: drain, retention: time.Hour, maxPending: workers * 10, logger: zap.NewNop(),
	}
}

// TestDestructIsBoundedByDrainTimeout: a prune that is still running when
// the last config stops must not hold Destruct past drain_timeout.
func TestDestructIsBoundedByDrainTimeout(t *testing.T) {
	q := &slowPruneQueue{pruning: make(chan struct{})}
	e, err := newEngine("fake", fakeBackend{q}, testSettings(2, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	<-q.pruning
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- e.Destruct() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Destruct took %s with drain_timeout 100ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Destruct did not return within 5s of a 100ms drain_timeout: the prune holds it")
	}
	// and the prune was cancelled, not left running on a closed queue
	select {
	case <-e.pruneDone:
	case <-time.After(time.Second):
		t.Error("the prune still runs after Destruct: it does not run under a context Destruct cancels")
	}
}

// TestEngineRestoresPredecessorSettings: the settings in force are the
// newest holder's; when the newest lets go first (its config failed to
// start), the one before it is back in force, max_pending included.
func TestEngineRestoresPredecessorSettings(t *testing.T) {
	q := &slowPruneQueue{pruning: make(chan struct{})}
	old := &App{cfg: testSettings(4, time.Second)}
	e, err := newEngine("fake", fakeBackend{q}, old.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Destruct()
	e.hold(old)
	failed := &App{cfg: testSettings(9, 2*time.Second)}
	e.hold(failed)
	if e.settings.workers != 9 || q.maxPending != 90 {
		t.Fatalf("newest config not in force: workers %d, max_pending %d", e.settings.workers, q.maxPending)
	}
	e.release(failed)
	if e.settings.workers != 4 || e.settings.drain != time.Second || q.maxPending != 40 {
		t.Errorf("after the newest let go: workers %d, drain %s, max_pending %d; want the predecessor's 4, 1s, 40",
			e.settings.workers, e.settings.drain, q.maxPending)
	}
	// a successful reload: the new one holds, the old lets go; the new stays
	next := &App{cfg: testSettings(6, time.Second)}
	e.hold(next)
	e.release(old)
	if e.settings.workers != 6 {
		t.Errorf("after the old config stopped: workers %d, want the new config's 6", e.settings.workers)
	}
}

// TestCurrentWebhooksFollowTheNewestConfig: re-rendering, signing and
// limits use the webhooks of the config now in force, never a stale one's:
// a reload's config takes over, and a config that failed to start hands
// back to the one still running.
func TestCurrentWebhooksFollowTheNewestConfig(t *testing.T) {
	q := &slowPruneQueue{pruning: make(chan struct{})}
	s := testSettings(2, 100*time.Millisecond)
	e, err := newEngine("fake", fakeBackend{q}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Destruct()
	a1, a2 := &App{cfg: s}, &App{cfg: s}
	a1.cfg.webhooks, a2.cfg.webhooks = new(targetRegistry), new(targetRegistry)
	e.hold(a1)
	if e.current() != a1.cfg.webhooks {
		t.Fatal("the first config's webhooks are not in force")
	}
	e.hold(a2)
	if e.current() != a2.cfg.webhooks {
		t.Fatal("after a reload, the old config's webhooks are still in force")
	}
	e.release(a2)
	if e.current() != a1.cfg.webhooks {
		t.Fatal("a config that stopped first left its webhooks in force")
	}
}

// recordingPruneQueue reports every prune request and is otherwise idle.
type recordingPruneQueue struct {
	slowPruneQueue
	reqs chan queue.PruneRequest
}

func (q *recordingPruneQueue) Prune(ctx context.Context, r queue.PruneRequest) error {
	select {
	case q.reqs <- r:
	case <-ctx.Done():
	}
	return nil
}

func registryOf(hs ...*Handler) *targetRegistry {
	r := &targetRegistry{targets: map[string]*targetBlocks{}}
	for _, h := range hs {
		tb := r.targets[h.Target]
		if tb == nil {
			tb = &targetBlocks{}
			r.targets[h.Target] = tb
		}
		tb.handlers = append(tb.handlers, h)
	}
	return r
}

// TestPruneKeepsDedupKeysForTheLongestWindow: dedup keys are pruned after
// the longest dedup_window the running config sets (handlers with dedup off
// do not count), not after the longest any config could set; a reload that
// changes it prunes at once.
func TestPruneKeepsDedupKeysForTheLongestWindow(t *testing.T) {
	q := &recordingPruneQueue{reqs: make(chan queue.PruneRequest, 10)}
	s := testSettings(1, time.Second)
	s.webhooks = registryOf(
		&Handler{Target: "a", DedupWindow: caddy.Duration(2 * time.Hour)},
		&Handler{Target: "b", DedupWindow: caddy.Duration(30 * time.Minute)},
		&Handler{Target: "b", DedupWindow: caddy.Duration(5 * 24 * time.Hour), Dedup: dedupOff},
	)
	e, err := newEngine("fake", fakeBackend{q}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Destruct()
	want := func(keep time.Duration) {
		t.Helper()
		select {
		case r := <-q.reqs:
			if got := time.Since(r.DedupBefore); got < keep || got > keep+time.Minute {
				t.Fatalf("the prune forgets dedup keys older than %s, want %s", got.Round(time.Second), keep)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no prune")
		}
	}
	want(2 * time.Hour)
	app := &App{cfg: testSettings(1, time.Second)}
	app.cfg.webhooks = registryOf(&Handler{Target: "a", DedupWindow: caddy.Duration(10 * time.Minute)})
	e.hold(app)
	want(10 * time.Minute)
	// No handler detects repeats: the default window's worth is kept.
	app2 := &App{cfg: testSettings(1, time.Second)}
	app2.cfg.webhooks = registryOf(&Handler{Target: "a", Dedup: dedupOff})
	e.hold(app2)
	want(defaultDedupWindow)
}
