package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

// prepared is a delivery ready to store, encoded by the caller's goroutine
// so the single committer does not spend its time on JSON.
type prepared struct {
	d   *queue.Delivery
	enc []byte
}

// Enqueue stores ds and the dedup key in one transaction and returns once it
// is fsync'd. The deliveries are copied; ds is not modified. An empty
// dedupKey disables deduplication for this call.
func (q *Queue) Enqueue(ctx context.Context, dedupKey string, ds []*queue.Delivery) ([]queue.Ref, bool, error) {
	if len(dedupKey) > maxDedupKeyLen {
		return nil, false, fmt.Errorf("dedup key is %d bytes; at most %d are allowed", len(dedupKey), maxDedupKeyLen)
	}
	now := q.now()
	window := queue.DedupWindow(ctx, q.dedupWindow)
	items := make([]prepared, len(ds))
	refs := make([]queue.Ref, len(ds))
	seen := make(map[string]bool, len(ds))
	live := 0
	for i, d := range ds {
		if d == nil {
			return nil, false, fmt.Errorf("delivery %d of %d is nil", i+1, len(ds))
		}
		if d.ID == "" {
			return nil, false, fmt.Errorf("delivery %d of %d (webhook %q) has no id", i+1, len(ds), d.Webhook)
		}
		if len(d.ID) > maxIDLen {
			return nil, false, fmt.Errorf("delivery id is %d bytes; at most %d are allowed", len(d.ID), maxIDLen)
		}
		if seen[d.ID] {
			return nil, false, fmt.Errorf("delivery id %q appears twice in one event; ids must be unique", d.ID)
		}
		seen[d.ID] = true

		c := *d
		c.LeasedUntil = time.Time{}
		if c.CreatedAt.IsZero() {
			c.CreatedAt = now
		}
		if c.State == queue.Dead || c.State == queue.Delivered {
			// Dead on arrival (the request could not be rendered), or a
			// sync call already made: kept for inspection, never leased.
			c.FinishedAt = now
		} else {
			c.State = queue.Pending
			c.FinishedAt = time.Time{}
			if c.NextAttempt.IsZero() {
				c.NextAttempt = c.CreatedAt
			}
			live++
		}
		if len(c.Attempts) > maxAttempts {
			c.Attempts = c.Attempts[len(c.Attempts)-maxAttempts:]
		}
		enc, err := json.Marshal(&c)
		if err != nil {
			return nil, false, fmt.Errorf("encoding delivery %q: %w", c.ID, err)
		}
		items[i] = prepared{d: &c, enc: enc}
		refs[i] = queue.Ref{ID: c.ID, Webhook: c.Webhook}
	}
	var dedupVal []byte
	if dedupKey != "" {
		enc, err := json.Marshal(refs)
		if err != nil {
			return nil, false, fmt.Errorf("encoding refs: %w", err)
		}
		dedupVal = append(u64(nanos(now)), enc...)
	}

	var (
		origRefs []queue.Ref
		dup      bool
	)
	err := q.write(ctx, func(t *txn) error {
		origRefs, dup = nil, false
		var oldDedup []byte
		if dedupKey != "" {
			if v := t.b.dedup.Get([]byte(dedupKey)); len(v) >= 8 {
				created := keyTime(v)
				if now.Sub(created) < window {
					var rs []queue.Ref
					if err := json.Unmarshal(v[8:], &rs); err != nil {
						return fmt.Errorf("stored refs of dedup key %q are corrupt: %w", dedupKey, err)
					}
					origRefs, dup = rs, true
					return nil
				}
				// Outside the window: as good as absent (Prune has not run
				// yet); replaced below.
				oldDedup = timeKey(created, dedupKey)
			}
		}
		for _, it := range items {
			if t.b.deliveries.Get([]byte(it.d.ID)) != nil {
				return fmt.Errorf("delivery id %q already exists in the queue; the event was not stored, ids must be unique", it.d.ID)
			}
		}
		if q.maxPending > 0 && live > 0 {
			c := t.counts()
			if n := c.pending + c.leased; n+int64(live) > int64(q.maxPending) {
				return fmt.Errorf("%w: %d deliveries are waiting and the limit is %d; receivers are down or too slow, check them or raise the limit", queue.ErrFull, n, q.maxPending)
			}
		}

		for _, it := range items {
			t.saveEncoded(nil, it.d, it.enc)
		}
		if dedupKey != "" {
			if oldDedup != nil {
				t.del(t.b.dedupTime, oldDedup)
			}
			t.put(t.b.dedup, []byte(dedupKey), dedupVal)
			t.put(t.b.dedupTime, timeKey(now, dedupKey), nil)
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if dup {
		return origRefs, true, nil
	}
	return refs, false, nil
}

// Lease hands out up to max due deliveries. It calls skip (if not nil) once
// per candidate, in due order, right before taking it: false means the
// delivery is leased, so skip may count what it lets through. skip runs on
// the committer goroutine inside the write transaction: it must be fast and
// must not call the queue. In the rare case that another op in the same
// transaction fails to write and the transaction is run again, skip is
// called again for the same candidates.
func (q *Queue) Lease(ctx context.Context, now time.Time, max int, lease time.Duration, skip func(destination string) bool) ([]*queue.Delivery, error) {
	if max <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		return nil, fmt.Errorf("lease duration is %s; it must be positive", lease)
	}
	until := now.Add(lease)
	nowKey := nanos(now)
	untilVal := u64(nanos(until))
	var raws [][]byte
	err := q.write(ctx, func(t *txn) error {
		raws = nil
		// Collect first: bbolt cursors are not valid across writes.
		var keys, dests [][]byte
		c := t.b.due.Cursor()
		examined := 0
		for k, v := c.First(); k != nil && len(keys) < max && examined < leaseScanLimit; k, v = c.Next() {
			examined++
			if getU64(k[:8]) > nowKey {
				break
			}
			if skip != nil && skip(string(v)) {
				continue
			}
			keys = append(keys, clone(k))
			dests = append(dests, clone(v))
		}
		// Only the indexes change (see withLease): the record is copied out
		// as it is and decoded by the caller, outside the committer.
		for i, k := range keys {
			id := k[8:]
			v := t.b.deliveries.Get(id)
			if v == nil {
				// Cannot happen unless the file was damaged; dropping the
				// entry keeps it from blocking the head of the queue.
				q.log.Warn("queue due index entry without a delivery; removing it",
					zap.String("path", q.path), zap.String("id", string(id)))
				t.del(t.b.due, k)
				continue
			}
			if t.b.leased.Get(id) == nil { // an expired lease stays counted as leased
				cs := t.counts()
				cs.pending--
				cs.leased++
				t.cDirty = true
			}
			t.del(t.b.due, k)
			t.put(t.b.due, timeKey(until, string(id)), dests[i])
			t.put(t.b.leased, id, untilVal)
			raws = append(raws, clone(v))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*queue.Delivery, 0, len(raws))
	for _, raw := range raws {
		d := new(queue.Delivery)
		if err := json.Unmarshal(raw, d); err != nil {
			return nil, fmt.Errorf("queue record is corrupt: %w", err)
		}
		if d.State != queue.Pending {
			// Cannot happen unless the file was damaged: the due index only
			// holds pending deliveries. Not sending it is all that can be
			// done here; its lease keeps it from being picked again at once.
			q.log.Warn("queue due index entry for a delivery that is not pending; skipping it",
				zap.String("path", q.path), zap.String("id", d.ID), zap.String("state", string(d.State)))
			continue
		}
		d.LeasedUntil, d.NextAttempt = until, until
		out = append(out, d)
	}
	return out, nil
}

// transition loads a pending delivery, lets change modify it and saves it.
// Unknown ids are queue.ErrNotFound; deliveries no longer pending are left
// as they are and nil is returned, because delivery is at least once and a
// late worker must not undo a newer outcome.
func (q *Queue) transition(ctx context.Context, id string, change func(d *queue.Delivery)) error {
	return q.write(ctx, func(t *txn) error {
		d, err := t.load(id)
		if err != nil {
			return err
		}
		if d == nil {
			return fmt.Errorf("delivery %q: %w", id, queue.ErrNotFound)
		}
		if d.State != queue.Pending {
			return nil
		}
		old := *d
		change(d)
		return t.save(&old, d)
	})
}

// addAttempt appends a and keeps only the newest maxAttempts records, so a
// delivery retried for days does not grow without bound. len(Attempts) is
// therefore the attempt count only up to maxAttempts.
func addAttempt(d *queue.Delivery, a queue.Attempt) {
	if a.Start.IsZero() && a.Duration == 0 && a.Status == 0 && a.Error == "" && a.Response == nil {
		return
	}
	d.Attempts = append(d.Attempts, a)
	if n := len(d.Attempts); n > maxAttempts {
		d.Attempts = append(d.Attempts[:0:0], d.Attempts[n-maxAttempts:]...)
	}
}

func attemptError(a queue.Attempt) string {
	switch {
	case a.Error != "":
		return a.Error
	case a.Status != 0:
		return fmt.Sprintf("receiver answered HTTP %d", a.Status)
	}
	return ""
}

// Ack marks the delivery delivered and records a.
func (q *Queue) Ack(ctx context.Context, id string, a queue.Attempt) error {
	now := q.now()
	return q.transition(ctx, id, func(d *queue.Delivery) {
		addAttempt(d, a)
		d.State = queue.Delivered
		d.LeasedUntil = time.Time{}
		d.FinishedAt = now
	})
}

// Reschedule records a failed attempt and makes the delivery due at next.
func (q *Queue) Reschedule(ctx context.Context, id string, a queue.Attempt, next time.Time) error {
	if next.IsZero() {
		next = q.now()
	}
	return q.transition(ctx, id, func(d *queue.Delivery) {
		addAttempt(d, a)
		if e := attemptError(a); e != "" {
			d.LastError = e
		}
		d.LeasedUntil = time.Time{}
		d.NextAttempt = next
	})
}

// Kill records a final attempt (if a is not zero) and marks the delivery dead.
func (q *Queue) Kill(ctx context.Context, id string, a queue.Attempt, reason string) error {
	now := q.now()
	return q.transition(ctx, id, func(d *queue.Delivery) {
		addAttempt(d, a)
		if reason == "" {
			reason = attemptError(a)
		}
		d.LastError = reason
		d.State = queue.Dead
		d.LeasedUntil = time.Time{}
		d.FinishedAt = now
	})
}

// Release ends a lease without an attempt; the delivery is due at next.
func (q *Queue) Release(ctx context.Context, id string, next time.Time) error {
	if next.IsZero() {
		next = q.now()
	}
	return q.transition(ctx, id, func(d *queue.Delivery) {
		d.LeasedUntil = time.Time{}
		d.NextAttempt = next
	})
}

// RetryDead makes dead deliveries pending and due now. Attempts and
// LastError are kept as history; CreatedAt is set to the retry time, so
// max_age starts over and the sender counts the attempts of the new budget
// as those with Attempt.Start at or after CreatedAt.
//
// With ids, all of them must exist and be dead, or nothing changes. Without
// ids every dead delivery is retried, in transactions of at most chunk
// deliveries.
func (q *Queue) RetryDead(ctx context.Context, ids ...string) (int, error) {
	retry := func(t *txn, d *queue.Delivery, now time.Time) error {
		old := *d
		d.State = queue.Pending
		d.CreatedAt = now
		d.NextAttempt = now
		d.LeasedUntil = time.Time{}
		d.FinishedAt = time.Time{}
		return t.save(&old, d)
	}

	if len(ids) > 0 {
		uniq := make([]string, 0, len(ids))
		seen := make(map[string]bool, len(ids))
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				uniq = append(uniq, id)
			}
		}
		n := 0
		err := q.write(ctx, func(t *txn) error {
			n = 0
			ds := make([]*queue.Delivery, 0, len(uniq))
			for _, id := range uniq {
				d, err := t.load(id)
				if err != nil {
					return err
				}
				if d == nil {
					return fmt.Errorf("retrying delivery %q: %w", id, queue.ErrNotFound)
				}
				if d.State != queue.Dead {
					return fmt.Errorf("delivery %q is %s, not dead; only dead deliveries can be retried", id, d.State)
				}
				ds = append(ds, d)
			}
			now := q.now()
			for _, d := range ds {
				if err := retry(t, d, now); err != nil {
					return err
				}
			}
			n = len(ds)
			return nil
		})
		if err != nil {
			return 0, err
		}
		return n, nil
	}

	total := 0
	for {
		n, seen := 0, 0
		err := q.write(ctx, func(t *txn) error {
			n, seen = 0, 0
			var keys [][]byte
			c := t.b.dead.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < chunk; k, _ = c.Next() {
				keys = append(keys, clone(k))
			}
			seen = len(keys)
			now := q.now()
			for _, k := range keys {
				id := string(k[8:])
				d, err := t.load(id)
				if err != nil {
					return err
				}
				if d == nil || d.State != queue.Dead {
					// Cannot happen unless the file was damaged; drop the
					// entry so it is not retried forever.
					q.log.Warn("queue dead index entry without a dead delivery; removing it",
						zap.String("path", q.path), zap.String("id", id))
					t.del(t.b.dead, k)
					continue
				}
				if err := retry(t, d, now); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if seen < chunk {
			return total, nil
		}
	}
}

// Prune deletes delivered deliveries finished before deliveredBefore and
// dedup keys created before dedupBefore, in transactions of at most chunk
// deletions so the committer is not held for long.
func (q *Queue) Prune(ctx context.Context, deliveredBefore, dedupBefore time.Time) error {
	delivLimit, dedupLimit := nanos(deliveredBefore), nanos(dedupBefore)
	for {
		more := false
		err := q.write(ctx, func(t *txn) error {
			more = false
			n := 0
			var done [][]byte
			c := t.b.done.Cursor()
			for k, _ := c.First(); k != nil && getU64(k[:8]) < delivLimit; k, _ = c.Next() {
				if n == chunk {
					more = true
					break
				}
				done = append(done, clone(k))
				n++
			}
			for _, k := range done {
				id := string(k[8:])
				d, err := t.load(id)
				if err != nil {
					return err
				}
				if d == nil || d.State != queue.Delivered {
					t.del(t.b.done, k)
					continue
				}
				t.remove(d)
			}

			var dedup [][]byte
			c = t.b.dedupTime.Cursor()
			for k, _ := c.First(); k != nil && getU64(k[:8]) < dedupLimit; k, _ = c.Next() {
				if n == chunk {
					more = true
					break
				}
				dedup = append(dedup, clone(k))
				n++
			}
			for _, k := range dedup {
				key := k[8:]
				// Only delete the key if this index entry is its current
				// one; an expired key re-used since has a newer entry.
				if v := t.b.dedup.Get(key); len(v) >= 8 && getU64(v[:8]) == getU64(k[:8]) {
					t.del(t.b.dedup, key)
				}
				t.del(t.b.dedupTime, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}
