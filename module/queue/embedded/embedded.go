// Package embedded is the default durable delivery queue: a single bbolt file
// on local disk, written through a group committer so that many concurrent
// requests share one fsync.
//
// # Bucket layout
//
// All times in keys are 8-byte big-endian unix nanoseconds (clamped to
// [0, MaxInt64]) so that byte order is time order. An "id" is Delivery.ID.
//
//	deliveries       id                 -> JSON of queue.Delivery (the record)
//	due              next_attempt + id  -> Destination    (every Pending one, leased or not)
//	leased           id                 -> leased_until   (Pending with a lease; the record itself does not hold it)
//	done             finished_at + id   -> created_at     (Delivered, for Prune)
//	state_pending    created_at + id    -> nil            (List by state, newest first)
//	state_delivered  created_at + id    -> nil
//	state_dead       created_at + id    -> nil            (also RetryDead with no ids)
//	dedup            dedup key          -> created_at + JSON of []queue.Ref
//	dedup_time       created_at + key   -> nil            (Prune of dedup keys)
//	meta             "version"          -> format version
//	                 "pending", "leased", "delivered", "dead" -> int64 counters
//
// Lease walks due in key order reading keys and values only; it stops at the
// first key later than now and examines at most leaseScanLimit keys per call,
// so a paused destination with a huge backlog cannot make every Lease O(n).
// A lease moves the due key to now+lease (visibility timeout): if the worker
// dies the delivery becomes due again by itself. A lease is written to the
// due and leased indexes only: the record keeps its pre-lease NextAttempt
// and no LeasedUntil, and every read of a record takes both from the leased
// index (withLease). So leasing, which every attempt does, decodes and
// encodes no JSON in the committer.
//
// The counters in meta are updated in the same transaction as the records,
// so Stats is O(1) and always consistent with the data.
//
// Records are JSON for now. That is simple and debuggable, but every state
// change decodes and re-encodes the whole record (request body and up to
// maxAttempts attempt records with response excerpts) inside the committer;
// a binary encoding would be the first thing to change if the committer ever
// becomes CPU bound.
//
// # Group commit
//
// Every write (Enqueue, Lease, Ack, Reschedule, Kill, Release, RetryDead,
// Prune) becomes an op sent to one committer goroutine. It takes the first
// waiting op, drains whatever else is already waiting (up to maxBatch), runs
// them all in one bbolt read-write transaction and fsyncs once. Each op
// validates before it writes, so an op that fails its own checks (duplicate
// dedup key, queue full, not found) writes nothing and does not disturb the
// others. If the commit itself fails (disk full, I/O error), every op in the
// transaction gets the error and nothing of any of them is stored.
// bbolt's own db.Batch is not used because it waits a fixed delay before
// committing, which adds latency to every request when the load is light.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	// formatVersion is stored in meta; bump it when the layout changes.
	formatVersion = 1

	// maxBatch bounds how many ops share one transaction, so one commit
	// cannot grow without limit under a burst.
	maxBatch = 512
	// leaseScanLimit bounds the due keys one Lease examines.
	leaseScanLimit = 4096
	// maxAttempts is how many attempt records a delivery keeps (the newest).
	maxAttempts = 50
	// chunk bounds the records that one RetryDead-all or Prune transaction
	// touches, so a large cleanup does not hold the committer for long.
	chunk = 2000

	maxIDLen       = 1024
	maxDedupKeyLen = 1024

	defaultDedupWindow = 24 * time.Hour
	defaultLockTimeout = 5 * time.Second
)

// Options configure Open.
type Options struct {
	// Path is the bbolt file. Missing directories are created with 0700 and
	// the file with 0600, because records hold request headers and secrets.
	Path string
	// DedupWindow is how long a dedup key is remembered (default 24h).
	DedupWindow time.Duration
	// MaxPending caps pending+leased deliveries; 0 means unlimited. Over the
	// cap Enqueue stores nothing and returns an error wrapping queue.ErrFull.
	MaxPending int
	// Logger may be nil.
	Logger *zap.Logger

	// For tests.
	lockTimeout time.Duration
	maxSize     int
	now         func() time.Time
}

