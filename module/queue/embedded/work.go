package embedded

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Enqueue stores an event envelope atomically (see queue.Work).
func (q *Queue) Enqueue(ctx context.Context, env *queue.Envelope) (queue.EnqueueResult, error) {
	if env == nil {
		return queue.EnqueueResult{}, errors.New("enqueue: no envelope")
	}
	if err := validateEnvelope(env); err != nil {
		return queue.EnqueueResult{}, err
	}
	if err := q.checkDisk(); err != nil {
		return queue.EnqueueResult{}, err
	}
	// Encoding happens here, in the caller's goroutine: the committer only
	// copies bytes.
	type prepared struct {
		d      *queue.Delivery
		static []byte
		lane   string
	}
	ps := make([]prepared, len(env.Deliveries))
	pending := int64(0)
	for i, d := range env.Deliveries {
		if d.EventID == "" {
			d.EventID = env.Event.ID
		}
		ps[i] = prepared{d: d, static: encodeStatic(d), lane: laneName(d.Destination, d.WebhookKey())}
		if d.State == queue.Pending || d.State == "" {
			pending++
		}
	}
	evRec := encodeEvent(&env.Event)
	var res queue.EnqueueResult
	err := q.write(ctx, true, func(w *wtx) error {
		res = queue.EnqueueResult{}
		if env.DedupKey != "" {
			v, err := w.get(dedupKey(env.DedupKey))
			if err != nil {
				return err
			}
			if v != nil {
				window := q.dedupWindow
				if env.DedupWindow > 0 {
					window = min(env.DedupWindow, queue.MaxDedupWindow)
				}
				created, eventID, refs, err := decodeDedup(v)
				if err == nil && w.now.Sub(created) < window {
					res = queue.EnqueueResult{EventID: eventID, Refs: refs, Duplicate: true}
					return nil
				}
			}
		}
		if limit := q.maxPending.Load(); limit > 0 && pending > 0 && w.c.pending+pending > limit {
			return fmt.Errorf("%w: %d deliveries are pending, the limit (max_pending) is %d", queue.ErrFull, w.c.pending, limit)
		}
		// IDs are not looked up to see whether they are new: they are random
		// 128-bit ones, and a lookup would cost a read of every level's
		// filter on the ingest path (the profile's largest item).
		// Validated: write.
		if env.Event.ID != "" {
			w.set(eventKey(env.Event.ID), evRec)
			w.set(eventAtKey(env.Event.ReceivedAt, env.Event.ID), nil)
		}
		res.EventID = env.Event.ID
		res.Refs = make([]queue.Ref, len(ps))
		for i, p := range ps {
			d := p.d
			m := mutable{state: d.State, next: d.NextAttempt, seq: w.nextSeq()}
			if m.state == "" {
				m.state = queue.Pending
			}
			if m.next.IsZero() {
				m.next = w.now
			}
			w.set(staticKey(d.ID), p.static)
			st := static{eventID: d.EventID, target: d.Target, event: d.Event, callID: d.CallID,
				webhook: d.Webhook, destination: d.Destination, orderKey: d.OrderKey, created: d.CreatedAt}
			writeIndexes(w, d.ID, st, m.seq, m.state)
			switch m.state {
			case queue.Pending:
				w.c.pending++
				if d.OrderKey != "" {
					busy, err := orderBusy(w, d.OrderKey)
					if err != nil {
						return err
					}
					m.orderSeq = m.seq
					m.gated = busy
					w.set(orderKey(d.OrderKey, m.orderSeq), []byte(d.ID))
				}
				if !m.gated {
					mm := m
					putDue(w, p.lane, d.ID, m.next, m.seq, &cachedRec{static: p.static, m: mm})
				}
			case queue.Dead:
				w.c.dead++
				m.finished = d.FinishedAt
				if m.finished.IsZero() {
					m.finished = w.now
				}
				m.lastError = d.LastError
			case queue.Delivered:
				w.c.delivered++
				m.finished = d.FinishedAt
				if m.finished.IsZero() {
					m.finished = w.now
				}
				w.set(finishedKey(m.finished, m.seq), []byte(d.ID))
			}
			for _, a := range d.Attempts {
				w.set(attemptKey(d.ID, m.hist), encodeAttempt(a))
				m.hist++
				m.count++
			}
			if m.state != queue.Delivered {
				m.lastError = d.LastError
			}
			w.set(mutableKey(d.ID), encodeMutable(&m))
			res.Refs[i] = queue.Ref{ID: d.ID, Webhook: d.Webhook, State: m.state}
			if m.state == queue.Dead {
				res.Refs[i].Error = d.LastError
			}
		}
		if env.DedupKey != "" {
			w.set(dedupKey(env.DedupKey), encodeDedup(w.now, env.Event.ID, res.Refs))
			w.set(dedupAtKey(w.now, env.DedupKey), nil)
		}
		return nil
	})
	if err != nil {
		return queue.EnqueueResult{}, err
	}
	return res, nil
}

