// Package nats is the queue backend that several Caddy nodes share: every
// record lives in one replicated NATS JetStream key-value bucket, and every
// node keeps an in-memory mirror of it, fed by a watch, to lease fairly.
//
// # The bucket
//
// One bucket, named by the `stream` option (default CALLHOOK; its stream is
// KV_CALLHOOK), created by Open with the settings below and checked on every
// later Open. Keys (ids are encoded to key tokens, see keys.go):
//
//	d.<delivery>   the delivery record: request, policy, state, due time,
//	               lease (holder nonce and end), order position
//	h.<delivery>   its attempt history (newest 50), apart from the record
//	e.<event>      the stored event and the ids of its deliveries
//	x.<sha256>     a dedup key, written create-only with a per-message TTL
//	               (the dedup window), never the stream's duplicate window
//	p.<target>.<webhook>  a pause
//
// The stream keeps one message per subject (history 1), file storage,
// per-message TTLs and atomic batch publish (server 2.12 or later).
//
// # Writes, all fenced by the subject's last sequence
//
// Every write carries Nats-Expected-Last-Subject-Sequence: 0 for a record
// that must be new (an event, a delivery, a dedup key), or the revision the
// writer read. JetStream checks it on the stream's leader, so two nodes can
// never both move one delivery, and an id reused by mistake stores nothing.
//
//   - Enqueue is one atomic batch: the dedup key, the event and every
//     delivery (and the history of one delivered on arrival). JetStream
//     stores all or none of it; a dedup key that exists fails the batch and
//     the answer is the first envelope's, read from the key. 202 therefore
//     means the leader (and, with replicas 3, a quorum) acknowledged the
//     whole envelope.
//   - Lease moves a due delivery to leased with a fresh random nonce and
//     its lease end, expecting the revision the mirror holds. The token is
//     the nonce and the id; an outcome reads the record and refuses a token
//     whose nonce is not the record's (another node or a later lease took
//     it over): that is the fencing.
//   - Ack, Retry and Dead are one atomic batch of the record (expected
//     revision) and its history, so an attempt is recorded exactly when its
//     outcome is. Release and Extend write the record only.
//   - A lease that ends without an outcome (the holder died) leaves the
//     record leased with a lease end in the past: every node's mirror sees it
//     due again then. That, not JetStream redelivery, is the safety net, and
//     callhook's own policy (attempts, backoff, Retry-After, dead) stays in
//     charge: nothing is NAKed and no consumer's ack window is involved.
//
// # The mirror, fairness and ordering
//
// Each node watches d.>, e.> and p.> and applies every change (and its own
// writes, at once, by revision) to an in-memory mirror: lanes per
// (destination, webhook) with a heap by due time, order-key queues, list
// indexes and state counters, like the embedded backend's. Lease walks the
// lanes round-robin and skips, in constant time, one that is paused (by the
// request or by a pause stored in the bucket by any node), over budget, or
// not due; only then does it write. A mirror that lags can only propose a
// delivery whose revision is old, and the write then fails and is skipped.
//
// An order key's deliveries are kept in order of their position: the
// revision of the write that created them (or put them back by hand), which
// JetStream assigns in one sequence for the whole cluster. Only the first one
// that is not delivered or dead is in its lane. A lagging mirror can only
// think an earlier delivery is still unfinished, never the reverse, so the
// order holds across nodes.
//
// # Connection loss
//
// The client never buffers while disconnected (ReconnectBufSize -1): a call
// fails at once with an error wrapping queue.ErrUnavailable, and an atomic
// batch cut off before its commit is dropped by the server. The client
// reconnects by itself, and the watch resumes.
package nats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	defaultBucket      = "CALLHOOK"
	defaultDedupWindow = 24 * time.Hour
	// opTimeout bounds one round trip when the caller's context has no
	// deadline of its own.
	opTimeout = 10 * time.Second
	// keepAttempts is how many attempts a delivery's history keeps.
	keepAttempts = 50
	// maxBatch is the most messages one atomic batch may carry (the
	// server's default limit is 1000).
	maxBatch = 1000
	// batchSlots bounds the atomic batches one node has open at once; the
	// server allows 50 per stream by default.
	batchSlots = 12
	maxIDLen   = 1024
)

// Options configure Open.
type Options struct {
	// URLs are the servers to connect to (nats://host:port, tls://...).
	URLs []string
	// Bucket is the key-value bucket (default CALLHOOK); its stream is
	// KV_<Bucket>.
	Bucket string
	// Replicas is the bucket's replica count (default 1).
	Replicas int
	// DedupWindow is how long a dedup key is remembered (default 24h).
	DedupWindow time.Duration
	// MaxPending caps pending plus leased deliveries across the cluster (as
	// this node sees them); 0 means no cap.
	MaxPending int
	// ConnectOptions are passed to nats.Connect (credentials, TLS).
	ConnectOptions []natsgo.Option
	// Name is the connection's name as the server shows it.
	Name string
	// ConnectTimeout bounds Open's wait for a first connection (default 10s).
	ConnectTimeout time.Duration
	// Logger may be nil.
	Logger *zap.Logger
}

// Queue is a queue.Queue on a NATS JetStream key-value bucket.
type Queue struct {
	nc       *natsgo.Conn
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	bucket   string
	replicas int
	prefix   string // "$KV.<bucket>."
	logger   *zap.Logger

	dedupWindow time.Duration
	maxPending  atomic.Int64

	m *mirror

	inflightMu   sync.Mutex
	inflight     map[uint64]context.CancelCauseFunc
	inflightNext uint64

	slots   chan struct{} // atomic batch slots
	closed  atomic.Bool
	done    chan struct{} // closed by Close
	stop    context.CancelFunc
	watchWG sync.WaitGroup
	bg      sync.WaitGroup // refreshLater
	once    sync.Once
}

