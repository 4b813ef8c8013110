package embedded

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// listScanBudget bounds the index entries one List call examines, so a
	// filter that matches little cannot hold the store for long: the page
	// comes back short with a cursor.
	listScanBudget = 20000
)

// Get returns one delivery with its attempt history.
func (q *Queue) Get(ctx context.Context, id string) (*queue.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var d *queue.Delivery
	err := q.reading(func() error {
		var err error
		d, err = q.load(id, true)
		return err
	})
	return d, err
}

// load reads a delivery's records (and its history when asked) and lays
// the in-memory lease over them.
func (q *Queue) load(id string, history bool) (*queue.Delivery, error) {
	sv, err := q.getRaw(staticKey(id))
	if err != nil {
		return nil, err
	}
	mv, err := q.getRaw(mutableKey(id))
	if err != nil {
		return nil, err
	}
	if sv == nil || mv == nil {
		return nil, fmt.Errorf("delivery %s: %w", id, queue.ErrNotFound)
	}
	d := &queue.Delivery{ID: id}
	if err := decodeStatic(sv, d); err != nil {
		return nil, fmt.Errorf("delivery %s: %w", id, err)
	}
	m, err := decodeMutable(mv)
	if err != nil {
		return nil, fmt.Errorf("delivery %s: %w", id, err)
	}
	fillMutable(d, &m)
	q.sched.mu.Lock()
	if lr := q.sched.leases[id]; lr != nil && m.state == queue.Pending {
		d.State = queue.Leased
		d.LeasedUntil = lr.until
	}
	q.sched.mu.Unlock()
	if history {
		pfx := attemptPrefix(id)
		it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			a, err := decodeAttempt(it.Value())
			if err != nil {
				it.Close()
				return nil, fmt.Errorf("delivery %s attempt: %w", id, err)
			}
			d.Attempts = append(d.Attempts, a)
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (q *Queue) fillHistory(d *queue.Delivery) error {
	pfx := attemptPrefix(d.ID)
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		a, err := decodeAttempt(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		d.Attempts = append(d.Attempts, a)
	}
	return it.Close()
}

// Stats counts deliveries by state.
func (q *Queue) Stats(ctx context.Context) (queue.Stats, error) {
	if err := ctx.Err(); err != nil {
		return queue.Stats{}, err
	}
	var st queue.Stats
	err := q.reading(func() error {
		q.sched.mu.Lock()
		leased := len(q.sched.leases)
		lwm := q.sched.pendingLWM
		var oldestLease time.Time
		for _, lr := range q.sched.leases {
			if oldestLease.IsZero() || lr.st.created.Before(oldestLease) {
				oldestLease = lr.st.created
			}
		}
		q.sched.mu.Unlock()
		st = queue.Stats{
			Pending:   int(q.pendingN.Load()) - leased,
			Leased:    leased,
			Delivered: int(q.deliveredN.Load()),
			Dead:      int(q.deadN.Load()),
		}
		if st.Pending < 0 {
			st.Pending = 0
		}
		if st.Pending+st.Leased == 0 {
			return nil
		}
		// The oldest pending delivery: the first key of the pending state
		// index, sought from its low-water mark (the drained front of the
		// range is tombstones).
		pfx := indexPrefix(ixState, string(stateByte(queue.Pending)))
		lower := pfx
		if lwm != nil && bytes.HasPrefix(lwm, pfx) {
			lower = lwm
		}
		it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(pfx)})
		if err != nil {
			return err
		}
		if it.First() {
			k := it.Key()
			st.OldestPending = nanoTime(int64(getU64(k[len(pfx):])))
			q.sched.mu.Lock()
			if q.sched.pendingLWM == nil || bytes.Compare(k, q.sched.pendingLWM) > 0 {
				q.sched.pendingLWM = append([]byte(nil), k...)
			}
			q.sched.mu.Unlock()
		}
		if !oldestLease.IsZero() && (st.OldestPending.IsZero() || oldestLease.Before(st.OldestPending)) {
			st.OldestPending = oldestLease
		}
		return it.Close()
	})
	return st, err
}

