package nats

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Enqueue stores the envelope as one atomic batch (see the package doc) and
// returns once JetStream has acknowledged it.
func (q *Queue) Enqueue(ctx context.Context, env *queue.Envelope) (queue.EnqueueResult, error) {
	if err := q.check(ctx); err != nil {
		return queue.EnqueueResult{}, err
	}
	if err := validEnvelope(env); err != nil {
		return queue.EnqueueResult{}, err
	}
	live := 0
	for _, d := range env.Deliveries {
		if d.State != queue.Dead && d.State != queue.Delivered {
			live++
		}
	}
	if limit := q.maxPending.Load(); limit > 0 && live > 0 {
		q.m.mu.Lock()
		n := q.m.counts[queue.Pending] + q.m.counts[queue.Leased]
		q.m.mu.Unlock()
		if int64(n+live) > limit {
			return queue.EnqueueResult{}, fmt.Errorf("%d deliveries pending or leased, cap %d: %w", n, limit, queue.ErrFull)
		}
	}

	now := time.Now()
	res := queue.EnqueueResult{EventID: env.Event.ID, Refs: make([]queue.Ref, 0, len(env.Deliveries))}
	ids := make([]string, 0, len(env.Deliveries))
	var ds []put
	for _, d := range env.Deliveries {
		c := *d
		if env.Event.ID != "" {
			c.EventID = env.Event.ID
		} // else: the deliveries of an event stored before (sync calls)
		switch c.State {
		case queue.Dead, queue.Delivered:
			c.NextAttempt = time.Time{}
		default:
			c.State = queue.Pending
			c.AttemptCount = 0
			c.FinishedAt = time.Time{}
		}
		c.LeasedUntil = time.Time{}
		ref := queue.Ref{ID: c.ID, Webhook: c.Webhook, State: c.State}
		if c.State == queue.Dead {
			ref.Error = c.LastError
		}
		res.Refs = append(res.Refs, ref)
		ids = append(ids, c.ID)
		ds = append(ds, put{key: deliveryKey(c.ID), val: encodeRecord(&c, "", 0), check: true})
		if c.State == queue.Delivered && len(d.Attempts) > 0 {
			ds = append(ds, put{key: historyKey(c.ID), val: encode(lastAttempts(d.Attempts))})
		}
	}
	puts := make([]put, 0, len(ds)+2)
	if env.DedupKey != "" {
		window := q.dedupWindow
		if env.DedupWindow > 0 {
			window = min(env.DedupWindow, queue.MaxDedupWindow)
		}
		puts = append(puts, put{key: dedupKey(env.DedupKey), check: true, ttl: window,
			val: encode(dedupRecord{EventID: env.Event.ID, Refs: res.Refs, At: now, Until: now.Add(window)})})
	}
	if env.Event.ID != "" {
		puts = append(puts, put{key: eventKey(env.Event.ID), val: encode(eventRecord{Event: env.Event, Deliveries: ids}), check: true})
	}
	puts = append(puts, ds...)

	octx, cancel := q.opCtx(ctx)
	defer cancel()
	revs, err := q.batch(octx, puts)
	// A conflict on the dedup key: answer the first envelope's refs. On a
	// replicated stream the winner may be proposed but not yet applied when
	// we read (for a long while on a loaded cluster that fsyncs every
	// write), so a missing key is read again for up to dedupSettle, and the
	// batch sent again in case the winner's failed.
	for try := 0; isCASConflict(err) && env.DedupKey != "" && time.Since(now) < dedupSettle; try++ {
		e, gerr := q.kv.Get(octx, puts[0].key)
		switch {
		case gerr == nil:
			var dr dedupRecord
			if decodeJSON(e.Value(), &dr) == nil && now.Before(dr.Until) {
				return queue.EnqueueResult{EventID: dr.EventID, Refs: dr.Refs, Duplicate: true}, nil
			}
			// Past its window by our clock but not yet expired by the
			// server's TTL: take it over.
			puts[0].expect = e.Revision()
			revs, err = q.batch(octx, puts)
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			puts[0].expect = 0
			if try%4 == 3 {
				revs, err = q.batch(octx, puts)
				continue
			}
			select {
			case <-time.After(min(time.Duration(10*(try+1))*time.Millisecond, 200*time.Millisecond)):
			case <-octx.Done():
				return queue.EnqueueResult{}, q.fail(ctx, "reading the dedup key", octx.Err())
			}
		default:
			return queue.EnqueueResult{}, q.fail(ctx, "reading the dedup key", gerr)
		}
	}
	if isCASConflict(err) && env.DedupKey != "" {
		// The write that holds the dedup key is still not readable: the
		// client's retry will find it (or store the event).
		return queue.EnqueueResult{}, fmt.Errorf("event %s: its dedup key is taken by a write not yet readable after %v: %w",
			env.Event.ID, dedupSettle, queue.ErrUnavailable)
	}
	if isCASConflict(err) {
		return queue.EnqueueResult{}, fmt.Errorf("event %s or one of its deliveries has an id that is already stored: nothing of the event was stored", env.Event.ID)
	}
	if err != nil {
		return queue.EnqueueResult{}, q.fail(ctx, "storing the event in NATS", err)
	}
	q.m.mu.Lock()
	for i, p := range puts {
		q.m.apply(p.key, revs[i], p.val, false)
	}
	q.m.mu.Unlock()
	return res, nil
}

// dedupSettle bounds how long Enqueue waits for the write that holds a
// dedup key to become readable.
const dedupSettle = 5 * time.Second

func validEnvelope(env *queue.Envelope) error {
	if env == nil {
		return errors.New("no envelope")
	}
	if env.Event.ID == "" && env.DedupKey != "" {
		return errors.New("an envelope without an event cannot have a dedup key")
	}
	if len(env.Event.ID) > maxIDLen || len(env.DedupKey) > 4096 {
		return errors.New("event id or dedup key too long")
	}
	seen := make(map[string]bool, len(env.Deliveries))
	for _, d := range env.Deliveries {
		if d == nil || d.ID == "" || len(d.ID) > maxIDLen {
			return fmt.Errorf("event %s: a delivery without an id, or with one over %d bytes", env.Event.ID, maxIDLen)
		}
		if seen[d.ID] {
			return fmt.Errorf("event %s: delivery id %s twice", env.Event.ID, d.ID)
		}
		seen[d.ID] = true
	}
	return nil
}

func lastAttempts(a []queue.Attempt) []queue.Attempt {
	if len(a) > keepAttempts {
		a = a[len(a)-keepAttempts:]
	}
	return a
}
