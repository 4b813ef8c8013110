// Package embedded is the default durable delivery queue: a pebble
// (github.com/cockroachdb/pebble/v2) key-value store in a directory on
// local disk, owned by one process, written through one group committer.
//
// # Why pebble, and how it is used
//
// Measured on the target machine (see docs/performance.md), bbolt did
// 2.5-4.3 k durable writes/s whatever the concurrency, rewrote its whole
// freelist on every commit once a large backlog had drained, and never gave
// disk space back. pebble appends to a write-ahead log, so one fsync covers
// every write grouped before it, and compaction returns the space of drained
// ranges. Its trap for queues is tombstones: a scan that starts at the
// beginning of a drained range walks every deleted key. Every scan here
// therefore starts from an in-memory low-water mark (the first key it found
// alive last time) rather than from the start of its range.
//
// # Keys
//
// See keys.go. A delivery is three records: a static one (names, the
// rendered request, the policy; written once), a small mutable one (state,
// due time, counters; the only thing an outcome rewrites) and one record per
// attempt (history and response excerpts, read only by Get and List). A
// pending delivery also has a due key in its lane's range; listing uses
// four index keys per delivery and a state key while it is pending or dead
// (index.go).
//
// # Lanes and fair leasing
//
// A lane is the due-index range of one (destination, webhook) pair. Lanes are
// few (bounded by the configured webhooks and their receivers) and live in
// memory with what is known of them: the low-water mark and the earliest due
// time of a key not leased. Lease walks the lanes round-robin and skips, in
// constant time, a lane that is paused, whose destination or webhook budget
// is used up, or whose next due time is in the future; only a lane with due
// work is read, and only from its low-water mark. So a receiver that holds
// every request with 100 000 deliveries waiting costs every Lease one map
// lookup, not a scan.
//
// # Leases
//
// Leases live in memory only: one process owns the directory (pebble's LOCK
// file), so after a crash every delivery that was not acknowledged is simply
// due again. Leasing writes nothing. A lease's due key stays in place until
// the outcome is committed, and the in-memory lease is dropped only after
// that commit, so no scan can hand the delivery out twice.
//
// # Ordering
//
// A delivery with an OrderKey also has a key in the order range
// (O orderKey seq). Only the first of those keys is in its lane's due range;
// the others are stored "gated", with no due key, so they cost a scan
// nothing. Finishing the first (delivered or dead) moves the next one into
// the due range in the same write. That costs two point operations per
// delivery, whatever the number of calls in flight.
//
// # Group commit and durability
//
// Every write becomes an op handed to one committer goroutine. It takes the
// first waiting op, drains whatever else is waiting (up to maxBatch), applies
// them all to one pebble batch and commits it once. A batch that holds an
// Enqueue or an operator's change is committed with an fsync, so "202" means
// on disk; a batch of attempt outcomes only is committed without waiting for
// one (it reaches the disk with the next synced batch or within
// outcomeSyncEvery): losing an outcome in a crash only means one more
// attempt, which at-least-once allows. Each op validates before it writes,
// so an op that fails its own checks writes nothing and does not disturb
// the others; if the commit fails every op in it gets the error.
package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	// formatVersion is stored in meta; bump it when the layout changes.
	// Version 2 stores are upgraded at open (rebuildIndexes).
	formatVersion = 3

	// maxBatch bounds how many ops share one commit.
	maxBatch = 1024
	// keepAttempts is how many attempt records a delivery keeps (the newest).
	keepAttempts = 50
	// chunk bounds the deliveries one RetryDead-all, DeleteDead-all or Prune
	// op touches, so a large cleanup does not hold the committer for long.
	chunk = 2000
	// outcomeSyncEvery bounds how long an unsynced outcome may wait for
	// the disk.
	outcomeSyncEvery = 200 * time.Millisecond

	maxIDLen       = 1024
	maxDedupKeyLen = 1024

	defaultDedupWindow = 24 * time.Hour
	// defaultMinFree is the free space below which Enqueue answers ErrFull.
	// pebble treats a failed write-ahead-log write as fatal (it exits the
	// process), so the queue stops taking new work well before the disk
	// is full, keeping room for outcomes, flushes and compactions.
	defaultMinFree = 16 << 20
)