// GetEvent returns a stored event.
func (q *Queue) GetEvent(ctx context.Context, id string) (*queue.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ev *queue.Event
	err := q.reading(func() error {
		v, err := q.getRaw(eventKey(id))
		if err != nil {
			return err
		}
		if v == nil {
			return fmt.Errorf("event %s: %w", id, queue.ErrNotFound)
		}
		ev, err = decodeEvent(v)
		return err
	})
	return ev, err
}

// readDead reads a delivery's records inside the committer and checks it is
// dead.
func readDead(w *wtx, id string) (static, mutable, []byte, error) {
	sv, err := w.get(staticKey(id))
	if err != nil {
		return static{}, mutable{}, nil, err
	}
	mv, err := w.get(mutableKey(id))
	if err != nil {
		return static{}, mutable{}, nil, err
	}
	if sv == nil || mv == nil {
		return static{}, mutable{}, nil, fmt.Errorf("delivery %s: %w", id, queue.ErrNotFound)
	}
	st, _, err := decodeStaticHead(sv)
	if err != nil {
		return static{}, mutable{}, nil, err
	}
	m, err := decodeMutable(mv)
	if err != nil {
		return static{}, mutable{}, nil, err
	}
	if m.state != queue.Dead {
		return st, m, sv, fmt.Errorf("delivery %s is %s: %w", id, m.state, queue.ErrNotDead)
	}
	return st, m, sv, nil
}

// revive makes a dead delivery pending again, due now, with a fresh budget.
func revive(w *wtx, id string, st static, m mutable) {
	moveState(w, id, st, m.seq, queue.Dead, queue.Pending)
	m.state = queue.Pending
	m.retried = w.now
	m.finished = time.Time{}
	m.count = 0
	m.next = w.now
	m.gated = false
	if st.orderKey != "" {
		// A retried delivery goes to the back of its call's order.
		busy, err := orderBusy(w, st.orderKey)
		if err == nil {
			m.orderSeq = w.nextSeq()
			m.gated = busy
			w.set(orderKey(st.orderKey, m.orderSeq), []byte(id))
		}
	}
	if !m.gated {
		putDue(w, laneName(st.destination, queue.WebhookKey(st.target, st.webhook)), id, m.next, m.seq, nil)
	}
	w.set(mutableKey(id), encodeMutable(&m))
	w.c.dead--
	w.c.pending++
}

// RetryDead makes dead deliveries pending again (see queue.Store).
func (q *Queue) RetryDead(ctx context.Context, ids ...string) (int, error) {
	return q.eachDead(ctx, ids, func(w *wtx, id string, st static, m mutable, _ []byte) {
		revive(w, id, st, m)
	})
}

// Redeliver replaces a dead delivery's request and policy and revives it.
func (q *Queue) Redeliver(ctx context.Context, d *queue.Delivery) error {
	if d == nil || d.ID == "" {
		return errors.New("redeliver: no delivery")
	}
	n, err := q.eachDead(ctx, []string{d.ID}, func(w *wtx, id string, st static, m mutable, sv []byte) {
		old := &queue.Delivery{ID: id}
		if decodeStatic(sv, old) != nil {
			return
		}
		old.Request, old.Policy, old.Destination, old.OrderKey = d.Request, d.Policy, d.Destination, d.OrderKey
		w.set(staticKey(id), encodeStatic(old))
		st.destination, st.orderKey = d.Destination, d.OrderKey
		revive(w, id, st, m)
	})
	if err == nil && n == 0 {
		if _, gerr := q.Get(ctx, d.ID); gerr != nil {
			return gerr
		}
		return fmt.Errorf("delivery %s: %w", d.ID, queue.ErrNotDead)
	}
	return err
}