// Queue is a queue.Queue on a local bbolt file.
type Queue struct {
	db          *bbolt.DB
	path        string
	dedupWindow time.Duration
	maxPending  atomic.Int64 // 0: unlimited; SetMaxPending changes it
	log         *zap.Logger
	now         func() time.Time

	// mu guards closed. Writers hold it for reading while they hand their op
	// to the committer, and readers while they run a read transaction, so
	// Close (which takes it for writing) knows no new op or read can start.
	mu     sync.RWMutex
	closed bool

	ops       chan *op
	quit      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
	closeErr  error

	// Committed transactions and the ops they carried, for tests and
	// benchmarks (ops per fsync).
	commits     atomic.Int64
	committedOp atomic.Int64
}

var _ queue.Queue = (*Queue)(nil)

// SetMaxPending changes the cap on pending+leased deliveries of an open
// queue (0 or less: unlimited), for a reload that changes max_pending.
// Deliveries already over a lowered cap stay; new ones wait for room.
func (q *Queue) SetMaxPending(n int) { q.maxPending.Store(int64(max(n, 0))) }

// Open opens (creating if needed) the queue file, puts back every delivery a
// previous process left leased, and starts the committer.
func Open(opts Options) (*Queue, error) {
	if opts.Path == "" {
		return nil, errors.New("queue file path is empty; set the data directory or queue path")
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = defaultDedupWindow
	}
	if opts.MaxPending < 0 {
		return nil, fmt.Errorf("max pending deliveries is %d; it must be 0 (unlimited) or positive", opts.MaxPending)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.lockTimeout <= 0 {
		opts.lockTimeout = defaultLockTimeout
	}
	if opts.now == nil {
		opts.now = time.Now
	}

	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for queue file %s: %w", opts.Path, err)
	}
	db, err := bbolt.Open(opts.Path, 0o600, &bbolt.Options{
		Timeout: opts.lockTimeout,
		MaxSize: opts.maxSize,
		// A queue churns pages all the time; the hashmap freelist keeps
		// allocation fast when the free list gets long. It is an in-memory
		// choice only, not part of the file format.
		FreelistType: bbolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("queue file %s is locked by another process; is another Caddy running with the same data directory?", opts.Path)
		}
		return nil, fmt.Errorf("opening queue file %s: %w", opts.Path, err)
	}

	q := &Queue{
		db:          db,
		path:        opts.Path,
		dedupWindow: opts.DedupWindow,
		log:         opts.Logger,
		now:         opts.now,
		ops:         make(chan *op, maxBatch),
		quit:        make(chan struct{}),
		stopped:     make(chan struct{}),
	}

	q.maxPending.Store(int64(opts.MaxPending))
	recovered, err := q.init()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	if recovered > 0 {
		// Only one process can hold the file, so every lease found here was
		// left by a process that is gone; waiting for it to expire would
		// only delay those deliveries.
		q.log.Info("recovered leased deliveries",
			zap.String("path", opts.Path),
			zap.Int("count", recovered))
	}

	go q.commitLoop()
	return q, nil
}

// init creates the buckets, checks the format version and makes leased
// deliveries due now. It returns how many leases it reset.
func (q *Queue) init() (int, error) {
	n := 0
	err := q.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("creating bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v == nil {
			if err := meta.Put(keyVersion, u64(formatVersion)); err != nil {
				return err
			}
		} else if got := getU64(v); got != formatVersion {
			return fmt.Errorf("queue file %s has format version %d but this build reads version %d; use the matching build or move the file away (pending deliveries in it would be lost)", q.path, got, formatVersion)
		}

		t := newTxn(tx)
		var ids [][]byte
		c := t.b.leased.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			ids = append(ids, clone(k))
		}
		now := q.now()
		for _, id := range ids {
			d, err := t.load(string(id))
			if err != nil {
				return err
			}
			if d == nil {
				// An index entry without a record cannot be used; drop it.
				t.del(t.b.leased, id)
				continue
			}
			old := *d
			d.LeasedUntil = time.Time{}
			d.NextAttempt = now
			if err := t.save(&old, d); err != nil {
				return err
			}
			n++
		}
		if t.err != nil {
			return t.err
		}
		return t.flush()
	})
	if err != nil {
		return 0, fmt.Errorf("initializing queue file %s: %w", q.path, err)
	}
	return n, nil
}

// Close finishes the ops the committer already has, stops it and closes the
// file. It is idempotent; ops after Close return queue.ErrClosed.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		close(q.quit)
		<-q.stopped
		if err := q.db.Close(); err != nil {
			q.closeErr = fmt.Errorf("closing queue file %s: %w", q.path, err)
		}
	})
	return q.closeErr
}