// Options configure Open.
type Options struct {
	// Dir is the queue directory. Missing directories are created with
	// 0700, because records hold request headers and secrets.
	Dir string
	// DedupWindow is how long a dedup key is remembered (default 24h).
	DedupWindow time.Duration
	// MaxPending caps pending+leased deliveries; 0 means unlimited. Over the
	// cap Enqueue stores nothing and returns an error wrapping queue.ErrFull.
	MaxPending int
	// MinFreeBytes is the free disk space below which Enqueue refuses new
	// work with queue.ErrFull (default 16 MiB; negative disables the check).
	MinFreeBytes int64
	// CacheBytes is pebble's block cache (default 32 MiB).
	CacheBytes int64
	// Logger may be nil.
	Logger *zap.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Queue is a queue.Queue on a local pebble store.
type Queue struct {
	db          *pebble.DB
	cache       interface{ Unref() }
	dir         string
	dedupWindow time.Duration
	minFree     int64
	maxPending  atomic.Int64
	log         *zap.Logger
	now         func() time.Time

	// mu guards closed. Writers hold it for reading while they hand their op
	// to the committer, and readers while they read, so Close (which takes
	// it for writing) knows no new op or read can start.
	mu     sync.RWMutex
	closed bool

	ops       chan *op
	quit      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
	closeErr  error

	// Owned by the committer goroutine.
	seq       uint64
	committed counts
	unsynced  bool

	// Published by the committer after each commit.
	pendingN   atomic.Int64
	deliveredN atomic.Int64
	deadN      atomic.Int64
	// tcounts are the committed per-target counters (targets.go): written
	// by the committer, read by TargetStats, both under tmu.
	tmu     sync.Mutex
	tcounts map[string]counts
	// tdelta and ttotals are the committer's scratch maps for one batch,
	// reused so that a batch allocates no map.
	tdelta  map[string]*counts
	ttotals map[string]counts

	// sched is the in-memory half: lanes, leases, pauses seen, wake-ups.
	sched scheduler
	// prune is where the retention prune stands; pruneMu makes Prune one
	// at a time.
	pruneMu sync.Mutex
	prune   pruneState

	freeCheck atomic.Int64 // unix nanos of the last statfs
	lowDisk   atomic.Bool

	// Commits and the ops they carried, for tests and benchmarks.
	commits     atomic.Int64
	committedOp atomic.Int64
	syncs       atomic.Int64
	// pruneExamined counts the keys prunes looked at.
	pruneExamined atomic.Int64
}

var _ queue.Queue = (*Queue)(nil)

type counts struct{ pending, delivered, dead int64 }

// Open opens (creating if needed) the queue directory, loads its lanes and
// counters, and starts the committer.
func Open(opts Options) (*Queue, error) {
	if opts.Dir == "" {
		return nil, errors.New("queue directory is empty; set the data directory or the queue path")
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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = defaultMinFree
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 32 << 20
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating queue directory %s: %w", opts.Dir, err)
	}
	cache := pebble.NewCache(opts.CacheBytes)
	popts := &pebble.Options{
		Cache: cache,
		// A large memtable keeps the short-lived keys of a queue that keeps
		// pace (due keys, leases' outcomes) out of sstables, and the
		// number of tables every lookup checks low. It is allocated
		// outside the Go heap.
		MemTableSize: 32 << 20,
		Logger:       pebbleLogger{opts.Logger},
		// The plain file system: pebble's default wraps it in a disk-health
		// checker whose goroutine outlives a failed Open (a locked
		// directory), and its slow-disk events would go nowhere.
		FS: vfs.Default,
		// Defaults otherwise: pebble's own compactions return the space of
		// deleted ranges.
	}
	// Bloom filters on every level: ingest looks up keys that are mostly
	// absent (dedup keys), and without a filter each such lookup reads
	// index and data blocks of every level.
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(opts.Dir, popts)
	if err != nil {
		cache.Unref()
		if strings.Contains(err.Error(), "lock") || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("queue directory %s is locked by another process; is another Caddy running with the same data directory? (%v)", opts.Dir, err)
		}
		return nil, fmt.Errorf("opening queue directory %s: %w", opts.Dir, err)
	}
	q := &Queue{
		db:          db,
		cache:       cache,
		dir:         opts.Dir,
		dedupWindow: opts.DedupWindow,
		minFree:     opts.MinFreeBytes,
		log:         opts.Logger,
		now:         opts.Now,
		ops:         make(chan *op, maxBatch),
		quit:        make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	q.maxPending.Store(int64(opts.MaxPending))
	q.sched.init()
	if err := q.loadState(); err != nil {
		_ = db.Close()
		cache.Unref()
		return nil, err
	}
	if q.committed.pending > 0 {
		// One process owns the directory, so anything pending was left by a
		// process that is gone, including what it had leased: due now.
		q.log.Info("queue opened; pending deliveries, including any a previous process was attempting, are due again",
			zap.String("dir", q.dir), zap.Int64("pending", q.committed.pending), zap.Int64("dead", q.committed.dead))
	}
	go q.commitLoop()
	return q, nil
}

// SetMaxPending changes the cap on pending deliveries (0: unlimited); a
// reload applies it to the open queue.
func (q *Queue) SetMaxPending(n int) { q.maxPending.Store(int64(max(n, 0))) }

// Dir is the queue's directory.
func (q *Queue) Dir() string { return q.dir }

// loadState checks the format version and reads counters, the sequence and the
// lanes.
func (q *Queue) loadState() error {
	v, err := q.getRaw(metaVersion)
	switch {
	case err != nil:
		return fmt.Errorf("reading queue %s: %w", q.dir, err)
	case v == nil:
		// A new store: its format version and "the per-target counters are
		// kept" in one write. A second write at open would make pebble
		// preallocate a whole WAL (the memtable's size) before any event
		// came, and a small disk would read as full.
		b := q.db.NewBatch()
		_ = b.Set(metaVersion, u64(formatVersion), nil)
		_ = b.Set(metaTargetsReady, []byte{1}, nil)
		err := b.Commit(pebble.Sync)
		b.Close()
		if err != nil {
			return fmt.Errorf("initializing queue %s: %w", q.dir, err)
		}
	case len(v) == 8 && getU64(v) == 2:
		if err := q.rebuildIndexes(); err != nil {
			return fmt.Errorf("upgrading queue %s to format version %d: %w", q.dir, formatVersion, err)
		}
	case len(v) != 8 || getU64(v) != formatVersion:
		return fmt.Errorf("queue directory %s has format version %d but this build reads version %d; use the matching build or move the directory away (pending deliveries in it would be lost)", q.dir, getU64(v), formatVersion)
	}
	if v, err := q.getRaw(metaSeq); err != nil {
		return err
	} else if len(v) == 8 {
		q.seq = getU64(v)
	}
	if v, err := q.getRaw(metaCounts); err != nil {
		return err
	} else if len(v) == 24 {
		q.committed = counts{int64(getU64(v[:8])), int64(getU64(v[8:16])), int64(getU64(v[16:]))}
	}
	q.publishCounts()
	if err := q.loadTargetCounts(); err != nil {
		return fmt.Errorf("reading the per-target counts of queue %s: %w", q.dir, err)
	}

	// Lanes: one seek per lane, skipping each lane's keys.
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pDue}, UpperBound: []byte{pDue + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < 3 {
			ok = it.Next()
			continue
		}
		n := int(k[1])<<8 | int(k[2])
		if len(k) < 3+n {
			ok = it.Next()
			continue
		}
		name := string(k[3 : 3+n])
		l := q.sched.lane(name)
		l.seed = append([]byte(nil), k...)
		ok = it.SeekGE(l.end)
	}
	q.sched.opened = true
	return it.Error()
}

