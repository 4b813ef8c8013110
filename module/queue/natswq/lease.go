package natswq

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

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
	return b.req.Paused[l.hook] || m.pz.has(l.hook) || !b.allow(l)
}

// pick leases up to need due deliveries in memory, one lane at a time
// round-robin. Called with mu held.
func (m *mirror) pick(now time.Time, need int, until time.Time, b *budgets, part int) []queue.Lease {
	var out []queue.Lease
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
			m.detach(r)
			r.d.State = queue.Leased
			r.d.LeasedUntil = until
			r.nonce = newNonce()
			m.attach(r)
			b.take(l, 1)
			d := r.d
			if r.chunks > 0 {
				d.Request.Body = nil
				d.Attempts = make([]queue.Attempt, 0, r.chunks) // marks a body to read; cleared by fillBodies
			}
			out = append(out, queue.Lease{Delivery: &d, Token: leaseToken(part, r.rev, r.nonce, r.id), Until: until})
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

// Lease hands out due deliveries of the partitions this node owns. A
// lease is held in the owner's memory only: nothing is written, and the
// token carries the record's revision, which the outcome's write expects.
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
	// A lease handed out while NATS cannot be reached could not have its
	// outcome recorded: say so instead (the pool waits and tries again).
	if !q.nc.IsConnected() {
		return nil, fmt.Errorf("leasing deliveries: %w: %v", queue.ErrUnavailable, errNotConnected)
	}
	deadline := time.Now().Add(req.Wait)
	b := &budgets{req: &req, dest: map[string]int{}, hook: map[string]int{}}
	for {
		changed := q.wake.wait()
		now := time.Now()
		until := now.Add(req.Lease)
		var out []queue.Lease
		var next time.Time
		n := len(q.parts)
		start := int(q.rr.Add(1)) % n
		for k := 0; k < n && len(out) < req.Max; k++ {
			p := q.parts[(start+k)%n]
			m := p.mirror()
			if m == nil {
				continue
			}
			m.mu.Lock()
			out = append(out, m.pick(now, req.Max-len(out), until, b, p.i)...)
			if nd := m.nextDue(now, b); !nd.IsZero() && (next.IsZero() || nd.Before(next)) {
				next = nd
			}
			m.mu.Unlock()
		}
		if len(out) > 0 {
			return q.fillBodies(ctx, out), nil
		}
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

// fillBodies reads the bodies kept in blobs (large ones) of leased
// deliveries. A lease whose body cannot be read now is released at once
// and left out: it is leased again later.
func (q *Queue) fillBodies(ctx context.Context, ls []queue.Lease) []queue.Lease {
	out := ls[:0]
	for _, l := range ls {
		d := l.Delivery
		if d.Attempts == nil {
			out = append(out, l)
			continue
		}
		chunks := cap(d.Attempts)
		d.Attempts = nil
		tp, _ := parseToken(l.Token, len(q.parts))
		octx, cancel := q.opCtx(context.WithoutCancel(ctx))
		body, err := q.readBlob(octx, q.parts[tp.part], "d", d.ID, chunks)
		cancel()
		if err != nil {
			q.logger.Warn("nats queue: could not read the body of a leased delivery; it is due again in a second", zap.String("delivery", d.ID), zap.Error(err))
			_ = q.Release(context.WithoutCancel(ctx), l.Token, time.Now().Add(time.Second))
			continue
		}
		d.Request.Body = body
		out = append(out, l)
	}
	return out
}
