// Package natswq is the queue backend that several Caddy nodes share,
// built on JetStream's own primitives so that nothing is mirrored: each
// delivery is read by one node, and adding nodes adds delivery capacity.
//
// # Streams
//
// Open creates (or checks) P partition buckets and one meta bucket, each a
// key-value stream with the same settings (replicas, file storage, one
// message per subject, per-message TTLs, atomic batches):
//
//	KV_<bucket>_P<i>  partition i: d.<delivery> records, h.<delivery>
//	                  attempt histories, e.<event> stored events
//	KV_<bucket>_META  x.<sha256> dedup keys (create-only, TTL = the dedup
//	                  window), p.<target>.<webhook> pauses, o.<i> partition
//	                  locks, n.<node> node heartbeats, s.<i> partition counts
//
// A call's event and deliveries go to the partition hash(call id) mod P,
// so one call's order keys live in one partition, whichever node takes
// the event in. Partitions are separate Raft groups: their leaders spread
// over the servers, and so do the writes.
//
// # Ownership
//
// Each partition is owned by one live node at a time: a lock o.<i> in the
// meta bucket, written with compare-and-set, renewed every second and
// taken over by another node once it has not been renewed for lockTTL.
// Nodes announce themselves (n.<node>); each takes its fair share,
// ceil(P / live nodes), and gives back what it holds over it. Only the
// owner of a partition reads it (a key-value watch, i.e. an ordered
// consumer) and leases from it: the in-memory lanes, order queues and
// counters exist on that node alone, for its partitions alone.
//
// # Costs on the success path
//
// Accept is one atomic batch into the partition (event + deliveries; plus,
// with a dedup key, one create-only write to the meta bucket before it).
// Lease writes nothing: the owner holds leases in memory; the token carries
// the record's revision, so an outcome is fenced by the stream itself.
// Ack is one atomic batch (the record, now delivered, and its history).
//
// # Order across nodes
//
// The owner applies enqueues only in the order its watch delivers them
// (stream sequence), never its own ahead of others', so an order key's
// deliveries are leased one at a time in the order the partition stored
// them, whichever node stored each.
package natswq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
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
	defaultPartitions  = 8
	maxPartitions      = 64
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
	batchSlots = 24
	maxIDLen   = 1024
)

// Options configure Open.
type Options struct {
	// URLs are the servers to connect to (nats://host:port, tls://...).
	URLs []string
	// Bucket names the streams (default CALLHOOK): KV_<Bucket>_P<i> and
	// KV_<Bucket>_META.
	Bucket string
	// Partitions is how many partition streams there are (default 8). It
	// is fixed when the streams are created; every node must agree.
	Partitions int
	// Replicas is every stream's replica count (default 1).
	Replicas int
	// DedupWindow is how long a dedup key is remembered (default 24h).
	DedupWindow time.Duration
	// MaxPending caps pending plus leased deliveries across the cluster (as
	// this node sees them: its own partitions exactly, the others' as their
	// owners last published, at most a second old); 0 means no cap.
	MaxPending int
	// Node names this node in partition locks. A node restarted under the
	// same name takes back its partitions at once instead of waiting for
	// their locks to run out. Default: host name, process id and a random
	// suffix (a new name at every start).
	Node string
	// ConnectOptions are passed to nats.Connect (credentials, TLS).
	ConnectOptions []natsgo.Option
	// Name is the connection's name as the server shows it.
	Name string
	// ConnectTimeout bounds Open's wait for a first connection (default 10s).
	ConnectTimeout time.Duration
	// Logger may be nil.
	Logger *zap.Logger
}

// Queue is a queue.Queue on partitioned NATS JetStream streams.
type Queue struct {
	nc       *natsgo.Conn
	js       jetstream.JetStream
	meta     jetstream.KeyValue
	metaPfx  string // "$KV.<bucket>_META."
	bucket   string
	replicas int
	node     string
	logger   *zap.Logger

	parts  []*part
	pz     *pauseSet
	wake   *notifier
	rr     atomic.Uint64
	counts *countCache

	dedupWindow time.Duration
	maxPending  atomic.Int64

	inflightMu   sync.Mutex
	inflight     map[uint64]context.CancelCauseFunc
	inflightNext uint64

	// testBeforeApply, when set (tests only), runs before the watch of a
	// partition applies an entry: a test holds a node's reader back with it.
	testBeforeApply func(part int)

	slots  chan struct{} // atomic batch slots
	closed atomic.Bool
	done   chan struct{} // closed by Close
	stop   context.CancelFunc
	bg     sync.WaitGroup
	once   sync.Once
	ownMu  sync.Mutex // one ownership round at a time
}

