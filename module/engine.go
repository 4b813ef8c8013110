package callhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
)

var errNotStarted = errors.New("the callhook app is not running yet")

// dedupWindow is the longest dedup_window a handler may set, the window a
// backend applies to an envelope that names none. How long the prune keeps
// dedup keys is the running config's longest window (dedupKeep).
const dedupWindow = maxDedupWindow

// settings are everything of a config's app that a running engine takes
// over: computed once, with their defaults, when the app is provisioned,
// and applied to an engine through configure only.
type settings struct {
	workers        int
	perDestination int
	guard          *delivery.Guard
	drain          time.Duration
	retention      time.Duration
	// maxPending is the queue's cap on waiting deliveries, or -1 when the
	// backend does not say (it then keeps what it opened with).
	maxPending int
	logger     *zap.Logger
	// tlsProfiles are the webhooks' TLS settings by profile name.
	tlsProfiles map[string]*tls.Config
	// webhooks are the config's webhooks by target: what renders a stored
	// event again, what signs an attempt, what limits and pauses apply.
	webhooks *targetRegistry
	// sealKey seals signing secrets in the queue (secret_key, or the key
	// file under Caddy's data directory); set by the app's Start.
	sealKey []byte
}

// pendingCapper is implemented by an open queue whose cap on waiting
// deliveries (max_pending) can change while it is open, so a reload that
// keeps the queue but changes its cap takes effect.
type pendingCapper interface{ SetMaxPending(n int) }

// engine is one open queue with its sender and workers. It outlives the
// config that created it as long as a newer config uses the same queue.
// It never uses a config's context: those are cancelled on every reload.
type engine struct {
	key    string
	q      queue.Queue
	sender *delivery.Sender
	pool   *delivery.Pool
	// logger writes through the logger of the config now in charge (see
	// swapCore); the pool and the queue were handed it when they opened.
	logger *zap.Logger
	logs   *swapCore
	// limiter holds the per-webhook limits and pauses the pool leases by.
	limiter *delivery.Limiter
	// keys seal signing secrets into queued work and open them again.
	keys *delivery.Keyring
	// hooks are the outcome figures and failure streaks per webhook key.
	hooks hookStats
	// paused are the paused webhooks, read from the queue.
	paused pauses

	mu       sync.Mutex
	settings settings
	// holders are the started apps using this engine, oldest first. The
	// newest one's settings are in force; when it stops while older ones
	// still hold the engine (its config failed to start), the settings of
	// the one before it are put back.
	holders []*App

	// pruneCtx bounds pruning: Destruct cancels it, so a large prune cannot
	// hold a stop past drain_timeout.
	pruneCtx    context.Context
	cancelPrune context.CancelFunc
	// pruneKick makes the prune run now: a reload changed the retention.
	pruneKick chan struct{}
	pruneDone chan struct{}
	pauseDone chan struct{}
}

func newEngine(key string, b QueueBackend, s settings) (*engine, error) {
	logs := newSwapCore(s.logger.Core())
	logger := zap.New(logs).Named(s.logger.Name())
	q, err := b.Open(logger)
	if err != nil {
		return nil, err
	}
	e := &engine{
		key:       key,
		q:         q,
		logger:    logger,
		logs:      logs,
		settings:  s,
		limiter:   delivery.NewLimiter(),
		keys:      delivery.NewKeyring(),
		pruneDone: make(chan struct{}),
		pauseDone: make(chan struct{}),
	}
	e.sender = delivery.NewSender(delivery.SenderOptions{
		UserAgent: delivery.DefaultUserAgent,
		Guard:     s.guard,
		Secrets:   e.signingSecrets,
	})
	e.pool = delivery.NewPool(delivery.PoolOptions{
		Queue:          q,
		Sender:         e.sender,
		Workers:        s.workers,
		PerDestination: s.perDestination,
		Limits:         e.limiter,
		Logger:         logger,
		// The engine outlives configs, so it reports to the package-level
		// collectors, not to a config's registry; it also keeps each
		// webhook's figures and pauses failing ones (disable_after).
		Observer: e,
	})
	e.pruneCtx, e.cancelPrune = context.WithCancel(context.Background())
	e.pruneKick = make(chan struct{}, 1)
	e.loadPauses()
	e.applyLocked(s)
	e.pool.Start()
	go e.pruneLoop()
	go e.pauseLoop()
	metrics.queue.track(e)
	return e, nil
}

