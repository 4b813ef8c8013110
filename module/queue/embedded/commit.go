package embedded

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/callhook/caddy-callhook/module/queue"
)

// op is one write request for the committer.
type op struct {
	// apply validates, then writes into the shared batch. An error it
	// returns is the op's own result and it must have written nothing.
	apply func(w *wtx) error
	// sync makes the batch that carries the op wait for an fsync.
	sync bool
	// claimed is the lease an outcome op claimed, to give back if the
	// commit fails.
	claimed *leaseRec

	fx    []effect
	err   error
	state atomic.Int32
	done  chan struct{}
}

const (
	opQueued int32 = iota
	opTaken
	opCancelled
)

// wtx is what an op's apply sees: the batch (reads see the writes of the
// ops before it), the tentative counters and sequence, and its effects on
// the in-memory scheduler, applied only once the batch is committed.
type wtx struct {
	q *Queue
	b *pebble.Batch
	c *counts
	// tc are the batch's changes of the per-target counters (targets.go).
	tc  map[string]*counts
	seq *uint64
	now time.Time
	o   *op
}

func (w *wtx) nextSeq() uint64 { *w.seq++; return *w.seq }

// get reads a key through the batch; nil when absent.
func (w *wtx) get(k []byte) ([]byte, error) { return getCopy(w.b, k) }

func (w *wtx) set(k, v []byte) { _ = w.b.Set(k, v, nil) }
func (w *wtx) del(k []byte)    { _ = w.b.Delete(k, nil) }

// effect kinds, applied to the scheduler after the commit.
type effect struct {
	kind  byte // fxDue, fxUnlease, fxPendingIndex, fxWake
	lane  string
	key   []byte
	id    string
	due   time.Time
	rec   *cachedRec // fxDue: the delivery's records, when at hand
	lease *leaseRec
}

const (
	fxDue          = 'q' // a due key was written: wake the lane
	fxUnlease      = 'u' // the outcome of a lease is committed: drop it
	fxPendingIndex = 'p' // a pending state-index key was written
	fxWake         = 'w' // something else a waiting Lease should look at
)

func (w *wtx) fx(e effect) { w.o.fx = append(w.o.fx, e) }

// write runs apply in the committer and waits for the commit.
func (q *Queue) write(ctx context.Context, sync bool, apply func(w *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{apply: apply, sync: sync, done: make(chan struct{})}
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
		<-o.done // already being committed: its result is the truth
		return o.err
	}
}

func (q *Queue) commitLoop() {
	defer close(q.stopped)
	batch := make([]*op, 0, maxBatch)
	var syncTimer *time.Timer
	var syncC <-chan time.Time
	for {
		select {
		case o := <-q.ops:
			batch = q.drain(append(batch[:0], o))
			q.run(batch)
		case <-syncC:
			syncC = nil
			if q.unsynced {
				q.syncNow()
			}
			continue
		case <-q.quit:
			// Close holds mu, so no op can be added now: finish what is
			// already waiting, then make every outcome durable.
			for {
				select {
				case o := <-q.ops:
					batch = q.drain(append(batch[:0], o))
					q.run(batch)
					continue
				default:
				}
				break
			}
			if q.unsynced {
				q.syncNow()
			}
			if syncTimer != nil {
				syncTimer.Stop()
			}
			return
		}
		if q.unsynced && syncC == nil {
			if syncTimer == nil {
				syncTimer = time.NewTimer(outcomeSyncEvery)
			} else {
				syncTimer.Reset(outcomeSyncEvery)
			}
			syncC = syncTimer.C
		}
	}
}

func (q *Queue) drain(batch []*op) []*op {
	for len(batch) < maxBatch {
		select {
		case o := <-q.ops:
			batch = append(batch, o)
		default:
			return batch
		}
	}
	return batch
}

func (q *Queue) syncNow() {
	b := q.db.NewBatch()
	b.Set(metaCounts, encodeCounts(q.committed), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		q.log.Error("cannot sync recorded outcomes to disk; they may be attempted again after a crash")
	} else {
		q.unsynced = false
		q.syncs.Add(1)
	}
	_ = b.Close()
}

func encodeCounts(c counts) []byte {
	b := make([]byte, 0, 24)
	b = binary.BigEndian.AppendUint64(b, uint64(c.pending))
	b = binary.BigEndian.AppendUint64(b, uint64(c.delivered))
	return binary.BigEndian.AppendUint64(b, uint64(c.dead))
}

// run applies a batch of ops to one pebble batch and commits it once.
func (q *Queue) run(ops []*op) {
	b := q.db.NewIndexedBatch()
	tent := q.committed
	seq := q.seq
	now := q.now()
	live, needSync := 0, false
	tc := q.tdelta
	clear(tc)
	for _, o := range ops {
		if !o.state.CompareAndSwap(opQueued, opTaken) {
			continue // its caller gave up before the committer got to it
		}
		w := &wtx{q: q, b: b, c: &tent, tc: tc, seq: &seq, now: now, o: o}
		if o.err = o.apply(w); o.err != nil {
			o.fx = nil
			if o.claimed != nil {
				q.sched.unclaim(o.claimed)
				o.claimed = nil
			}
			continue
		}
		live++
		needSync = needSync || o.sync
	}
	if live > 0 && b.Empty() {
		// Every op validated and none had anything to write (a prune with
		// nothing to remove): nothing to commit.
		q.sched.apply(ops)
	} else if live > 0 {
		b.Set(metaCounts, encodeCounts(tent), nil)
		b.Set(metaSeq, u64(seq), nil)
		totals := q.writeTargetCounts(b, tc)
		wo := pebble.NoSync
		if needSync {
			wo = pebble.Sync
		}
		if err := b.Commit(wo); err != nil {
			err = q.commitErr(err)
			for _, o := range ops {
				if o.state.Load() == opTaken && o.err == nil {
					o.err, o.fx = err, nil
					if o.claimed != nil {
						q.sched.unclaim(o.claimed)
					}
				}
			}
		} else {
			q.committed, q.seq = tent, seq
			q.publishCounts()
			q.publishTargetCounts(totals)
			q.unsynced = !needSync
			if needSync {
				q.syncs.Add(1)
			}
			q.commits.Add(1)
			q.committedOp.Add(int64(live))
			q.sched.apply(ops)
		}
	}
	_ = b.Close()
	for _, o := range ops {
		if o.state.Load() == opTaken {
			close(o.done)
		}
	}
}

func (q *Queue) commitErr(err error) error {
	if isDiskFull(err) {
		return fmt.Errorf("%w: the disk holding %s is full: %v", queue.ErrFull, q.dir, err)
	}
	return fmt.Errorf("writing to queue %s: %w", q.dir, err)
}