// DeleteDead removes dead deliveries.
func (q *Queue) DeleteDead(ctx context.Context, ids ...string) (int, error) {
	return q.eachDead(ctx, ids, func(w *wtx, id string, st static, m mutable, _ []byte) {
		removeDelivery(w, id, st, m)
		w.c.dead--
	})
}

func removeDelivery(w *wtx, id string, st static, m mutable) {
	deleteIndexes(w, st, m.seq, m.state)
	w.del(staticKey(id))
	w.del(mutableKey(id))
	// Point deletes of the attempts kept, not a range deletion: every
	// iterator on the batch would fragment all of a chunk's range
	// deletions again (quadratic in the chunk).
	for n := uint32(max(int(m.hist)-keepAttempts, 0)); n < m.hist; n++ {
		w.del(attemptKey(id, n))
	}
}

// eachDead runs f for the dead deliveries named (or all dead ones when none
// is), in chunks. Named deliveries that are not dead are skipped; unknown
// ones too (a list of IDs may be stale).
func (q *Queue) eachDead(ctx context.Context, ids []string, f func(w *wtx, id string, st static, m mutable, sv []byte)) (int, error) {
	total := 0
	if len(ids) > 0 {
		for start := 0; start < len(ids); start += chunk {
			part := ids[start:min(start+chunk, len(ids))]
			n := 0
			err := q.write(ctx, true, func(w *wtx) error {
				n = 0
				for _, id := range part {
					st, m, sv, err := readDead(w, id)
					if errors.Is(err, queue.ErrNotFound) || errors.Is(err, queue.ErrNotDead) {
						continue
					}
					if err != nil {
						return err
					}
					f(w, id, st, m, sv)
					n++
				}
				return nil
			})
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
	pfx := indexPrefix(ixState, string(stateByte(queue.Dead)))
	for {
		n := 0
		err := q.write(ctx, true, func(w *wtx) error {
			n = 0
			it, err := w.b.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
			if err != nil {
				return err
			}
			var batch []string
			for ok := it.First(); ok && len(batch) < chunk; ok = it.Next() {
				batch = append(batch, string(it.Value()))
			}
			if err := it.Close(); err != nil {
				return err
			}
			for _, id := range batch {
				st, m, sv, err := readDead(w, id)
				if err != nil {
					continue
				}
				f(w, id, st, m, sv)
				n++
			}
			return nil
		})
		total += n
		if err != nil || n < chunk {
			return total, err
		}
	}
}

// SetPause pauses or resumes a webhook.
func (q *Queue) SetPause(ctx context.Context, target, webhook string, p *queue.Pause) error {
	k := pauseKey(queue.WebhookKey(target, webhook))
	var v []byte
	if p != nil {
		pp := *p
		pp.Target, pp.Webhook = target, webhook
		var err error
		if v, err = json.Marshal(pp); err != nil {
			return err
		}
	}
	return q.write(ctx, true, func(w *wtx) error {
		if v == nil {
			w.del(k)
			w.fx(effect{kind: fxWake})
		} else {
			w.set(k, v)
		}
		return nil
	})
}

// Pauses lists paused webhooks.
func (q *Queue) Pauses(ctx context.Context) ([]queue.Pause, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []queue.Pause
	err := q.reading(func() error {
		it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pPause}, UpperBound: []byte{pPause + 1}})
		if err != nil {
			return err
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			var p queue.Pause
			if err := json.Unmarshal(it.Value(), &p); err != nil {
				return fmt.Errorf("pause record: %w", err)
			}
			out = append(out, p)
		}
		return it.Error()
	})
	return out, err
}

