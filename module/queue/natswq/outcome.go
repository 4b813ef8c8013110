package natswq

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
// its lease. On the owner the lease is checked in memory (nonce and
// revision); the record is written expecting the revision it was leased
// at, with its history in the same atomic batch when there is an attempt.
// A node that no longer owns the partition (it gave it back, or lost it)
// can still record the outcome of an attempt it made, fenced by that
// revision alone: if the new owner changed the record since, the outcome
// is refused as stale.
func (q *Queue) outcome(ctx context.Context, t queue.Token, what string, a *queue.Attempt,
	change func(d *queue.Delivery, now time.Time) (keepLease bool)) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	tp, ok := parseToken(t, len(q.parts))
	if !ok {
		return fmt.Errorf("token %q: %w", t, queue.ErrStaleLease)
	}
	p := q.parts[tp.part]
	stale := fmt.Errorf("delivery %s: %w", tp.id, queue.ErrStaleLease)
	var d queue.Delivery
	var pos uint64
	var chunks int
	m := p.mirror()
	if m != nil {
		m.mu.Lock()
		r := m.recs[tp.id]
		if r == nil || r.d.State != queue.Leased || r.nonce != tp.nonce || r.rev != tp.rev || r.claiming {
			m.mu.Unlock()
			return stale
		}
		d, pos, chunks = r.d, r.pos, r.chunks
		if change(&d, time.Now()) {
			// Extend: the lease lives in memory only.
			m.detach(r)
			r.d.LeasedUntil = d.LeasedUntil
			m.attach(r)
			m.mu.Unlock()
			m.signal()
			return nil
		}
		d = r.d
		r.claiming = true // an outcome is being written: not leasable, no second outcome
		m.settle(r)
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			if r.claiming {
				r.claiming = false
				m.settle(r)
			}
			m.mu.Unlock()
			m.signal()
		}()
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	if m == nil {
		rc, rev, err := q.getRecord(octx, p, tp.id)
		if errors.Is(err, queue.ErrNotFound) || err == nil && (rev != tp.rev || rc.State != queue.Pending) {
			return stale
		}
		if err != nil {
			return q.fail(ctx, what, err)
		}
		d, pos, chunks = rc.Delivery, rc.Pos, rc.Chunks
		if change(&d, time.Now()) {
			return stale // Extend needs the owner, and this node is not it any more
		}
		d = rc.Delivery
	}
	var hist []queue.Attempt
	if a != nil {
		// A delivery without attempts in this life and never put back by
		// hand has no history yet: no need to read it.
		if d.AttemptCount > 0 || !d.RetriedAt.IsZero() {
			var err error
			if hist, err = q.history(octx, p, tp.id); err != nil {
				return q.fail(ctx, what, err)
			}
		}
		hist = lastAttempts(append(hist, *a))
	}
	change(&d, time.Now())
	d.State = stateAfter(d.State)
	key := deliveryKey(tp.id)
	puts := []put{{key: key, val: encodeRecord(&d, pos, chunks), check: true, expect: tp.rev}}
	if a != nil {
		hv, _ := json.Marshal(hist)
		puts = append(puts, put{key: historyKey(tp.id), val: hv})
	}
	revs, err := q.writeOutcome(octx, p.prefix, puts)
	if isCASConflict(err) {
		return stale
	}
	if err != nil {
		return q.fail(ctx, what, err)
	}
	if m != nil {
		m.mu.Lock()
		if r := m.recs[tp.id]; r != nil {
			r.claiming = false
		}
		m.apply(key, revs[0], puts[0].val, false)
		// The watch may have applied this revision first, while the record
		// was still being written and so kept out of its lane.
		if r := m.recs[tp.id]; r != nil {
			m.settle(r)
		}
		m.mu.Unlock()
	}
	return nil
}

// stateAfter is the stored state of an outcome: a lease is never stored.
func stateAfter(s queue.State) queue.State {
	if s == queue.Leased {
		return queue.Pending
	}
	return s
}

// writeOutcome writes the record and, when there is one, the history. On a
// replicated bucket that is one atomic batch. With replicas 1 the server
// stages every atomic batch in a synced file of its own (about 20 ms), so
// the record is written first, fenced, and the history after it: a crash in
// between loses that attempt's entry in the history, never the outcome.
func (q *Queue) writeOutcome(ctx context.Context, pfx string, puts []put) ([]uint64, error) {
	if len(puts) == 1 || q.replicas > 1 {
		return q.batch(ctx, pfx, puts)
	}
	rev, err := q.write(ctx, pfx, puts[0])
	if err != nil {
		return nil, err
	}
	hrev, err := q.write(ctx, pfx, puts[1])
	if err != nil {
		q.logger.Warn("nats queue: an attempt was recorded but not its history entry", zap.String("key", puts[1].key), zap.Error(err))
	}
	return []uint64{rev, hrev}, nil
}

// history reads a delivery's attempts, oldest first.
func (q *Queue) history(ctx context.Context, p *part, id string) ([]queue.Attempt, error) {
	e, err := p.kv.Get(ctx, historyKey(id))
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
