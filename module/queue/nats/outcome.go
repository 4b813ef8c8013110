package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Ack records a successful attempt: the delivery is delivered.
func (q *Queue) Ack(ctx context.Context, t queue.Token, a queue.Attempt) error {
	return q.outcome(ctx, t, "recording a delivered attempt", &a, func(d *queue.Delivery, now time.Time) bool {
		d.State = queue.Delivered
		d.FinishedAt = now
		d.LastError = ""
		d.NextAttempt = time.Time{}
		d.LeasedUntil = time.Time{}
		d.AttemptCount++
		return false
	})
}

// Retry records a failed attempt and makes the delivery due at next.
func (q *Queue) Retry(ctx context.Context, t queue.Token, a queue.Attempt, next time.Time, reason string) error {
	return q.outcome(ctx, t, "recording a failed attempt", &a, func(d *queue.Delivery, _ time.Time) bool {
		d.State = queue.Pending
		d.NextAttempt = next
		d.LeasedUntil = time.Time{}
		d.LastError = reason
		d.AttemptCount++
		return false
	})
}

// Dead records a final attempt (none when a is zero) and marks the
// delivery dead.
func (q *Queue) Dead(ctx context.Context, t queue.Token, a queue.Attempt, reason string) error {
	var ap *queue.Attempt
	if !zeroAttempt(a) {
		ap = &a
	}
	return q.outcome(ctx, t, "recording a dead delivery", ap, func(d *queue.Delivery, now time.Time) bool {
		d.State = queue.Dead
		d.FinishedAt = now
		d.NextAttempt = time.Time{}
		d.LeasedUntil = time.Time{}
		d.LastError = reason
		if ap != nil {
			d.AttemptCount++
		}
		return false
	})
}

// Release ends a lease without an attempt.
func (q *Queue) Release(ctx context.Context, t queue.Token, next time.Time) error {
	return q.outcome(ctx, t, "releasing a lease", nil, func(d *queue.Delivery, _ time.Time) bool {
		d.State = queue.Pending
		d.NextAttempt = next
		d.LeasedUntil = time.Time{}
		return false
	})
}

// Extend moves the lease's end.
func (q *Queue) Extend(ctx context.Context, t queue.Token, until time.Time) error {
	return q.outcome(ctx, t, "extending a lease", nil, func(d *queue.Delivery, _ time.Time) bool {
		d.LeasedUntil = until
		return true
	})
}

func zeroAttempt(a queue.Attempt) bool {
	return a.Start.IsZero() && a.Duration == 0 && a.Status == 0 && a.Error == "" && len(a.Response) == 0
}

// outcome changes a leased delivery with change, if the token still holds
// its lease: the record is written expecting the revision it was read at,
// and together with its history in one atomic batch when there is an
// attempt. A write refused because the record moved is read again and
// retried while the lease is still the token's.
func (q *Queue) outcome(ctx context.Context, t queue.Token, what string, a *queue.Attempt,
	change func(d *queue.Delivery, now time.Time) (keepLease bool)) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	nonce, id, ok := parseToken(t)
	if !ok {
		return fmt.Errorf("token %q: %w", t, queue.ErrStaleLease)
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	var hist []queue.Attempt
	histRead := false
	key := deliveryKey(id)
	for try := 0; try < 4; try++ {
		var d queue.Delivery
		var rev, pos uint64
		var cur string
		q.m.mu.Lock()
		r := q.m.recs[id]
		if r != nil {
			d, rev, pos, cur = r.d, r.rev, r.pos, r.nonce
		}
		q.m.mu.Unlock()
		if r == nil || try > 0 {
			e, err := q.kv.Get(octx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("delivery %s: %w", id, queue.ErrNotFound)
			}
			if err != nil {
				return q.fail(ctx, what, err)
			}
			rc, err := decodeRecord(e.Value())
			if err != nil {
				return fmt.Errorf("delivery %s: unreadable record: %v", id, err)
			}
			d, rev, cur, pos = rc.Delivery, e.Revision(), rc.Nonce, rc.Pos
			if pos == 0 {
				pos = rev
			}
			q.m.mu.Lock()
			q.m.apply(key, rev, e.Value(), false)
			q.m.mu.Unlock()
		}
		if d.State != queue.Leased || cur != nonce {
			return fmt.Errorf("delivery %s: %w", id, queue.ErrStaleLease)
		}
		if a != nil && !histRead {
			// A delivery without attempts in this life and never put back
			// by hand has no history yet: no need to read it.
			if d.AttemptCount > 0 || !d.RetriedAt.IsZero() {
				var err error
				if hist, err = q.history(octx, id); err != nil {
					return q.fail(ctx, what, err)
				}
			}
			hist = lastAttempts(append(hist, *a))
			histRead = true
		}
		keep := change(&d, time.Now())
		n := ""
		if keep {
			n = nonce
		}
		puts := []put{{key: key, val: encodeRecord(&d, n, pos), check: true, expect: rev}}
		if a != nil {
			hv, _ := json.Marshal(hist)
			puts = append(puts, put{key: historyKey(id), val: hv})
		}
		revs, err := q.writeOutcome(octx, puts)
		if isCASConflict(err) {
			continue
		}
		if err != nil {
			return q.fail(ctx, what, err)
		}
		q.m.mu.Lock()
		q.m.apply(key, revs[0], puts[0].val, false)
		q.m.mu.Unlock()
		return nil
	}
	return fmt.Errorf("delivery %s: %w", id, queue.ErrStaleLease)
}

// writeOutcome writes the record and, when there is one, the history. On a
// replicated bucket that is one atomic batch. With replicas 1 the server
// stages every atomic batch in a synced file of its own (about 20 ms), so
// the record is written first, fenced, and the history after it: a crash in
// between loses that attempt's entry in the history, never the outcome.
func (q *Queue) writeOutcome(ctx context.Context, puts []put) ([]uint64, error) {
	if len(puts) == 1 || q.replicas > 1 {
		return q.batch(ctx, puts)
	}
	rev, err := q.write(ctx, puts[0])
	if err != nil {
		return nil, err
	}
	hrev, err := q.write(ctx, puts[1])
	if err != nil {
		q.logger.Warn("nats queue: an attempt was recorded but not its history entry", zap.String("key", puts[1].key), zap.Error(err))
	}
	return []uint64{rev, hrev}, nil
}

// history reads a delivery's attempts, oldest first.
func (q *Queue) history(ctx context.Context, id string) ([]queue.Attempt, error) {
	e, err := q.kv.Get(ctx, historyKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h []queue.Attempt
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return nil, fmt.Errorf("delivery %s: unreadable history: %v", id, err)
	}
	return h, nil
}