// Prune removes delivered deliveries, stored events and dedup keys past
// retention, in chunks. Each range is walked from where the previous prune
// stopped (the front of a pruned range is tombstones until a compaction),
// so a prune costs what it removes, not what the queue holds. A compaction
// that gives the space back runs once enough was removed (see compactDue).
func (q *Queue) Prune(ctx context.Context, r queue.PruneRequest) error {
	q.pruneMu.Lock()
	defer q.pruneMu.Unlock()
	if time.Since(q.prune.eventsPass) > eventsRepass {
		// Once in a while look at every old event again: one kept for a
		// dead delivery that was deleted since has nothing left.
		q.prune.events, q.prune.eventsPass = nil, time.Now()
	}
	removed := 0
	// Delivered deliveries, and their events once nothing of them is left.
	events := map[string]bool{}
	if !r.DeliveredBefore.IsZero() {
		upper := finishedKey(r.DeliveredBefore, 0)
		for {
			n, err := q.pruneChunk(ctx, &q.prune.finished, []byte{pFinished}, upper, func(w *wtx, k, v []byte) {
				id := string(v)
				w.del(k)
				sv, err1 := w.get(staticKey(id))
				mv, err2 := w.get(mutableKey(id))
				if err1 != nil || err2 != nil || sv == nil || mv == nil {
					return
				}
				st, _, err1 := decodeStaticHead(sv)
				m, err2 := decodeMutable(mv)
				if err1 != nil || err2 != nil || m.state != queue.Delivered {
					return
				}
				removeDelivery(w, id, st, m)
				w.c.delivered--
				if !r.EventsBefore.IsZero() && st.eventID != "" {
					events[st.eventID] = true
				}
			}, func(w *wtx) {
				// Each event once per chunk, after its deliveries went.
				for ev := range events {
					pruneEventIfDone(w, ev, r.EventsBefore)
				}
				clear(events)
			})
			removed += n
			if err != nil {
				return err
			}
			if n < chunk {
				break
			}
		}
	}
	// Events that had no delivery at all, or whose deliveries went before
	// their retention ran out: one pass over the events not seen yet.
	if !r.EventsBefore.IsZero() {
		upper := appendTime([]byte{pEventAt}, r.EventsBefore)
		for {
			n, more, err := q.pruneEvents(ctx, upper)
			removed += n
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
	}
	// Dedup keys.
	if !r.DedupBefore.IsZero() {
		upper := appendTime([]byte{pDedupAt}, r.DedupBefore)
		for {
			n, err := q.pruneChunk(ctx, &q.prune.dedup, []byte{pDedupAt}, upper, func(w *wtx, k, _ []byte) {
				w.del(k)
				dk := string(k[9:])
				if v, err := w.get(dedupKey(dk)); err == nil && v != nil {
					if created, _, _, err := decodeDedup(v); err == nil && created.Before(r.DedupBefore) {
						w.del(dedupKey(dk))
					}
				}
			}, nil)
			removed += n
			if err != nil {
				return err
			}
			if n < chunk {
				break
			}
		}
	}
	q.prune.removed += removed
	if q.compactDue() {
		q.prune.removed = 0
		q.prune.compacted = time.Now()
		return q.reading(func() error {
			// Compacting the whole key space is what returns the space of
			// deleted records and drops the tombstones.
			return q.db.Compact(ctx, []byte{0}, []byte{0xff}, false)
		})
	}
	return nil
}

// pruneState is where the prune's walks stand, and what it removed since
// the last compaction. Only Prune (one at a time, under pruneMu) touches
// it; its ops run in the committer while Prune waits for them.
type pruneState struct {
	finished, dedup, events []byte // next key to look at in each range
	eventsPass              time.Time
	removed                 int
	compacted               time.Time
}

const (
	// eventsRepass is how often the events walk starts over.
	eventsRepass = time.Hour
	// compactAfter is how many removed records make a compaction worth it
	// while the queue is busy, and compactEvery how often at most.
	compactAfter = 50000
	compactEvery = 5 * time.Minute
	// compactIdle is how long after the last compaction an idle queue (none
	// pending) compacts what was removed since.
	compactIdle = 30 * time.Second
)

func (q *Queue) compactDue() bool {
	p := &q.prune
	if p.removed == 0 {
		return false
	}
	since := time.Since(p.compacted)
	if q.pendingN.Load() == 0 {
		return since >= compactIdle
	}
	return p.removed >= compactAfter && since >= compactEvery
}

// pruneEventIfDone removes an event received before cutoff once no
// delivery of it is left.
func pruneEventIfDone(w *wtx, eventID string, cutoff time.Time) {
	if eventID == "" {
		return
	}
	pfx := indexPrefix(ixEvent, eventID)
	it, err := w.b.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return
	}
	left := it.First()
	it.Close()
	if left {
		return
	}
	v, err := w.get(eventKey(eventID))
	if err != nil || v == nil {
		return
	}
	ev, err := decodeEvent(v)
	if err != nil || !ev.ReceivedAt.Before(cutoff) {
		return
	}
	w.del(eventKey(eventID))
	w.del(eventAtKey(ev.ReceivedAt, eventID))
}