// Open connects, creates or checks the streams, takes this node's share of
// the partitions (all of them when it is alone) and loads them. It returns
// once the partitions it owns are loaded.
func Open(o Options) (*Queue, error) {
	return open(context.Background(), o, nil)
}

// open is Open, given up when ctx ends; hook is the test's reader hook.
func open(ctx context.Context, o Options, hook func(int)) (*Queue, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("nats queue: no server URL")
	}
	if o.Bucket == "" {
		o.Bucket = defaultBucket
	}
	if err := validBucket(o.Bucket); err != nil {
		return nil, err
	}
	if o.Partitions == 0 {
		o.Partitions = defaultPartitions
	}
	if o.Partitions < 1 || o.Partitions > maxPartitions {
		return nil, fmt.Errorf("nats queue: partitions %d: must be 1 to %d", o.Partitions, maxPartitions)
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
	if o.Node == "" {
		host, _ := os.Hostname()
		o.Node = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newNonce()[:6])
	}
	logger := o.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	q := &Queue{
		bucket:          o.Bucket,
		replicas:        o.Replicas,
		metaPfx:         "$KV." + o.Bucket + "_META.",
		node:            o.Node,
		logger:          logger,
		dedupWindow:     o.DedupWindow,
		slots:           make(chan struct{}, batchSlots),
		inflight:        map[uint64]context.CancelCauseFunc{},
		done:            make(chan struct{}),
		pz:              newPauseSet(),
		wake:            newNotifier(),
		counts:          newCountCache(o.Partitions),
		testBeforeApply: hook,
	}
	q.maxPending.Store(int64(o.MaxPending))
	for i := range o.Partitions {
		b := partBucket(o.Bucket, i)
		q.parts = append(q.parts, &part{i: i, bucket: b, prefix: "$KV." + b + "."})
	}

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
	if err := q.setup(ctx, o.Partitions, o.Replicas); err != nil {
		nc.Close()
		return nil, err
	}
	bctx, stop := context.WithCancel(context.Background())
	q.stop = stop
	if err := q.watchPauses(ctx, bctx); err != nil {
		stop()
		q.bg.Wait()
		nc.Close()
		return nil, fmt.Errorf("nats queue: loading pauses: %w", err)
	}
	if err := q.ownRound(ctx, bctx, true); err != nil {
		q.shutdown(false)
		return nil, fmt.Errorf("nats queue: taking partitions: %w", err)
	}
	q.bg.Add(1)
	go q.ownLoop(bctx)
	logger.Info("nats queue open", zap.String("bucket", o.Bucket), zap.String("server", nc.ConnectedUrlRedacted()),
		zap.Int("replicas", o.Replicas), zap.Int("partitions", o.Partitions), zap.String("node", q.node),
		zap.Ints("owned", q.ownedList()))
	return q, nil
}

// SetMaxPending changes the cap on pending plus leased deliveries.
func (q *Queue) SetMaxPending(n int) { q.maxPending.Store(int64(n)) }

// Close gives back this node's partitions (another node takes them at
// once) and closes the connection. Leases held end with it: their
// deliveries are due again for the next owner.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return queue.ErrClosed
	}
	q.shutdown(true)
	return nil
}

// SimulateCrash stops as a killed process would: no lock is given back
// (other nodes wait for them to run out; this node, reopened under the same
// name, takes them back at once).
func (q *Queue) SimulateCrash() error {
	if q.closed.Swap(true) {
		return queue.ErrClosed
	}
	q.shutdown(false)
	return nil
}

func (q *Queue) shutdown(release bool) {
	q.once.Do(func() { close(q.done) })
	q.stop()
	q.bg.Wait()
	revs := map[int]uint64{}
	for _, p := range q.parts {
		p.mu.Lock()
		if p.lockRev != 0 {
			revs[p.i] = p.lockRev
		}
		p.mu.Unlock()
		p.drop()
	}
	if release && q.nc.IsConnected() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		q.releaseAll(ctx, revs)
		cancel()
	}
	q.nc.Close()
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
	if errors.Is(err, natsgo.ErrMaxPayload) {
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

// partOf is the partition of a call: every event and delivery of one call
// (and so every order key, which names its call) lives in one partition.
func (q *Queue) partOf(callID string) *part {
	h := fnv.New32a()
	_, _ = h.Write([]byte(callID))
	return q.parts[int(h.Sum32()%uint32(len(q.parts)))]
}

// notifier wakes every waiting Lease when any owned partition changes.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) signal() {
	n.mu.Lock()
	close(n.ch)
	n.ch = make(chan struct{})
	n.mu.Unlock()
}

var _ queue.Queue = (*Queue)(nil)
