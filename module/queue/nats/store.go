package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// maxListScan bounds the records one List call looks at; a page may
	// come back short with a cursor to go on from.
	maxListScan = 20000
	// chunk bounds the writes one operator call pipelines at once.
	chunk = 1000
)

// Get reads the delivery and its history from the bucket (not the mirror),
// so it is current on any node.
func (q *Queue) Get(ctx context.Context, id string) (*queue.Delivery, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	if id == "" || len(id) > maxIDLen {
		return nil, fmt.Errorf("delivery %q: %w", id, queue.ErrNotFound)
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	rc, _, err := q.getRecord(octx, id)
	if err != nil {
		return nil, q.storeErr(ctx, "reading a delivery", err)
	}
	d := rc.Delivery
	if d.Attempts, err = q.history(octx, id); err != nil {
		return nil, q.fail(ctx, "reading a delivery's history", err)
	}
	return &d, nil
}

func (q *Queue) storeErr(ctx context.Context, what string, err error) error {
	if errors.Is(err, queue.ErrNotFound) {
		return err
	}
	return q.fail(ctx, what, err)
}

func (q *Queue) getRecord(ctx context.Context, id string) (*record, uint64, error) {
	e, err := q.kv.Get(ctx, deliveryKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("delivery %s: %w", id, queue.ErrNotFound)
	}
	if err != nil {
		return nil, 0, err
	}
	rc, err := decodeRecord(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("delivery %s: unreadable record: %v", id, err)
	}
	if rc.Pos == 0 {
		rc.Pos = e.Revision()
	}
	return rc, e.Revision(), nil
}

// List reads the mirror's indexes: the smallest index among the filter's
// fields, newest first from the cursor, at most maxListScan records a call.
func (q *Queue) List(ctx context.Context, f queue.Filter) (queue.Page, error) {
	if err := q.check(ctx); err != nil {
		return queue.Page{}, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	var (
		curCreated int64
		curID      string
		hasCursor  bool
	)
	if f.Cursor != "" {
		c, id, ok := strings.Cut(f.Cursor, ":")
		n, err := strconv.ParseInt(c, 10, 64)
		if !ok || err != nil {
			return queue.Page{}, fmt.Errorf("list cursor %q is not one this queue gave out", f.Cursor)
		}
		curCreated, curID, hasCursor = n, id, true
	}
	m := q.m
	m.mu.Lock()
	defer m.mu.Unlock()
	ix := &m.all
	consider := func(c *index) {
		if c == nil {
			c = &index{}
		}
		if len(c.s) < len(ix.s) {
			ix = c
		}
	}
	if f.State != "" {
		consider(m.byState[f.State])
	}
	for i, v := range [5]string{f.Webhook, f.Event, f.CallID, f.Target, f.EventID} {
		if v != "" {
			consider(m.byField[i][v])
		}
	}
	i := len(ix.s) - 1
	if hasCursor {
		i = ix.search(curCreated, curID) - 1
	}
	var page queue.Page
	for scanned := 0; i >= 0; i-- {
		if scanned%256 == 0 && ctx.Err() != nil {
			return queue.Page{}, ctx.Err()
		}
		r := ix.s[i]
		scanned++
		if matches(f, &r.d) {
			page.Deliveries = append(page.Deliveries, r.copyOut())
			if len(page.Deliveries) == limit {
				break
			}
		}
		if scanned >= maxListScan {
			break
		}
	}
	if i > 0 {
		r := ix.s[i]
		page.Next = strconv.FormatInt(r.created, 10) + ":" + r.id
	}
	return page, nil
}

func matches(f queue.Filter, d *queue.Delivery) bool {
	return (f.State == "" || d.State == f.State) && (f.Webhook == "" || d.Webhook == f.Webhook) &&
		(f.Event == "" || d.Event == f.Event) && (f.CallID == "" || d.CallID == f.CallID) &&
		(f.Target == "" || d.Target == f.Target) && (f.EventID == "" || d.EventID == f.EventID)
}

// Stats counts the mirror's records: every node sees the whole cluster's.
func (q *Queue) Stats(ctx context.Context) (queue.Stats, error) {
	if err := q.check(ctx); err != nil {
		return queue.Stats{}, err
	}
	m := q.m
	m.mu.Lock()
	defer m.mu.Unlock()
	s := queue.Stats{
		Pending: m.counts[queue.Pending], Leased: m.counts[queue.Leased],
		Delivered: m.counts[queue.Delivered], Dead: m.counts[queue.Dead],
	}
	if len(m.age) > 0 {
		s.OldestPending = m.age[0].d.CreatedAt
	}
	return s, nil
}

// TargetStats reads the mirror's per-target counters.
func (q *Queue) TargetStats(ctx context.Context, target string) (queue.Stats, error) {
	if err := q.check(ctx); err != nil {
		return queue.Stats{}, err
	}
	m := q.m
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.targets[target]
	if c == nil {
		return queue.Stats{}, nil
	}
	return queue.Stats{Pending: c[0], Leased: c[1], Delivered: c[2], Dead: c[3]}, nil
}

// deadRecs returns the dead deliveries named (all of them without ids),
// copied with their revisions. Called with mu held.
func (m *mirror) deadRecs(ids []string) []claim {
	var out []claim
	add := func(r *rec) {
		if r != nil && r.d.State == queue.Dead {
			out = append(out, claim{r: r, d: r.d, rev: r.rev, pos: r.pos})
		}
	}
	if len(ids) == 0 {
		for _, r := range m.byState[queue.Dead].s {
			add(r)
		}
		return out
	}
	for _, id := range ids {
		add(m.recs[id])
	}
	return out
}

// RetryDead makes dead deliveries pending again, each written expecting
// the revision it was dead at, and at the back of its order key.
func (q *Queue) RetryDead(ctx context.Context, ids ...string) (int, error) {
	if err := q.check(ctx); err != nil {
		return 0, err
	}
	q.m.mu.Lock()
	cs := q.m.deadRecs(ids)
	q.m.mu.Unlock()
	now := time.Now()
	return q.rewrite(ctx, "retrying dead deliveries", cs, func(c *claim) put {
		revive(&c.d, now)
		return put{key: deliveryKey(c.d.ID), val: encodeRecord(&c.d, "", 0), check: true, expect: c.rev}
	})
}

func revive(d *queue.Delivery, now time.Time) {
	d.State = queue.Pending
	d.RetriedAt = now
	d.NextAttempt = now
	d.AttemptCount = 0
	d.FinishedAt = time.Time{}
	d.LeasedUntil = time.Time{}
}

// rewrite writes one put per claim in pipelined chunks, applies the ones
// that took to the mirror and counts them.
func (q *Queue) rewrite(ctx context.Context, what string, cs []claim, mk func(*claim) put) (int, error) {
	n := 0
	for len(cs) > 0 {
		part := cs[:min(len(cs), chunk)]
		cs = cs[len(part):]
		puts := make([]put, len(part))
		for i := range part {
			puts[i] = mk(&part[i])
		}
		octx, cancel := q.opCtx(ctx)
		revs, errs := q.writeAll(octx, puts)
		cancel()
		var lastErr error
		q.m.mu.Lock()
		for i, p := range puts {
			switch {
			case errs[i] == nil:
				q.m.apply(p.key, revs[i], p.val, p.del)
				n++
			case !isCASConflict(errs[i]):
				lastErr = errs[i]
			}
		}
		q.m.mu.Unlock()
		if lastErr != nil {
			return n, q.fail(ctx, what, lastErr)
		}
	}
	return n, nil
}

// Redeliver replaces a dead delivery's request and policy and makes it
// pending.
func (q *Queue) Redeliver(ctx context.Context, nd *queue.Delivery) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	if nd == nil || nd.ID == "" {
		return fmt.Errorf("redeliver without an id: %w", queue.ErrNotFound)
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	for try := 0; try < 3; try++ {
		rc, rev, err := q.getRecord(octx, nd.ID)
		if err != nil {
			return q.storeErr(ctx, "redelivering", err)
		}
		if rc.State != queue.Dead {
			return fmt.Errorf("delivery %s is %s: %w", nd.ID, rc.State, queue.ErrNotDead)
		}
		d := rc.Delivery
		// A new rendering may name another receiver, and be ordered now.
		d.Request, d.Policy = nd.Request, nd.Policy
		d.Destination, d.OrderKey = nd.Destination, nd.OrderKey
		revive(&d, time.Now())
		p := put{key: deliveryKey(d.ID), val: encodeRecord(&d, "", 0), check: true, expect: rev}
		nrev, err := q.write(octx, p)
		if isCASConflict(err) {
			continue
		}
		if err != nil {
			return q.fail(ctx, "redelivering", err)
		}
		q.m.mu.Lock()
		q.m.apply(p.key, nrev, p.val, false)
		q.m.mu.Unlock()
		return nil
	}
	return fmt.Errorf("delivery %s changed while it was being redelivered; try again", nd.ID)
}

// DeleteDead removes dead deliveries: a delete marker expecting the revision
// it was dead at, so one revived meanwhile is kept.
func (q *Queue) DeleteDead(ctx context.Context, ids ...string) (int, error) {
	if err := q.check(ctx); err != nil {
		return 0, err
	}
	q.m.mu.Lock()
	cs := q.m.deadRecs(ids)
	q.m.mu.Unlock()
	n, err := q.rewrite(ctx, "deleting dead deliveries", cs, func(c *claim) put {
		return put{key: deliveryKey(c.d.ID), check: true, expect: c.rev, del: true}
	})
	q.dropHistories(ctx, cs)
	return n, err
}

// dropHistories removes the attempt histories of removed deliveries (best
// effort: an orphan history is never read).
func (q *Queue) dropHistories(ctx context.Context, cs []claim) {
	for len(cs) > 0 {
		part := cs[:min(len(cs), chunk)]
		cs = cs[len(part):]
		puts := make([]put, len(part))
		for i := range part {
			puts[i] = put{key: historyKey(part[i].d.ID), del: true}
		}
		octx, cancel := q.opCtx(ctx)
		q.writeAll(octx, puts)
		cancel()
	}
}

// GetEvent reads a stored event.
func (q *Queue) GetEvent(ctx context.Context, id string) (*queue.Event, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	if id == "" || len(id) > maxIDLen {
		return nil, fmt.Errorf("event %q: %w", id, queue.ErrNotFound)
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	e, err := q.kv.Get(octx, eventKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("event %s: %w", id, queue.ErrNotFound)
	}
	if err != nil {
		return nil, q.fail(ctx, "reading an event", err)
	}
	var er eventRecord
	if err := decodeJSON(e.Value(), &er); err != nil {
		return nil, fmt.Errorf("event %s: unreadable record: %v", id, err)
	}
	return &er.Event, nil
}

// SetPause stores (p != nil) or removes a pause; every node's Lease skips a
// paused webhook as soon as its watch has seen the change.
func (q *Queue) SetPause(ctx context.Context, target, webhook string, p *queue.Pause) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	key := pauseKey(target, webhook)
	pt := put{key: key, del: true}
	if p != nil {
		c := *p
		c.Target, c.Webhook = target, webhook
		pt = put{key: key, val: encode(c)}
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	rev, err := q.write(octx, pt)
	if err != nil {
		return q.fail(ctx, "storing a pause", err)
	}
	q.m.mu.Lock()
	q.m.apply(key, rev, pt.val, pt.del)
	q.m.mu.Unlock()
	return nil
}

// Pauses lists paused webhooks as the mirror knows them.
func (q *Queue) Pauses(ctx context.Context) ([]queue.Pause, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	q.m.mu.Lock()
	defer q.m.mu.Unlock()
	out := make([]queue.Pause, 0, len(q.m.pauses))
	for _, e := range q.m.pauses {
		out = append(out, e.p)
	}
	return out, nil
}
