package nats

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

// budgets is one Lease call's accounting of what the request allows.
type budgets struct {
	req  *queue.LeaseRequest
	dest map[string]int
	hook map[string]int
}

func (b *budgets) allow(l *lane) bool {
	if l.dest != "" {
		lim, ok := b.req.DestinationBudget[l.dest]
		if !ok {
			lim, ok = b.req.DefaultDestinationBudget, b.req.DefaultDestinationBudget != 0
		}
		if ok && b.dest[l.dest] >= lim {
			return false
		}
	}
	if lim, ok := b.req.WebhookBudget[l.hook]; ok && b.hook[l.hook] >= lim {
		return false
	}
	return true
}

func (b *budgets) take(l *lane, n int) {
	b.dest[l.dest] += n
	b.hook[l.hook] += n
}

// blocked reports whether a lane cannot give this request anything now,
// whatever its backlog.
func (m *mirror) blocked(l *lane, b *budgets) bool {
	return b.req.Paused[l.hook] || m.paused[l.hook] > 0 || !b.allow(l)
}

// claim is one delivery picked for leasing, copied under the lock.
type claim struct {
	r     *rec
	d     queue.Delivery
	rev   uint64
	pos   uint64
	nonce string
}

// pick takes up to need due deliveries, one lane at a time round-robin,
// marking them as being claimed. Called with mu held.
func (m *mirror) pick(now time.Time, need int, b *budgets) []claim {
	var out []claim
	n := len(m.laneList)
	if n == 0 {
		return nil
	}
	start := m.rr % n
	m.rr++
	for progress := true; progress && len(out) < need; {
		progress = false
		for i := 0; i < n && len(out) < need; i++ {
			l := m.laneList[(start+i)%n]
			if len(l.h) == 0 || l.h[0].due().After(now) || m.blocked(l, b) {
				continue
			}
			r := l.h[0]
			r.claiming = true
			m.settle(r)
			b.take(l, 1)
			out = append(out, claim{r: r, d: r.d, rev: r.rev, pos: r.pos, nonce: newNonce()})
			progress = true
		}
	}
	return out
}

// nextDue is the earliest time a lane this request is not blocked from has
// work due, zero if none. Called with mu held.
func (m *mirror) nextDue(now time.Time, b *budgets) time.Time {
	var next time.Time
	for _, l := range m.laneList {
		if len(l.h) == 0 || m.blocked(l, b) {
			continue
		}
		if due := l.h[0].due(); due.After(now) && (next.IsZero() || due.Before(next)) {
			next = due
		}
	}
	return next
}

// Lease hands out due deliveries: the mirror picks them fairly, and a write
// of each record to leased, expecting the revision the mirror holds, makes
// the lease this node's; a delivery another node took first is skipped.
func (q *Queue) Lease(ctx context.Context, req queue.LeaseRequest) ([]queue.Lease, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	if req.Max < 1 {
		req.Max = 1
	}
	if req.Lease <= 0 {
		req.Lease = 30 * time.Second
	}
	deadline := time.Now().Add(req.Wait)
	b := &budgets{req: &req, dest: map[string]int{}, hook: map[string]int{}}
	var out []queue.Lease
	for {
		now := time.Now()
		for round := 0; len(out) < req.Max && round < 8 && ctx.Err() == nil; round++ {
			q.m.mu.Lock()
			cs := q.m.pick(now, req.Max-len(out), b)
			q.m.mu.Unlock()
			if len(cs) == 0 {
				break
			}
			got, err := q.claim(ctx, cs, req.Lease, b)
			out = append(out, got...)
			if err != nil {
				if len(out) > 0 {
					return out, nil
				}
				return nil, err
			}
		}
		if len(out) > 0 {
			return out, nil
		}
		q.m.mu.Lock()
		changed := q.m.changed
		next := q.m.nextDue(now, b)
		q.m.mu.Unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, nil
		}
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if q.closed.Load() {
				return nil, queue.ErrClosed
			}
			return nil, ctx.Err()
		case <-q.done:
			t.Stop()
			return nil, queue.ErrClosed
		}
		t.Stop()
	}
}

