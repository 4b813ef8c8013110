package callhook

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
)

var errNotStarted = errors.New("the callhook app is not running yet")

// dedupWindow is how long dedup keys are kept before pruning: the longest
// dedup_window a handler may set (each handler's own window, default 24h,
// decides what counts as a repeat).
const dedupWindow = maxDedupWindow

// settings are the app settings an engine can take over on a reload.
type settings struct {
	workers        int
	perDestination int
	guard          *delivery.Guard
	drain          time.Duration
	retention      time.Duration
}

// engine is one open queue with its sender and workers. It outlives the
// config that created it as long as a newer config uses the same queue.
// It never uses a config's context: those are cancelled on every reload.
type engine struct {
	q      queue.Queue
	sender *delivery.Sender
	pool   *delivery.Pool
	logger *zap.Logger

	mu       sync.Mutex
	settings settings

	stopPrune chan struct{}
	pruneDone chan struct{}
}

func newEngine(b QueueBackend, s settings, logger *zap.Logger) (*engine, error) {
	q, err := b.Open(logger)
	if err != nil {
		return nil, err
	}
	sender := delivery.NewSender(delivery.SenderOptions{
		UserAgent: "callhook/" + Version,
		Guard:     s.guard,
	})
	e := &engine{
		q:      q,
		sender: sender,
		pool: delivery.NewPool(delivery.PoolOptions{
			Queue:          q,
			Sender:         sender,
			Workers:        s.workers,
			PerDestination: s.perDestination,
			Logger:         logger,
			// The engine outlives configs, so it reports to the
			// package-level collectors, not to a config's registry.
			Observer: outcomeMetrics{},
		}),
		logger:    logger,
		settings:  s,
		stopPrune: make(chan struct{}),
		pruneDone: make(chan struct{}),
	}
	e.pool.Start()
	go e.pruneLoop()
	metrics.queue.track(e)
	return e, nil
}

// configure applies a newer config's settings to a running engine.
func (e *engine) configure(s settings) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settings = s
	e.sender.SetGuard(s.guard)
	e.pool.SetWorkers(s.workers)
}

func (e *engine) enqueue(ctx context.Context, dedupKey string, ds []*queue.Delivery) ([]queue.Ref, bool, error) {
	refs, dup, err := e.q.Enqueue(ctx, dedupKey, ds)
	if err == nil && !dup {
		e.pool.Notify()
	}
	return refs, dup, err
}

// pruneLoop drops delivered deliveries past retention and expired dedup keys.
func (e *engine) pruneLoop() {
	defer close(e.pruneDone)
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		e.mu.Lock()
		retention := e.settings.retention
		e.mu.Unlock()
		now := time.Now()
		if err := e.q.Prune(context.Background(), now.Add(-retention), now.Add(-dedupWindow)); err != nil && !errors.Is(err, queue.ErrClosed) {
			e.logger.Error("pruning old deliveries failed; will try again in 10 minutes", zap.Error(err))
		}
		select {
		case <-e.stopPrune:
			return
		case <-t.C:
		}
	}
}

// Destruct drains in-flight attempts (bounded) and closes the queue. It is
// called by the usage pool when the last config using this queue stops.
func (e *engine) Destruct() error {
	metrics.queue.untrack(e)
	close(e.stopPrune)
	<-e.pruneDone
	e.mu.Lock()
	drain := e.settings.drain
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := e.pool.Stop(ctx); err != nil {
		e.logger.Warn("stopped before every in-flight delivery finished; they will be retried on the next start",
			zap.Duration("drain_timeout", drain), zap.Error(err))
	}
	// Nothing sends through this engine any more; its kept-alive
	// connections to receivers would otherwise hold a goroutine pair and a
	// file descriptor each for up to the transport's 90s idle timeout after
	// a reload that moved to another queue.
	e.sender.CloseIdleConnections()
	return e.q.Close()
}