// hold makes a the engine's newest user and applies its settings.
func (e *engine) hold(a *App) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.holders = append(e.holders, a)
	e.applyLocked(a.cfg)
}

// release drops a from the engine's users. If a's settings were in force
// and an older config still uses the engine (a's config failed to start and
// Caddy keeps the old one running), that config's settings are put back.
func (e *engine) release(a *App) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := slices.Index(e.holders, a)
	if i < 0 {
		return
	}
	newest := i == len(e.holders)-1
	e.holders = slices.Delete(e.holders, i, i+1)
	if newest && len(e.holders) > 0 {
		e.applyLocked(e.holders[len(e.holders)-1].cfg)
		e.logger.Warn("a newer callhook config stopped before the one it replaced (it failed to start); the running config's settings are back in force",
			zap.String("queue", e.key))
	}
}

// applyLocked puts s in force: workers, per-destination cap, SSRF guard,
// max_pending, retention, drain_timeout and the logger. It is the one place
// settings reach a running engine. e.mu must be held.
func (e *engine) applyLocked(s settings) {
	retentionChanged := e.settings.retention != s.retention || dedupKeep(e.settings.webhooks) != dedupKeep(s.webhooks)
	e.forgetRemovedWebhooks(e.settings.webhooks, s.webhooks)
	e.settings = s
	if retentionChanged && e.pruneKick != nil {
		// A new retention or dedup window applies now, not at the next
		// 10-minute prune.
		select {
		case e.pruneKick <- struct{}{}:
		default:
		}
	}
	e.logs.set(s.logger.Core())
	e.sender.SetGuard(s.guard)
	e.sender.SetTLSProfiles(s.tlsProfiles)
	e.pool.SetLimits(s.workers, s.perDestination)
	if c, ok := e.q.(pendingCapper); ok && s.maxPending >= 0 {
		c.SetMaxPending(s.maxPending)
	}
	if s.sealKey != nil {
		if err := e.keys.Use(s.sealKey); err != nil {
			e.logger.Error("cannot use the secret key; signing secrets are sealed with the previous one", zap.Error(err))
		}
	}
	e.limiter.SetLimits(webhookLimitsOf(s.webhooks))
}

// current is the running config's webhooks.
func (e *engine) current() *targetRegistry {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.settings.webhooks
}

// enqueue stores an event envelope whose deliveries reg's webhooks
// rendered, sealing their signing secrets first. The queue's lease long
// poll wakes the workers by itself.
func (e *engine) enqueue(ctx context.Context, env *queue.Envelope, reg *targetRegistry) (queue.EnqueueResult, error) {
	for _, d := range env.Deliveries {
		if err := e.seal(reg, d); err != nil {
			return queue.EnqueueResult{}, err
		}
	}
	return e.q.Enqueue(ctx, env)
}

// pruneEvery is how often the prune runs for a retention: every 10 minutes,
// more often for a short retention (at most twice per retention, at least
// every second), so a delivered record outlives its retention by little.
func pruneEvery(retention time.Duration) time.Duration {
	return min(10*time.Minute, max(retention/2, time.Second))
}

// seal puts the signing secrets of d's webhook in reg, sealed, into d's
// policy (see queue.Policy.SealedSecret). A dead-on-arrival delivery has
// no request to sign: it is sealed when it is rendered again.
func (e *engine) seal(reg *targetRegistry, d *queue.Delivery) error {
	if d.State == queue.Dead {
		return nil
	}
	_, w := reg.webhook(d.Target, d.Webhook)
	if w == nil {
		return nil
	}
	sealed, err := e.keys.Seal(d.ID, w.Secrets())
	if err != nil {
		return fmt.Errorf("sealing the signing secret of webhook %s: %w", d.Webhook, err)
	}
	d.Policy.SealedSecret = sealed
	return nil
}