// claim writes the picked deliveries as leased, pipelined, and returns the
// leases that took. Budgets of the ones that did not are given back.
func (q *Queue) claim(ctx context.Context, cs []claim, lease time.Duration, b *budgets) ([]queue.Lease, error) {
	until := time.Now().Add(lease)
	puts := make([]put, len(cs))
	for i := range cs {
		d := &cs[i].d
		d.State = queue.Leased
		d.LeasedUntil = until
		puts[i] = put{key: deliveryKey(d.ID), val: encodeRecord(d, cs[i].nonce, cs[i].pos), check: true, expect: cs[i].rev}
	}
	// Once sent, a claim may take on the server whatever the caller does:
	// wait for every answer even if ctx ends (the pool cancels a waiting
	// Lease whenever a worker finishes), or a taken lease would be dropped
	// here and the delivery sit leased by nobody until its lease ran out.
	octx, cancel := q.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	revs, errs := q.writeAll(octx, puts)
	var out []queue.Lease
	var lastErr error
	var conflicts []claim
	q.m.mu.Lock()
	for i, c := range cs {
		c.r.claiming = false
		if errs[i] == nil {
			q.m.apply(puts[i].key, revs[i], puts[i].val, false)
			// The watch may have applied this revision first, while the
			// record was still being claimed and so kept out of its lane.
			q.m.settle(c.r)
			d := c.d
			out = append(out, queue.Lease{Delivery: &d, Token: leaseToken(c.nonce, d.ID), Until: until})
			continue
		}
		b.take(c.r.lane, -1)
		if isCASConflict(errs[i]) {
			// Another node took it (or changed it) first: leave it out
			// of its lane until the watch brings the newer revision, and
			// go on with the next ones instead of waiting for that.
			c.r.stale = c.rev
			conflicts = append(conflicts, c)
		} else {
			lastErr = errs[i]
		}
		q.m.settle(c.r)
	}
	q.m.mu.Unlock()
	if len(conflicts) > 0 {
		q.refreshLater(conflicts)
	}
	if len(out) == 0 && lastErr != nil {
		return nil, q.fail(ctx, "leasing deliveries from NATS", lastErr)
	}
	return out, nil
}

// refreshLater reads again, after a moment, the records whose claims were
// refused and that the watch has not brought a newer revision of by then
// (a safety net: the watch normally does within milliseconds).
func (q *Queue) refreshLater(cs []claim) {
	q.bg.Add(1)
	go func() {
		defer q.bg.Done()
		for wait := 250 * time.Millisecond; len(cs) > 0 && wait < time.Minute; wait *= 4 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-q.done:
				t.Stop()
				return
			}
			ctx, cancel := q.opCtx(context.Background())
			left := cs[:0]
			for _, c := range cs {
				q.m.mu.Lock()
				still := q.m.recs[c.d.ID] == c.r && c.r.stale == c.r.rev
				q.m.mu.Unlock()
				if still && q.refresh(ctx, deliveryKey(c.d.ID), c.rev) {
					// Read: whatever revision the mirror holds now is
					// the stream's. A refusal with no newer revision to
					// show (a replicated stream can refuse while an
					// earlier write is still being applied) leaves the
					// record as it was: leasable again.
					q.m.mu.Lock()
					if c.r.stale != 0 {
						c.r.stale = 0
						q.m.settle(c.r)
					}
					q.m.mu.Unlock()
					still = false
				}
				if still {
					left = append(left, c)
				}
			}
			cancel()
			cs = left
		}
	}()
}

// refresh reads a key the mirror holds an old revision of and applies it;
// it reports whether the read succeeded.
func (q *Queue) refresh(ctx context.Context, key string, had uint64) bool {
	e, err := q.kv.Get(ctx, key)
	q.m.mu.Lock()
	defer q.m.mu.Unlock()
	switch {
	case err == nil:
		q.m.apply(key, e.Revision(), e.Value(), false)
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		q.m.apply(key, had+1, nil, true)
	default:
		return false
	}
	return true
}
