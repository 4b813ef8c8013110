package natswq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

// OpenOrWait is Open for a process that must start whether or not NATS is
// up, as Caddy must: a node that boots before its NATS servers (a power
// cut, a cluster restarted after the edge) still serves its sites. When
// Open fails only because NATS cannot be reached (no server answers,
// JetStream has no leader yet, a timeout), OpenOrWait returns at once a
// queue that answers queue.ErrUnavailable to every call (ingest answers
// 503, so nothing is accepted that is not stored) and keeps opening in the
// background; once open, every call goes to the real queue. Errors that
// waiting cannot fix (credentials, TLS, JetStream disabled, a bucket whose
// settings differ from the config) are returned, as Open's, so they fail
// the start.
func OpenOrWait(o Options) (queue.Queue, error) {
	q, err := Open(o)
	if err == nil {
		return q, nil
	}
	if !unreachable(err) {
		return nil, err
	}
	w := &waiting{o: o, logger: o.Logger, done: make(chan struct{})}
	if w.logger == nil {
		w.logger = zap.NewNop()
	}
	w.maxPending.Store(int64(o.MaxPending))
	w.lastErr.Store(&err)
	w.logger.Error("callhook starts without its delivery queue: NATS cannot be reached; ingest answers 503 and nothing is delivered until it can, trying again every few seconds",
		zap.String("servers", redactURLs(o.URLs)), zap.String("bucket", o.Bucket), zap.Error(err))
	var ctx context.Context
	ctx, w.stop = context.WithCancel(context.Background())
	go w.openLoop(ctx, time.Now())
	return w, nil
}

// unreachable tells the errors of Open that mean "NATS cannot be reached
// now" from the ones that mean "it will never work with this config".
// jsClusterNoPeers is the server's JSClusterNoPeersErrF: "no suitable peers
// for placement".
const jsClusterNoPeers jetstream.ErrorCode = 10005

func unreachable(err error) bool {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return false // an APIError with code 503 too
	case errors.As(err, &api):
		// 503: JetStream temporarily unavailable (no meta leader yet);
		// 408: a request timed out inside the cluster; 10005 with "peer
		// offline": a stream's replicas cannot be placed while a server is
		// down or missed its heartbeats (without "offline" the cluster has
		// too few servers for the replicas asked: a config error).
		if api.ErrorCode == jsClusterNoPeers {
			return strings.Contains(api.Description, "offline")
		}
		return (api.Code == 503 || api.Code == 408) && api.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabled &&
			api.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabledForAccount
	}
	return errors.Is(err, natsgo.ErrNoServers) || errors.Is(err, natsgo.ErrTimeout) ||
		errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, natsgo.ErrConnectionClosed) ||
		errors.Is(err, context.DeadlineExceeded)
}

// Backoff of the background open: NATS's own reconnects are every 250 ms;
// a node waiting for a whole cluster to come up need not try as often.
const (
	reopenMin = 500 * time.Millisecond
	reopenMax = 5 * time.Second
	// reopenLog is how often a node still waiting says so again.
	reopenLog = time.Minute
)

// waiting is the queue OpenOrWait returns while NATS cannot be reached.
type waiting struct {
	o      Options
	logger *zap.Logger

	q          atomic.Pointer[Queue]
	lastErr    atomic.Pointer[error]
	maxPending atomic.Int64

	closed atomic.Bool
	stop   context.CancelFunc
	done   chan struct{} // closed when openLoop returns: opened or closed
}

func (w *waiting) openLoop(ctx context.Context, since time.Time) {
	defer close(w.done)
	delay, tries, lastLog := reopenMin, 1, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		q, err := open(ctx, w.o, nil)
		tries++
		if err == nil {
			if ctx.Err() != nil { // closed while it opened
				_ = q.Close()
				return
			}
			// Publish the queue first, then apply the cap: SetMaxPending
			// stores the cap before it looks for the queue, so a call
			// racing with these two lines is seen by one side or the
			// other, never lost between them.
			w.q.Store(q)
			q.SetMaxPending(int(w.maxPending.Load()))
			w.logger.Info("NATS reached: the delivery queue is open, ingest and deliveries resume",
				zap.String("bucket", w.o.Bucket), zap.Duration("waited", time.Since(since).Round(time.Millisecond)), zap.Int("tries", tries))
			return
		}
		if ctx.Err() != nil {
			return
		}
		prev := w.lastErr.Swap(&err)
		changed := prev == nil || (*prev).Error() != err.Error()
		switch {
		case !unreachable(err) && (changed || time.Since(lastLog) >= reopenLog):
			// Reached, but it will not work as configured (say the
			// bucket's replicas differ): a config error, said when it
			// shows up and then once a minute.
			lastLog = time.Now()
			w.logger.Error("NATS answers but the delivery queue cannot open; ingest answers 503 until this is fixed",
				zap.String("servers", redactURLs(w.o.URLs)), zap.Error(err))
		case unreachable(err) && time.Since(lastLog) >= reopenLog:
			lastLog = time.Now()
			w.logger.Warn("still waiting for NATS; ingest answers 503 and nothing is delivered until it can be reached",
				zap.String("servers", redactURLs(w.o.URLs)), zap.Duration("waited", time.Since(since).Round(time.Second)),
				zap.Int("tries", tries), zap.Error(err))
		}
		delay = min(2*delay, reopenMax)
	}
}