// Open connects, creates or checks the bucket, loads the mirror and starts
// the watch. It returns once the mirror holds every record.
func Open(o Options) (*Queue, error) {
	return open(context.Background(), o)
}

// open is Open, given up when ctx ends.
func open(ctx context.Context, o Options) (*Queue, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("nats queue: no server URL")
	}
	if o.Bucket == "" {
		o.Bucket = defaultBucket
	}
	if err := validBucket(o.Bucket); err != nil {
		return nil, err
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = defaultDedupWindow
	}
	if o.DedupWindow < time.Second {
		o.DedupWindow = time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	logger := o.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	q := &Queue{
		bucket:      o.Bucket,
		replicas:    o.Replicas,
		prefix:      "$KV." + o.Bucket + ".",
		logger:      logger,
		dedupWindow: o.DedupWindow,
		slots:       make(chan struct{}, batchSlots),
		inflight:    map[uint64]context.CancelCauseFunc{},
		done:        make(chan struct{}),
	}
	q.maxPending.Store(int64(o.MaxPending))
	q.m = newMirror()

	opts := []natsgo.Option{
		natsgo.Name(o.Name),
		natsgo.Timeout(o.ConnectTimeout),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250 * time.Millisecond),
		// Never buffer while disconnected: a publish then fails at once and
		// ingest answers 503, instead of storing later what was refused.
		natsgo.ReconnectBufSize(-1),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			q.lost()
			if !q.closed.Load() {
				logger.Warn("lost the connection to NATS; ingest answers 503 until it is back", zap.Error(err))
			}
		}),
		natsgo.ReconnectHandler(func(c *natsgo.Conn) {
			logger.Info("reconnected to NATS", zap.String("server", c.ConnectedUrlRedacted()))
		}),
	}
	opts = append(opts, o.ConnectOptions...)
	nc, err := natsgo.Connect(joinURLs(o.URLs), opts...)
	if err != nil {
		return nil, fmt.Errorf("nats queue: connecting to %s: %w", redactURLs(o.URLs), err)
	}
	q.nc = nc
	q.js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats queue: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := q.setup(ctx, o.Replicas); err != nil {
		nc.Close()
		return nil, err
	}
	wctx, stop := context.WithCancel(context.Background())
	q.stop = stop
	if err := q.startWatch(ctx, wctx); err != nil {
		stop()
		nc.Close()
		return nil, fmt.Errorf("nats queue: loading bucket %s: %w", o.Bucket, err)
	}
	logger.Info("nats queue open", zap.String("bucket", o.Bucket), zap.String("server", nc.ConnectedUrlRedacted()),
		zap.Int("replicas", o.Replicas), zap.Int("deliveries", q.m.count()))
	return q, nil
}

// SetMaxPending changes the cap on pending plus leased deliveries.
func (q *Queue) SetMaxPending(n int) { q.maxPending.Store(int64(n)) }

// Close stops the watch and closes the connection. Leases held stay in the
// bucket and end when they would have.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return queue.ErrClosed
	}
	q.once.Do(func() { close(q.done) })
	q.stop()
	q.watchWG.Wait()
	q.bg.Wait()
	q.nc.Close()
	return nil
}

// SimulateCrash drops the connection without any shutdown path, as a killed
// process would. Nothing is buffered client side, so it is Close.
func (q *Queue) SimulateCrash() error {
	return q.Close()
}

// opCtx returns a context for the round trips of one call: with a
// deadline when the caller's has none, and ended as soon as the connection
// is lost, so that a request whose answer can no longer come fails at once
// instead of at its timeout.
func (q *Queue) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	base, baseCancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		base, baseCancel = context.WithTimeout(ctx, opTimeout)
	}
	c, cancel := context.WithCancelCause(base)
	q.inflightMu.Lock()
	id := q.inflightNext
	q.inflightNext++
	q.inflight[id] = cancel
	q.inflightMu.Unlock()
	if !q.nc.IsConnected() {
		cancel(errNotConnected)
	}
	return c, func() {
		q.inflightMu.Lock()
		delete(q.inflight, id)
		q.inflightMu.Unlock()
		cancel(nil)
		baseCancel()
	}
}

var errNotConnected = errors.New("not connected to NATS")

// lost ends every call's round trips when the connection drops.
func (q *Queue) lost() {
	q.inflightMu.Lock()
	defer q.inflightMu.Unlock()
	for _, cancel := range q.inflight {
		cancel(errNotConnected)
	}
}

// check answers ErrClosed or the context's error before a call starts.
func (q *Queue) check(ctx context.Context) error {
	if q.closed.Load() {
		return queue.ErrClosed
	}
	return ctx.Err()
}

// fail turns an error of the client or server into the contract's: closed,
// the caller's context, or unavailable for anything that means "cannot reach
// JetStream now" (disconnected, timeout, no responders, no stream leader).
func (q *Queue) fail(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if q.closed.Load() {
		return queue.ErrClosed
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var api *jetstream.APIError
	if errors.As(err, &api) && api.Code != 503 && api.Code != 408 {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !q.nc.IsConnected() {
		err = fmt.Errorf("%w (%v)", errNotConnected, err)
	}
	return fmt.Errorf("%s: %w: %v", what, queue.ErrUnavailable, err)
}

func isCASConflict(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var (
	_ queue.Queue = (*Queue)(nil)
)