// pruneChunk deletes up to chunk keys of [*from or lower, upper) with del,
// runs after (may be nil) in the same write, and moves *from past them.
func (q *Queue) pruneChunk(ctx context.Context, from *[]byte, lower, upper []byte, del func(w *wtx, k, v []byte), after func(w *wtx)) (int, error) {
	n := 0
	err := q.write(ctx, true, func(w *wtx) error {
		n = 0
		lo := lower
		if *from != nil && bytes.Compare(*from, lower) > 0 {
			lo = *from
		}
		if bytes.Compare(lo, upper) >= 0 {
			return nil
		}
		it, err := w.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upper})
		if err != nil {
			return err
		}
		type kv struct{ k, v []byte }
		var kvs []kv
		for ok := it.First(); ok && len(kvs) < chunk; ok = it.Next() {
			kvs = append(kvs, kv{append([]byte(nil), it.Key()...), append([]byte(nil), it.Value()...)})
		}
		if err := it.Close(); err != nil {
			return err
		}
		for _, e := range kvs {
			del(w, e.k, e.v)
		}
		if after != nil {
			after(w)
		}
		n = len(kvs)
		q.pruneExamined.Add(int64(n))
		if n > 0 {
			*from = append(append([]byte(nil), kvs[n-1].k...), 0)
		}
		return nil
	})
	return n, err
}

// pruneEvents removes, of the next chunk of stored events before upper not
// looked at yet, those whose deliveries are all delivered or gone. An event
// kept because a delivery of it was pending is removed later, with that
// delivery (pruneEventIfDone). It reports whether more are left to look at.
func (q *Queue) pruneEvents(ctx context.Context, upper []byte) (int, bool, error) {
	n, more := 0, false
	err := q.write(ctx, true, func(w *wtx) error {
		n, more = 0, false
		lower := []byte{pEventAt}
		if q.prune.events != nil && bytes.Compare(q.prune.events, lower) > 0 {
			lower = q.prune.events
		}
		if bytes.Compare(lower, upper) >= 0 {
			return nil
		}
		it, err := w.b.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return err
		}
		var keys [][]byte
		for ok := it.First(); ok; ok = it.Next() {
			if len(keys) == chunk {
				more = true
				break
			}
			keys = append(keys, append([]byte(nil), it.Key()...))
		}
		if err := it.Close(); err != nil {
			return err
		}
		q.pruneExamined.Add(int64(len(keys)))
		for _, k := range keys {
			id := string(k[9:])
			pfx := indexPrefix(ixEvent, id)
			di, err := w.b.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
			if err != nil {
				return err
			}
			keep := false
			for ok := di.First(); ok && !keep; ok = di.Next() {
				mv, err := w.get(mutableKey(string(di.Value())))
				if err != nil {
					di.Close()
					return err
				}
				m, err := decodeMutable(mv)
				keep = mv != nil && (err != nil || m.state != queue.Delivered)
			}
			if err := di.Close(); err != nil {
				return err
			}
			if keep {
				continue // a delivery of it is pending or dead
			}
			w.del(k)
			w.del(eventKey(id))
			n++
		}
		if len(keys) > 0 {
			q.prune.events = append(append([]byte(nil), keys[len(keys)-1]...), 0)
		}
		return nil
	})
	return n, more, err
}