// get returns the open queue, or the error every call answers meanwhile.
func (w *waiting) get() (*Queue, error) {
	if q := w.q.Load(); q != nil {
		return q, nil
	}
	if w.closed.Load() {
		return nil, queue.ErrClosed
	}
	why := "not reached yet"
	if e := w.lastErr.Load(); e != nil {
		why = (*e).Error()
	}
	return nil, fmt.Errorf("NATS queue not open since start (%s): %w", why, queue.ErrUnavailable)
}

// Lease waits for the queue to open within req.Wait, as a long poll waits
// for work, so that the pool does not log a failed lease every second.
func (w *waiting) Lease(ctx context.Context, req queue.LeaseRequest) ([]queue.Lease, error) {
	if q := w.q.Load(); q != nil {
		return q.Lease(ctx, req)
	}
	if w.closed.Load() {
		return nil, queue.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	t := time.NewTimer(req.Wait)
	defer t.Stop()
	select {
	case <-w.done: // opened, or closed
	case <-t.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	q, err := w.get()
	if err != nil {
		return nil, err
	}
	req.Wait = max(0, req.Wait-time.Since(start))
	return q.Lease(ctx, req)
}

func (w *waiting) Enqueue(ctx context.Context, env *queue.Envelope) (queue.EnqueueResult, error) {
	q, err := w.get()
	if err != nil {
		return queue.EnqueueResult{}, err
	}
	return q.Enqueue(ctx, env)
}

func (w *waiting) Ack(ctx context.Context, t queue.Token, a queue.Attempt) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.Ack(ctx, t, a)
}

func (w *waiting) Retry(ctx context.Context, t queue.Token, a queue.Attempt, next time.Time, reason string) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.Retry(ctx, t, a, next, reason)
}

func (w *waiting) Dead(ctx context.Context, t queue.Token, a queue.Attempt, reason string) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.Dead(ctx, t, a, reason)
}

func (w *waiting) Release(ctx context.Context, t queue.Token, next time.Time) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.Release(ctx, t, next)
}

func (w *waiting) Extend(ctx context.Context, t queue.Token, until time.Time) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.Extend(ctx, t, until)
}

func (w *waiting) Get(ctx context.Context, id string) (*queue.Delivery, error) {
	q, err := w.get()
	if err != nil {
		return nil, err
	}
	return q.Get(ctx, id)
}

func (w *waiting) List(ctx context.Context, f queue.Filter) (queue.Page, error) {
	q, err := w.get()
	if err != nil {
		return queue.Page{}, err
	}
	return q.List(ctx, f)
}

func (w *waiting) Stats(ctx context.Context) (queue.Stats, error) {
	q, err := w.get()
	if err != nil {
		return queue.Stats{}, err
	}
	return q.Stats(ctx)
}

func (w *waiting) RetryDead(ctx context.Context, ids ...string) (int, error) {
	q, err := w.get()
	if err != nil {
		return 0, err
	}
	return q.RetryDead(ctx, ids...)
}

func (w *waiting) Redeliver(ctx context.Context, d *queue.Delivery) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.Redeliver(ctx, d)
}

func (w *waiting) DeleteDead(ctx context.Context, ids ...string) (int, error) {
	q, err := w.get()
	if err != nil {
		return 0, err
	}
	return q.DeleteDead(ctx, ids...)
}

func (w *waiting) GetEvent(ctx context.Context, id string) (*queue.Event, error) {
	q, err := w.get()
	if err != nil {
		return nil, err
	}
	return q.GetEvent(ctx, id)
}

func (w *waiting) SetPause(ctx context.Context, target, webhook string, p *queue.Pause) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.SetPause(ctx, target, webhook, p)
}

func (w *waiting) Pauses(ctx context.Context) ([]queue.Pause, error) {
	q, err := w.get()
	if err != nil {
		return nil, err
	}
	return q.Pauses(ctx)
}

func (w *waiting) Prune(ctx context.Context, r queue.PruneRequest) error {
	q, err := w.get()
	if err != nil {
		return err
	}
	return q.Prune(ctx, r)
}

// SetMaxPending changes the cap now if the queue is open, and otherwise
// when it opens.
func (w *waiting) SetMaxPending(n int) {
	w.maxPending.Store(int64(n))
	if q := w.q.Load(); q != nil {
		q.SetMaxPending(n)
	}
}

// Close stops the background open (an open under way is given up) and
// closes the queue if it opened.
func (w *waiting) Close() error {
	if w.closed.Swap(true) {
		return queue.ErrClosed
	}
	w.stop()
	<-w.done
	if q := w.q.Load(); q != nil {
		return q.Close()
	}
	return nil
}

// SimulateCrash is Close: nothing is buffered on this side.
func (w *waiting) SimulateCrash() error { return w.Close() }

// Interface guards
var (
	_ queue.Queue                     = (*waiting)(nil)
	_ interface{ SetMaxPending(int) } = (*waiting)(nil)
)