func (q *Queue) getRaw(k []byte) ([]byte, error) { return getCopy(q.db, k) }

// getCopy reads a key from the store or a batch: a copy of its value, nil
// when absent.
func getCopy(r pebble.Reader, k []byte) ([]byte, error) {
	v, c, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	c.Close()
	return out, nil
}

func getU64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (q *Queue) publishCounts() {
	q.pendingN.Store(q.committed.pending)
	q.deliveredN.Store(q.committed.delivered)
	q.deadN.Store(q.committed.dead)
}

// Close finishes the ops the committer already has, stops it and closes the
// store. It is idempotent; operations after Close return queue.ErrClosed.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		close(q.quit)
		<-q.stopped
		q.sched.close()
		if err := q.db.Close(); err != nil {
			q.closeErr = fmt.Errorf("closing queue %s: %w", q.dir, err)
		}
		q.cache.Unref()
	})
	return q.closeErr
}

// reading runs fn unless the queue is closed, keeping Close from closing
// the store under it.
func (q *Queue) reading(fn func() error) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return queue.ErrClosed
	}
	return fn()
}

// checkDisk refuses new work when the disk is nearly full (see
// defaultMinFree).
func (q *Queue) checkDisk() error {
	if q.minFree < 0 {
		return nil
	}
	// While the disk is fine statfs runs at most every 100ms; once it is
	// low, on every call, so new work is taken as soon as there is room.
	now := time.Now().UnixNano()
	if last := q.freeCheck.Load(); (q.lowDisk.Load() || now-last > int64(100*time.Millisecond)) && q.freeCheck.CompareAndSwap(last, now) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(q.dir, &st); err == nil {
			q.lowDisk.Store(int64(st.Bavail)*int64(st.Bsize) < q.minFree)
		}
	}
	if q.lowDisk.Load() {
		return fmt.Errorf("%w: less than %d MiB free on the disk of %s; free some space", queue.ErrFull, q.minFree>>20, q.dir)
	}
	return nil
}

// isDiskFull reports whether err means the disk is out of space.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, syscall.EFBIG)
}

// pebbleLogger routes pebble's messages to zap: its informational chatter
// at debug level, its errors at error level.
type pebbleLogger struct{ l *zap.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if ce := p.l.Check(zap.DebugLevel, "pebble"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, args...)))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("queue store error", zap.String("message", fmt.Sprintf(format, args...)))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	// Also on stderr: the process exits next, whatever the logger does.
	fmt.Fprintln(os.Stderr, "callhook queue store failed: "+fmt.Sprintf(format, args...))
	p.l.Fatal("queue store failed; the process must stop (pending deliveries are safe on disk up to the last answered event)",
		zap.String("message", fmt.Sprintf(format, args...)))
}