func validateEnvelope(env *queue.Envelope) error {
	if env.Event.ID == "" && env.DedupKey != "" {
		return errors.New("enqueue: an envelope without an event cannot have a dedup key")
	}
	if len(env.Event.ID) > maxIDLen {
		return fmt.Errorf("enqueue: event ID is %d bytes; at most %d", len(env.Event.ID), maxIDLen)
	}
	if len(env.DedupKey) > maxDedupKeyLen {
		return fmt.Errorf("enqueue: dedup key is %d bytes; at most %d", len(env.DedupKey), maxDedupKeyLen)
	}
	seen := make(map[string]bool, len(env.Deliveries))
	for _, d := range env.Deliveries {
		switch {
		case d == nil:
			return errors.New("enqueue: nil delivery")
		case d.ID == "":
			return errors.New("enqueue: a delivery has no ID")
		case len(d.ID) > maxIDLen:
			return fmt.Errorf("enqueue: delivery ID is %d bytes; at most %d", len(d.ID), maxIDLen)
		case seen[d.ID]:
			return fmt.Errorf("enqueue: delivery ID %s appears twice", d.ID)
		case d.State != "" && d.State != queue.Pending && d.State != queue.Dead && d.State != queue.Delivered:
			return fmt.Errorf("enqueue: delivery %s has state %q; only pending, dead or delivered can be stored", d.ID, d.State)
		}
		seen[d.ID] = true
	}
	return nil
}

// putDue writes a due key; rec (may be nil) is the delivery's records as
// this write leaves them, for the lane's window.
func putDue(w *wtx, laneN, id string, due time.Time, seq uint64, rec *cachedRec) []byte {
	k := dueKey(lanePrefix(laneN), due, seq)
	w.set(k, []byte(id))
	w.fx(effect{kind: fxDue, lane: laneN, key: k, id: id, due: due, rec: rec})
	return k
}

// orderBusy reports whether an order key has a delivery in flight.
func orderBusy(w *wtx, key string) (bool, error) {
	pfx := orderPrefix(key)
	it, err := w.b.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return false, err
	}
	busy := it.First()
	return busy, it.Close()
}

// orderAdvance takes a finished delivery out of its order key and makes
// the next one due.
func orderAdvance(w *wtx, key string, seq uint64) error {
	w.del(orderKey(key, seq))
	pfx := orderPrefix(key)
	it, err := w.b.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return err
	}
	var nextID string
	if it.First() {
		nextID = string(it.Value())
	}
	if err := it.Close(); err != nil {
		return err
	}
	if nextID == "" {
		return nil
	}
	mv, err := w.get(mutableKey(nextID))
	if err != nil || mv == nil {
		return err
	}
	m, err := decodeMutable(mv)
	if err != nil || !m.gated || m.state != queue.Pending {
		return err
	}
	sv, err := w.get(staticKey(nextID))
	if err != nil || sv == nil {
		return err
	}
	st, _, err := decodeStaticHead(sv)
	if err != nil {
		return err
	}
	m.gated = false
	w.set(mutableKey(nextID), encodeMutable(&m))
	putDue(w, laneName(st.destination, queue.WebhookKey(st.target, st.webhook)), nextID, m.next, m.seq, &cachedRec{static: sv, m: m})
	return nil
}

