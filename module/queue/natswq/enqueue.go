package natswq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Enqueue stores the envelope as one atomic batch in its call's partition
// (with a dedup key, after claiming the key in the meta bucket) and returns
// once JetStream has acknowledged it.
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
		if n := q.pendingCount(); int64(n+live) > limit {
			return queue.EnqueueResult{}, fmt.Errorf("%d deliveries pending or leased, cap %d: %w", n, limit, queue.ErrFull)
		}
	}

	now := time.Now()
	p := q.partOf(callOf(env))
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
		ds = append(ds, q.recordPuts(&c, 0, 0)...)
		if c.State == queue.Delivered && len(d.Attempts) > 0 {
			ds = append(ds, put{key: historyKey(c.ID), val: encode(lastAttempts(d.Attempts))})
		}
	}
	puts := make([]put, 0, len(ds)+1)
	if env.Event.ID != "" {
		er := eventRecord{Event: env.Event, Deliveries: ids}
		blobs := q.splitBlob("e", env.Event.ID, er.Data)
		if len(blobs) > 0 {
			er.Data, er.Chunks = nil, len(blobs)
		}
		puts = append(puts, put{key: eventKey(env.Event.ID), val: encodeEvent(&er), check: true})
		puts = append(puts, blobs...)
	}
	puts = append(puts, ds...)

	octx, cancel := q.opCtx(ctx)
	defer cancel()
	var claim uint64
	t0 := time.Now()
	if env.DedupKey != "" {
		dup, rev, err := q.claimDedup(octx, ctx, env, res.Refs, p, now)
		if err != nil || dup != nil {
			if dup != nil {
				return *dup, nil
			}
			return queue.EnqueueResult{}, err
		}
		claim = rev
	}
	t1 := time.Now()
	revs, err := q.batch(octx, p.prefix, puts)
	t2 := time.Now()
	if err != nil && claim != 0 && refusedWhole(err) {
		// The server refused the batch: nothing of the envelope was
		// stored. Free its dedup key, so that the client's retry is not
		// answered as a duplicate of nothing. After a timeout or a lost
		// connection the batch may have been stored: the key stays, and
		// the retry is answered with this envelope's IDs once it is
		// readable, or takes the key over after dedupSettle (freeing it
		// here made the retry store the event a second time, under new IDs).
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = q.meta.Delete(dctx, dedupKey(env.DedupKey), jetstream.LastRevision(claim))
		dcancel()
	}
	if isCASConflict(err) {
		return queue.EnqueueResult{}, fmt.Errorf("event %s or one of its deliveries has an id that is already stored: nothing of the event was stored", env.Event.ID)
	}
	if err != nil {
		return queue.EnqueueResult{}, q.fail(ctx, "storing the event in NATS", err)
	}
	// The owner applies writes in stream order only (never its own ahead
	// of another node's, which would break order across nodes); when this
	// node owns the partition, wait for its watch to get here, so what
	// Enqueue stored can be leased at once.
	if m := p.mirror(); m != nil {
		m.waitApplied(ctx, revs[len(revs)-1])
	}
	if h := speedHook; h != nil {
		h(t1.Sub(t0), t2.Sub(t1), time.Since(t2))
	}
	return res, nil
}

// refusedWhole reports whether err is the server's answer refusing a batch
// (so nothing of it was stored), not a timeout or a lost connection whose
// outcome is unknown.
func refusedWhole(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) || isCASConflict(err)
}

// callOf is the call an envelope belongs to.
func callOf(env *queue.Envelope) string {
	if env.Event.ID != "" || len(env.Deliveries) == 0 {
		return env.Event.CallID
	}
	return env.Deliveries[0].CallID
}

// claimDedup claims the envelope's dedup key in the meta bucket (create-only,
// with the dedup window as a per-message TTL: never the stream's in-memory
// duplicate window). A key already claimed answers the first envelope's
// refs once that envelope is readable; a claim whose envelope never
// appears within dedupSettle (its node died between the two writes) or
// whose window has passed is taken over.
func (q *Queue) claimDedup(octx, ctx context.Context, env *queue.Envelope, refs []queue.Ref, p *part, now time.Time) (*queue.EnqueueResult, uint64, error) {
	window := q.dedupWindow
	if env.DedupWindow > 0 {
		window = min(env.DedupWindow, queue.MaxDedupWindow)
	}
	key := dedupKey(env.DedupKey)
	val := encode(dedupRecord{EventID: env.Event.ID, Refs: refs, Part: p.i, At: now, Until: now.Add(window)})
	settle := now.Add(dedupSettle)
	for try := 0; ; try++ {
		rev, err := q.meta.Create(octx, key, val, jetstream.KeyTTL(window))
		if err == nil {
			return nil, rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, 0, q.fail(ctx, "claiming the dedup key", err)
		}
		e, err := q.meta.Get(octx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // freed or expired meanwhile
		}
		if err != nil {
			return nil, 0, q.fail(ctx, "reading the dedup key", err)
		}
		var dr dedupRecord
		takeOver := decodeJSON(e.Value(), &dr) != nil || !time.Now().Before(dr.Until)
		if !takeOver {
			stored, err := q.envelopeStored(octx, &dr)
			if err != nil {
				return nil, 0, q.fail(ctx, "reading the first envelope of a dedup key", err)
			}
			if stored {
				return &queue.EnqueueResult{EventID: dr.EventID, Refs: dr.Refs, Duplicate: true}, 0, nil
			}
			takeOver = time.Now().After(settle)
		}
		if takeOver {
			rev, err := q.write(octx, q.metaPfx, put{key: key, val: val, check: true, expect: e.Revision(), ttl: window})
			if err == nil {
				return nil, rev, nil
			}
			if !isCASConflict(err) {
				return nil, 0, q.fail(ctx, "taking over a dedup key", err)
			}
			continue
		}
		select {
		case <-time.After(min(time.Duration(5*(try+1))*time.Millisecond, 100*time.Millisecond)):
		case <-octx.Done():
			return nil, 0, q.fail(ctx, "waiting for the first envelope of a dedup key", octx.Err())
		}
	}
}

// envelopeStored reports whether the envelope a dedup claim names is in its
// partition.
func (q *Queue) envelopeStored(ctx context.Context, dr *dedupRecord) (bool, error) {
	if dr.Part < 0 || dr.Part >= len(q.parts) {
		return true, nil // from another layout: trust it
	}
	_, err := q.parts[dr.Part].kv.Get(ctx, eventKey(dr.EventID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// dedupSettle bounds how long Enqueue waits for the envelope of a claimed
// dedup key to become readable before it takes the key over.
const dedupSettle = 5 * time.Second

// pendingCount is pending plus leased across the cluster: this node's
// partitions exactly, the others' as their owners last published them.
func (q *Queue) pendingCount() int {
	n := 0
	for _, p := range q.parts {
		if m := p.mirror(); m != nil {
			m.mu.Lock()
			n += m.counts[queue.Pending] + m.counts[queue.Leased]
			m.mu.Unlock()
			continue
		}
		q.counts.mu.Lock()
		n += q.counts.s[p.i].Pending + q.counts.s[p.i].Leased
		q.counts.mu.Unlock()
	}
	return n
}

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

// speedHook, when set (tests only), gets the time one Enqueue spent on its
// dedup claim, its batch and waiting for its own watch.
var speedHook func(claim, batch, wait time.Duration)