// signingSecrets are the secrets that sign an attempt of d: its webhook's
// current ones while the running config has the webhook (a rotated secret
// applies from the next attempt), else the ones it was rendered with.
func (e *engine) signingSecrets(d *queue.Delivery) ([][]byte, error) {
	if _, w := e.current().webhook(d.Target, d.Webhook); w != nil {
		return w.Secrets(), nil
	}
	secrets, err := e.keys.Open(d.ID, d.Policy.SealedSecret)
	if err != nil {
		return nil, fmt.Errorf("webhook %s of target %s is no longer in the running config, and the secret it was rendered with cannot be opened: %v", d.Webhook, d.Target, err)
	}
	return secrets, nil
}

// dedupKeep is how long the prune keeps dedup keys: the longest
// dedup_window of the config's handlers that detect repeats, not the
// longest any handler could set, so a config of 24h windows does not keep
// a week of keys on disk. A config where none does keeps the default
// window's worth, for a reload that turns repeat detection back on.
func dedupKeep(reg *targetRegistry) time.Duration {
	if w := reg.longestDedupWindow(); w > 0 {
		return w
	}
	return defaultDedupWindow
}

// pruneLoop drops delivered deliveries past retention and expired dedup keys.
func (e *engine) pruneLoop() {
	defer close(e.pruneDone)
	for {
		e.mu.Lock()
		retention := e.settings.retention
		keep := dedupKeep(e.settings.webhooks)
		e.mu.Unlock()
		now := time.Now()
		cutoff := now.Add(-retention)
		err := e.q.Prune(e.pruneCtx, queue.PruneRequest{DeliveredBefore: cutoff, EventsBefore: cutoff, DedupBefore: now.Add(-keep)})
		every := pruneEvery(retention)
		if err != nil && !errors.Is(err, queue.ErrClosed) && e.pruneCtx.Err() == nil {
			e.logger.Error("pruning old deliveries failed; will try again", zap.Duration("retry_in", every), zap.Error(err))
		}
		t := time.NewTimer(every)
		select {
		case <-e.pruneCtx.Done():
			t.Stop()
			return
		case <-e.pruneKick:
			t.Stop()
		case <-t.C:
		}
	}
}

// Destruct drains in-flight attempts and closes the queue, all within
// drain_timeout (plus the queue's close). It is called by the usage pool when
// the last config using this queue stops.
func (e *engine) Destruct() error {
	metrics.queue.untrack(e)
	e.mu.Lock()
	drain := e.settings.drain
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	// A prune runs in chunks and stops between them once cancelled. It
	// stops while the pool drains, not before: waiting for it first let
	// workers start attempts that the rest of the drain then cut.
	e.cancelPrune()
	if err := e.pool.Stop(ctx); err != nil {
		e.logger.Warn("stopped before every in-flight delivery finished; they will be retried on the next start",
			zap.Duration("drain_timeout", drain), zap.Error(err))
	}
	select {
	case <-e.pruneDone:
	case <-ctx.Done():
		e.logger.Warn("pruning did not stop within drain_timeout; closing the queue under it", zap.Duration("drain_timeout", drain))
	}
	select {
	case <-e.pauseDone:
	case <-ctx.Done():
	}
	// Nothing sends through this engine any more; its kept-alive
	// connections to receivers would otherwise hold a goroutine pair and a
	// file descriptor each for up to the transport's 90s idle timeout after
	// a reload that moved to another queue.
	e.sender.CloseIdleConnections()
	e.warnLeftBehind()
	return e.q.Close()
}

// warnLeftBehind says loudly how many deliveries stay in this queue when a
// config that uses another queue is running (the queue path or backend was
// changed in a reload): nothing sends them until a config uses this queue
// again. A plain shutdown is not worth a warning: the next start resumes.
func (e *engine) warnLeftBehind() {
	var others []string
	engines.Range(func(k, v any) bool {
		if v != any(e) {
			others = append(others, fmt.Sprint(k))
		}
		return true
	})
	if len(others) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	st, err := e.q.Stats(ctx)
	if err != nil {
		e.logger.Error("the running config uses another queue; this one is closed and its waiting deliveries could not be counted",
			zap.String("queue", e.key), zap.Strings("now_using", others), zap.Error(err))
		return
	}
	if n := st.Pending + st.Leased; n > 0 {
		e.logger.Error("the running config uses another queue: deliveries left in this one will not be sent until a config uses it again (point the queue back at it, or retry them there)",
			zap.String("queue", e.key), zap.Strings("now_using", others), zap.Int("pending", n), zap.Int("dead", st.Dead))
	}
}