// Lease hands out due deliveries within the request's budgets (see
// queue.LeaseRequest), waiting up to req.Wait for some.
func (q *Queue) Lease(ctx context.Context, req queue.LeaseRequest) ([]queue.Lease, error) {
	if req.Max <= 0 {
		return nil, fmt.Errorf("lease: max is %d; it must be at least 1", req.Max)
	}
	if req.Lease <= 0 {
		return nil, fmt.Errorf("lease: lease duration is %s; it must be positive", req.Lease)
	}
	var deadline time.Time
	if req.Wait > 0 {
		deadline = time.Now().Add(req.Wait)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var out []queue.Lease
		var wake time.Time
		var changed chan struct{}
		err := q.reading(func() error {
			var err error
			out, wake, changed, err = q.leaseOnce(req)
			return err
		})
		if err != nil || len(out) > 0 || req.Wait <= 0 {
			return out, err
		}
		now := time.Now()
		if !now.Before(deadline) {
			return nil, nil
		}
		sleep := deadline.Sub(now)
		if !wake.IsZero() {
			// wake is on the queue's clock; tests may move it, so bound the
			// sleep by it only when it is near.
			if d := wake.Sub(q.now()); d < sleep {
				sleep = max(d, time.Millisecond)
			}
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// leaseOnce is one pass over the lanes. It returns what it leased, the
// earliest time something may become leasable, and the channel that is
// closed when work changes.
func (q *Queue) leaseOnce(req queue.LeaseRequest) ([]queue.Lease, time.Time, chan struct{}, error) {
	s := &q.sched
	s.mu.Lock()
	defer s.mu.Unlock()
	now := q.now()
	s.sweep(now)
	var out []queue.Lease
	var wake time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && t != never && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	destUsed := map[string]int{}
	hookUsed := map[string]int{}
	n := len(s.ring)
	start := s.rr
	if n > 0 {
		s.rr = (s.rr + 1) % n
	}
	for i := 0; i < n && len(out) < req.Max; i++ {
		l := s.ring[(start+i)%n]
		if req.Paused[l.hook] {
			continue
		}
		if l.next == never || l.next.After(now) {
			soonest(l.next)
			continue
		}
		want := req.Max - len(out)
		if l.dest != "" {
			budget, ok := req.DestinationBudget[l.dest]
			if !ok {
				budget = req.DefaultDestinationBudget
				if budget == 0 {
					budget = -1
				}
			}
			if budget >= 0 {
				left := budget - destUsed[l.dest]
				if left <= 0 {
					continue
				}
				want = min(want, left)
			}
		}
		if budget, ok := req.WebhookBudget[l.hook]; ok {
			left := budget - hookUsed[l.hook]
			if left <= 0 {
				continue
			}
			want = min(want, left)
		}
		got, err := q.scanLane(l, now, want, req.Lease)
		if err != nil {
			return out, wake, s.changed, err
		}
		destUsed[l.dest] += len(got)
		hookUsed[l.hook] += len(got)
		out = append(out, got...)
		soonest(l.next)
	}
	soonest(s.nextExpiry)
	return out, wake, s.changed, nil
}

// scanLane leases up to want due deliveries of one lane, from its window,
// refilling the window from the store when it runs out. The caller holds
// the scheduler's lock.
func (q *Queue) scanLane(l *lane, now time.Time, want int, leaseFor time.Duration) ([]queue.Lease, error) {
	var out []queue.Lease
	if !l.loaded {
		if err := q.refill(l); err != nil {
			return nil, err
		}
	}
	l.next = never
	for i := 0; ; i++ {
		if i == len(l.win) {
			if l.hi == nil {
				return out, nil // the window is the whole lane
			}
			n := len(l.win)
			if err := q.refill(l); err != nil {
				return out, err
			}
			if len(l.win) == n {
				return out, nil
			}
		}
		e := &l.win[i]
		if q.sched.leases[e.id] != nil {
			continue
		}
		if e.due.After(now) || len(out) == want {
			l.next = e.due
			return out, nil
		}
		lr, d, err := q.leaseEntry(l, e)
		if err != nil {
			return out, err
		}
		if lr == nil {
			continue // a due key whose delivery is not pending: never written so
		}
		lr.until = now.Add(leaseFor)
		q.sched.addLease(lr)
		d.State = queue.Leased
		d.LeasedUntil = lr.until
		out = append(out, queue.Lease{Delivery: d, Token: lr.token(), Until: lr.until})
	}
}

// refill reads the lane's next due keys from the store into its window.
func (q *Queue) refill(l *lane) error {
	lower := l.lwm()
	if l.loaded && l.hi != nil {
		lower = append(append([]byte(nil), l.hi...), 0) // just past hi
	}
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: l.end})
	if err != nil {
		return err
	}
	defer it.Close()
	l.loaded = true
	n := 0
	var ids []string // the entries added, for prefetch
	ok := it.First()
	for ; ok && n < windowSize; ok = it.Next() {
		k := it.Key()
		due, _, valid := parseDue(k, len(l.pfx))
		if !valid {
			continue
		}
		key := append([]byte(nil), k...)
		if i, found := l.find(key); !found {
			id := string(it.Value())
			l.win = slices.Insert(l.win, i, winEntry{key: key, id: id, due: due})
			ids = append(ids, id)
		}
		l.hi = key
		n++
	}
	if !ok {
		l.hi = nil // the window now holds the whole lane
	}
	if err := it.Error(); err != nil {
		return err
	}
	return q.prefetch(l, ids)
}

// prefetch reads the records of deliveries just put in a lane's window, as
// far as the record cache has room. IDs are time-ordered (UUIDv7) and a
// lane's due order is close to its enqueue order, so reading them in ID
// order walks the static and mutable ranges forward, block after block,
// instead of a random read per lease: that is what makes a large backlog
// drain near the speed of a queue that keeps pace.
func (q *Queue) prefetch(l *lane, ids []string) error {
	if len(ids) == 0 || q.sched.cached >= recordCacheBytes {
		return nil
	}
	// In key order: keys length-prefix the ID (real IDs all have one
	// length, so this is their time order).
	slices.SortFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b)) })
	recs := make(map[string]*cachedRec, len(ids))
	for _, r := range []struct {
		pfx  byte
		save func(id string, v []byte)
	}{
		{pStatic, func(id string, v []byte) { recs[id] = &cachedRec{static: append([]byte(nil), v...)} }},
		{pMutable, func(id string, v []byte) {
			if rec := recs[id]; rec != nil {
				if m, err := decodeMutable(v); err == nil {
					rec.m = m
					rec.ok = true
				}
			}
		}},
	} {
		it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: strKey(r.pfx, ids[0]), UpperBound: prefixEnd(strKey(r.pfx, ids[len(ids)-1]))})
		if err != nil {
			return err
		}
		for _, id := range ids {
			k := strKey(r.pfx, id)
			if it.SeekGE(k) && bytes.Equal(it.Key(), k) {
				r.save(id, it.Value())
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	for i := range l.win {
		e := &l.win[i]
		if rec := recs[e.id]; rec != nil && rec.ok && e.rec == nil {
			if !q.sched.cacheRec(rec) {
				break
			}
			e.rec = rec
		}
	}
	return nil
}

// leaseEntry builds the lease of a window entry, from its cached records
// or from the store.
func (q *Queue) leaseEntry(l *lane, e *winEntry) (*leaseRec, *queue.Delivery, error) {
	var sv []byte
	var m mutable
	if e.rec != nil {
		sv, m = e.rec.static, e.rec.m
		q.sched.dropRec(e)
	} else {
		var err error
		if sv, err = q.getRaw(staticKey(e.id)); err != nil || sv == nil {
			return nil, nil, err
		}
		mv, err := q.getRaw(mutableKey(e.id))
		if err != nil || mv == nil {
			return nil, nil, err
		}
		if m, err = decodeMutable(mv); err != nil {
			return nil, nil, fmt.Errorf("delivery %s: %w", e.id, err)
		}
	}
	if m.state != queue.Pending {
		return nil, nil, nil
	}
	d := &queue.Delivery{ID: e.id}
	if err := decodeStatic(sv, d); err != nil {
		return nil, nil, fmt.Errorf("delivery %s: %w", e.id, err)
	}
	fillMutable(d, &m)
	st := static{eventID: d.EventID, target: d.Target, event: d.Event, callID: d.CallID,
		webhook: d.Webhook, destination: d.Destination, orderKey: d.OrderKey, created: d.CreatedAt}
	return &leaseRec{id: e.id, lane: l, dueKey: e.key, st: st, raw: sv, m: m}, d, nil
}

func fillMutable(d *queue.Delivery, m *mutable) {
	d.State = m.state
	d.NextAttempt = m.next
	if m.state != queue.Pending {
		d.NextAttempt = time.Time{}
	}
	d.RetriedAt = m.retried
	d.FinishedAt = m.finished
	d.LastError = m.lastError
	d.AttemptCount = m.count
}

// outcome claims t's lease and commits f's writes for it.
func (q *Queue) outcome(ctx context.Context, t queue.Token, sync bool, f func(w *wtx, lr *leaseRec)) error {
	return q.write(ctx, sync, func(w *wtx) error {
		lr, err := q.sched.claim(t, w.now)
		if err != nil {
			return err
		}
		w.o.claimed = lr
		f(w, lr)
		w.fx(effect{kind: fxUnlease, lease: lr})
		return nil
	})
}

func (w *wtx) recordAttempt(lr *leaseRec, a queue.Attempt) {
	if a.Start.IsZero() && a.Duration == 0 && a.Status == 0 && a.Error == "" {
		return // no attempt was made
	}
	w.set(attemptKey(lr.id, lr.m.hist), encodeAttempt(a))
	if lr.m.hist >= keepAttempts {
		w.del(attemptKey(lr.id, lr.m.hist-keepAttempts))
	}
	lr.m.hist++
	lr.m.count++
}

// finish ends a delivery's pending life: its due key, order key and state
// index move.
func (w *wtx) finish(lr *leaseRec, to queue.State) {
	w.del(lr.dueKey)
	moveState(w, lr.id, lr.st, lr.m.seq, queue.Pending, to)
	if lr.m.orderSeq != 0 {
		// The next delivery of the order key may go out once this write
		// is durable, not before: were it sent and this outcome lost in a
		// crash, this one would be sent again after it.
		w.o.sync = true
		if err := orderAdvance(w, lr.st.orderKey, lr.m.orderSeq); err != nil {
			w.q.log.Error("cannot release the next ordered delivery; it is released at the next restart")
		}
		lr.m.orderSeq = 0
	}
	w.c.pending--
}

// Ack records a successful attempt.
func (q *Queue) Ack(ctx context.Context, t queue.Token, a queue.Attempt) error {
	return q.outcome(ctx, t, false, func(w *wtx, lr *leaseRec) {
		lr2 := *lr
		w.recordAttempt(&lr2, a)
		w.finish(&lr2, queue.Delivered)
		lr2.m.state = queue.Delivered
		lr2.m.finished = w.now
		lr2.m.lastError = ""
		w.set(mutableKey(lr.id), encodeMutable(&lr2.m))
		w.set(finishedKey(w.now, lr.m.seq), []byte(lr.id))
		w.c.delivered++
	})
}

// Retry records a failed attempt and makes the delivery due at next.
func (q *Queue) Retry(ctx context.Context, t queue.Token, a queue.Attempt, next time.Time, reason string) error {
	return q.outcome(ctx, t, false, func(w *wtx, lr *leaseRec) {
		lr2 := *lr
		w.recordAttempt(&lr2, a)
		lr2.m.lastError = reason
		w.moveDue(&lr2, next)
		w.set(mutableKey(lr.id), encodeMutable(&lr2.m))
	})
}

// Dead records a final failed attempt and marks the delivery dead.
func (q *Queue) Dead(ctx context.Context, t queue.Token, a queue.Attempt, reason string) error {
	return q.outcome(ctx, t, false, func(w *wtx, lr *leaseRec) {
		lr2 := *lr
		w.recordAttempt(&lr2, a)
		w.finish(&lr2, queue.Dead)
		lr2.m.state = queue.Dead
		lr2.m.finished = w.now
		lr2.m.lastError = reason
		w.set(mutableKey(lr.id), encodeMutable(&lr2.m))
		w.c.dead++
	})
}

// Release ends a lease without an attempt: due again at next.
func (q *Queue) Release(ctx context.Context, t queue.Token, next time.Time) error {
	return q.outcome(ctx, t, false, func(w *wtx, lr *leaseRec) {
		lr2 := *lr
		w.moveDue(&lr2, next)
		w.set(mutableKey(lr.id), encodeMutable(&lr2.m))
	})
}

func (w *wtx) moveDue(lr *leaseRec, next time.Time) {
	if next.IsZero() {
		next = w.now
	}
	w.del(lr.dueKey)
	lr.m.next = next
	putDue(w, lr.lane.name, lr.id, next, lr.m.seq, &cachedRec{static: lr.raw, m: lr.m})
}

// Extend moves the lease's end to until.
func (q *Queue) Extend(ctx context.Context, t queue.Token, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return q.reading(func() error { return q.sched.extend(t, q.now(), until) })
}