// op is one write request for the committer.
type op struct {
	// fn applies the op inside the shared transaction. It must validate
	// before it writes: an error it returns is the op's own result and must
	// leave nothing written. Write failures are recorded in txn.err instead
	// and make the transaction roll back.
	fn    func(t *txn) error
	err   error
	state atomic.Int32
	done  chan struct{}
}

const (
	opQueued int32 = iota
	opTaken
	opCancelled
)

// write runs fn in the committer and waits for the commit.
func (q *Queue) write(ctx context.Context, fn func(t *txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{fn: fn, done: make(chan struct{})}

	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return queue.ErrClosed
	}
	select {
	case q.ops <- o:
	case <-ctx.Done():
		q.mu.RUnlock()
		return ctx.Err()
	}
	q.mu.RUnlock()

	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opCancelled) {
			return ctx.Err()
		}
		// The committer has it; its result stands.
		<-o.done
		return o.err
	}
}

// read runs fn in a read transaction unless the queue is closed.
func (q *Queue) read(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return queue.ErrClosed
	}
	return q.db.View(fn)
}

func (q *Queue) commitLoop() {
	defer close(q.stopped)
	batch := make([]*op, 0, maxBatch)
	for {
		select {
		case o := <-q.ops:
			batch = take(batch[:0], o)
			batch = q.drain(batch)
			q.run(batch)
			clear(batch)
		case <-q.quit:
			// No op can be sent any more (Close holds mu), so what is
			// buffered now is all there will ever be; finish it.
			for {
				batch = q.drain(batch[:0])
				if len(batch) == 0 {
					return
				}
				q.run(batch)
				clear(batch)
			}
		}
	}
}

// take appends o unless its caller gave up waiting.
func take(batch []*op, o *op) []*op {
	if o.state.CompareAndSwap(opQueued, opTaken) {
		batch = append(batch, o)
	}
	return batch
}

// drain appends the ops already waiting, without blocking.
func (q *Queue) drain(batch []*op) []*op {
	for len(batch) < maxBatch {
		select {
		case o := <-q.ops:
			batch = take(batch, o)
		default:
			return batch
		}
	}
	return batch
}

// errNothingWritten rolls back a transaction in which every op was read-only
// or failed its checks, so idle Lease polls cost no fsync.
var errNothingWritten = errors.New("nothing written")

// run applies a batch in one transaction and answers every op.
func (q *Queue) run(batch []*op) {
	for len(batch) > 0 {
		bad, badErr := -1, error(nil)
		err := q.db.Update(func(tx *bbolt.Tx) error {
			t := newTxn(tx)
			for i, o := range batch {
				o.err = t.apply(o.fn)
				if t.err != nil {
					bad, badErr = i, t.err
					return t.err
				}
			}
			if err := t.flush(); err != nil {
				return err
			}
			if !t.dirty {
				return errNothingWritten
			}
			return nil
		})
		if bad >= 0 {
			// One op could not be written (say a value too large): it alone
			// fails, and the others run again in a fresh transaction.
			finish(batch[bad], fmt.Errorf("storing in queue file %s failed and nothing of this request was stored: %w", q.path, badErr))
			batch = append(batch[:bad:bad], batch[bad+1:]...)
			continue
		}
		if errors.Is(err, errNothingWritten) {
			err = nil
		} else if err == nil {
			q.commits.Add(1)
			q.committedOp.Add(int64(len(batch)))
		}
		if err != nil {
			err = q.commitErr(err)
			for _, o := range batch {
				finish(o, err)
			}
			return
		}
		for _, o := range batch {
			finish(o, o.err)
		}
		return
	}
}

func finish(o *op, err error) {
	o.err = err
	close(o.done)
}

// commitErr explains a failed transaction. Running out of space wraps
// queue.ErrFull so ingest answers 503 and the sender retries later.
func (q *Queue) commitErr(err error) error {
	if isDiskFull(err) {
		return fmt.Errorf("%w: no space left to write queue file %s (%w); free disk space or raise the volume's quota, nothing of this request was stored", queue.ErrFull, q.path, err)
	}
	return fmt.Errorf("committing to queue file %s: %w; nothing of this request was stored, check the disk and Caddy's logs", q.path, err)
}

func isDiskFull(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, berrors.ErrMaxSizeReached) {
		return true
	}
	// bbolt formats some growth failures with %s, which loses the errno;
	// growing the file or its mapping fails mostly for lack of space.
	msg := err.Error()
	for _, s := range []string{
		"no space left on device",
		"disk quota exceeded",
		"file resize error",
		"mmap allocate error",
		"There is not enough space on the disk",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
