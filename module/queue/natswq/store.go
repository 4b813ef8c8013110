package natswq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// maxListScan bounds the records one List call looks at per partition;
	// a page may come back short with a cursor to go on from.
	maxListScan = 20000
	// chunk bounds the writes one operator call pipelines at once.
	chunk = 1000
)

// Get reads the delivery and its history from its partition (any node can),
// and shows the lease when this node holds it (leases live in the owner's
// memory only: on another node a leased delivery reads as pending).
func (q *Queue) Get(ctx context.Context, id string) (*queue.Delivery, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	if id == "" || len(id) > maxIDLen {
		return nil, fmt.Errorf("delivery %q: %w", id, queue.ErrNotFound)
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	p, rc, rev, err := q.findRecord(octx, id)
	if err != nil {
		return nil, q.storeErr(ctx, "reading a delivery", err)
	}
	d := rc.Delivery
	if rc.Chunks > 0 {
		if d.Request.Body, err = q.readBlob(octx, p, "d", id, rc.Chunks); err != nil {
			return nil, q.fail(ctx, "reading a delivery", err)
		}
	}
	if m := p.mirror(); m != nil {
		m.mu.Lock()
		if r := m.recs[id]; r != nil && r.rev == rev && r.d.State == queue.Leased {
			d.State, d.LeasedUntil = queue.Leased, r.d.LeasedUntil
		}
		m.mu.Unlock()
	}
	if d.Attempts, err = q.history(octx, p, id); err != nil {
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

func (q *Queue) getRecord(ctx context.Context, p *part, id string) (*record, uint64, error) {
	e, err := p.kv.Get(ctx, deliveryKey(id))
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

// findRecord finds a delivery's partition (an id does not name it): a
// partition this node owns knows its records; the others are asked at once,
// in parallel.
func (q *Queue) findRecord(ctx context.Context, id string) (*part, *record, uint64, error) {
	for _, p := range q.parts {
		if m := p.mirror(); m != nil {
			m.mu.Lock()
			_, ok := m.recs[id]
			m.mu.Unlock()
			if ok {
				rc, rev, err := q.getRecord(ctx, p, id)
				return p, rc, rev, err
			}
		}
	}
	type found struct {
		p   *part
		rc  *record
		rev uint64
		err error
	}
	res := make([]found, len(q.parts))
	var wg sync.WaitGroup
	for i, p := range q.parts {
		wg.Go(func() {
			rc, rev, err := q.getRecord(ctx, p, id)
			res[i] = found{p, rc, rev, err}
		})
	}
	wg.Wait()
	var lastErr error
	for _, f := range res {
		if f.err == nil {
			return f.p, f.rc, f.rev, nil
		}
		if !errors.Is(f.err, queue.ErrNotFound) {
			lastErr = f.err
		}
	}
	if lastErr != nil {
		return nil, nil, 0, lastErr
	}
	return nil, nil, 0, fmt.Errorf("delivery %s: %w", id, queue.ErrNotFound)
}

// listPos is a place in newest-first order.
type listPos struct {
	created int64
	id      string
}

func (a listPos) less(b listPos) bool {
	return a.created < b.created || a.created == b.created && a.id < b.id
}

// List merges, newest first, what the partitions this node owns hold (each
// read from its indexes, at most maxListScan records a call). Partitions
// other nodes own are listed on those nodes.
func (q *Queue) List(ctx context.Context, f queue.Filter) (queue.Page, error) {
	if err := q.check(ctx); err != nil {
		return queue.Page{}, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	var cur *listPos
	if f.Cursor != "" {
		c, id, ok := strings.Cut(f.Cursor, ":")
		n, err := strconv.ParseInt(c, 10, 64)
		if !ok || err != nil {
			return queue.Page{}, fmt.Errorf("list cursor %q is not one this queue gave out", f.Cursor)
		}
		cur = &listPos{n, id}
	}
	var all []*rec
	var cutoff *listPos // the newest place a partition stopped scanning at
	full := false       // a partition filled the page: it may hold more
	for _, p := range q.parts {
		rs, stop, err := q.listPart(ctx, p, f, cur, limit)
		if err != nil {
			return queue.Page{}, err
		}
		all = append(all, rs...)
		full = full || len(rs) == limit
		if stop != nil && (cutoff == nil || cutoff.less(*stop)) {
			cutoff = stop
		}
	}
	sort.Slice(all, func(i, j int) bool { return listLess(all[j], all[i]) })
	var page queue.Page
	for _, r := range all {
		pos := listPos{r.created, r.id}
		if cutoff != nil && pos.less(*cutoff) {
			break
		}
		if len(page.Deliveries) == limit {
			break
		}
		page.Deliveries = append(page.Deliveries, r.copyOut())
	}
	switch {
	case len(page.Deliveries) == limit && (len(all) > limit || full):
		last := page.Deliveries[len(page.Deliveries)-1]
		page.Next = strconv.FormatInt(last.CreatedAt.UnixNano(), 10) + ":" + last.ID
	case cutoff != nil:
		page.Next = strconv.FormatInt(cutoff.created, 10) + ":" + cutoff.id
	}
	return page, nil
}

// listPart lists one partition: from this node's mirror when it owns it,
// else from its owner.
func (q *Queue) listPart(ctx context.Context, p *part, f queue.Filter, cur *listPos, limit int) ([]*rec, *listPos, error) {
	if m := p.mirror(); m != nil {
		return m.list(ctx, f, cur, limit)
	}
	req := rpcReq{Op: "list", Filter: f, Limit: limit}
	if cur != nil {
		req.Cur = &listPosJSON{cur.created, cur.id}
	}
	resp, err := q.ask(ctx, p.i, req)
	if err != nil || resp == nil {
		if err != nil {
			err = q.fail(ctx, fmt.Sprintf("listing partition %d", p.i), err)
		}
		return nil, nil, err
	}
	rs := make([]*rec, len(resp.Recs))
	for i, r := range resp.Recs {
		rs[i] = &rec{id: r.D.ID, d: r.D, rev: r.Rev, pos: r.Pos, chunks: r.Chunks, created: r.D.CreatedAt.UnixNano()}
	}
	var stop *listPos
	if resp.Stop != nil {
		stop = &listPos{resp.Stop.Created, resp.Stop.ID}
	}
	return rs, stop, nil
}

// list returns up to limit records matching f older than cur, newest
// first (copies), and where it stopped when it gave up scanning early.
func (m *mirror) list(ctx context.Context, f queue.Filter, cur *listPos, limit int) ([]*rec, *listPos, error) {
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
	if cur != nil {
		i = ix.search(cur.created, cur.id) - 1
	}
	var out []*rec
	for scanned := 0; i >= 0; i-- {
		if scanned%256 == 0 && ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		r := ix.s[i]
		scanned++
		if matches(f, &r.d) {
			c := *r
			out = append(out, &c)
			if len(out) == limit {
				return out, nil, nil
			}
		}
		if scanned >= maxListScan && i > 0 {
			return out, &listPos{r.created, r.id}, nil
		}
	}
	return out, nil, nil
}

func matches(f queue.Filter, d *queue.Delivery) bool {
	return (f.State == "" || d.State == f.State) && (f.Webhook == "" || d.Webhook == f.Webhook) &&
		(f.Event == "" || d.Event == f.Event) && (f.CallID == "" || d.CallID == f.CallID) &&
		(f.Target == "" || d.Target == f.Target) && (f.EventID == "" || d.EventID == f.EventID)
}

// Stats adds up the partitions: the ones this node owns exactly, the others
// as their owners published them (every second).
func (q *Queue) Stats(ctx context.Context) (queue.Stats, error) {
	if err := q.check(ctx); err != nil {
		return queue.Stats{}, err
	}
	var s queue.Stats
	for _, p := range q.parts {
		var ps queue.Stats
		if m := p.mirror(); m != nil {
			ps = m.stats()
		} else {
			q.counts.mu.Lock()
			ps = q.counts.s[p.i]
			q.counts.mu.Unlock()
		}
		s.Pending += ps.Pending
		s.Leased += ps.Leased
		s.Delivered += ps.Delivered
		s.Dead += ps.Dead
		if !ps.OldestPending.IsZero() && (s.OldestPending.IsZero() || ps.OldestPending.Before(s.OldestPending)) {
			s.OldestPending = ps.OldestPending
		}
	}
	return s, nil
}

// claim is one record an operator call rewrites, copied with its revision.
type claim struct {
	p      *part
	d      queue.Delivery
	rev    uint64
	pos    uint64
	chunks int
}

// deadClaims returns the dead deliveries named (without ids: every dead
// one, asked of the owners of partitions this node does not own), with
// their revisions.
func (q *Queue) deadClaims(ctx context.Context, ids []string) ([]claim, error) {
	var out []claim
	if len(ids) == 0 {
		for _, p := range q.parts {
			m := p.mirror()
			if m == nil {
				resp, err := q.ask(ctx, p.i, rpcReq{Op: "dead"})
				if err != nil {
					return nil, err
				}
				if resp != nil {
					for _, r := range resp.Recs {
						out = append(out, claim{p: p, d: r.D, rev: r.Rev, pos: r.Pos, chunks: r.Chunks})
					}
				}
				continue
			}
			m.mu.Lock()
			for _, r := range m.byState[queue.Dead].s {
				out = append(out, claim{p: p, d: r.d, rev: r.rev, pos: r.pos, chunks: r.chunks})
			}
			m.mu.Unlock()
		}
		return out, nil
	}
	for _, id := range ids {
		if id == "" || len(id) > maxIDLen {
			continue
		}
		p, rc, rev, err := q.findRecord(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if rc.State == queue.Dead {
			out = append(out, claim{p: p, d: rc.Delivery, rev: rev, pos: rc.Pos, chunks: rc.Chunks})
		}
	}
	return out, nil
}

// RetryDead makes dead deliveries pending again, each written expecting
// the revision it was dead at, and at the back of its order key.
func (q *Queue) RetryDead(ctx context.Context, ids ...string) (int, error) {
	if err := q.check(ctx); err != nil {
		return 0, err
	}
	octx, cancel := q.opCtx(ctx)
	cs, err := q.deadClaims(octx, ids)
	cancel()
	if err != nil {
		return 0, q.fail(ctx, "finding dead deliveries", err)
	}
	now := time.Now()
	return q.rewrite(ctx, "retrying dead deliveries", cs, func(c *claim) put {
		revive(&c.d, now)
		return put{key: deliveryKey(c.d.ID), val: encodeRecord(&c.d, 0, c.chunks), check: true, expect: c.rev}
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

// rewrite writes one put per claim, pipelined per partition, applies the
// ones that took to the owner's mirror when that is this node, and counts
// them.
func (q *Queue) rewrite(ctx context.Context, what string, cs []claim, mk func(*claim) put) (int, error) {
	byPart := map[*part][]claim{}
	for _, c := range cs {
		byPart[c.p] = append(byPart[c.p], c)
	}
	n := 0
	for p, cs := range byPart {
		for len(cs) > 0 {
			batch := cs[:min(len(cs), chunk)]
			cs = cs[len(batch):]
			puts := make([]put, len(batch))
			for i := range batch {
				puts[i] = mk(&batch[i])
			}
			octx, cancel := q.opCtx(ctx)
			revs, errs := q.writeAll(octx, p.prefix, puts)
			cancel()
			var lastErr error
			m := p.mirror()
			for i, pt := range puts {
				switch {
				case errs[i] == nil:
					if m != nil {
						m.mu.Lock()
						m.apply(pt.key, revs[i], pt.val, pt.del)
						m.mu.Unlock()
					}
					n++
				case !isCASConflict(errs[i]):
					lastErr = errs[i]
				}
			}
			if m != nil {
				m.signal()
			}
			if lastErr != nil {
				return n, q.fail(ctx, what, lastErr)
			}
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
	if nd == nil || nd.ID == "" || len(nd.ID) > maxIDLen {
		return fmt.Errorf("redeliver without an id: %w", queue.ErrNotFound)
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	for try := 0; try < 3; try++ {
		p, rc, rev, err := q.findRecord(octx, nd.ID)
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
		puts := q.recordPuts(&d, 0, rev)
		pt := puts[0]
		revs, err := q.batch(octx, p.prefix, puts)
		if isCASConflict(err) {
			continue
		}
		if err != nil {
			return q.fail(ctx, "redelivering", err)
		}
		if m := p.mirror(); m != nil {
			m.mu.Lock()
			m.apply(pt.key, revs[0], pt.val, false)
			m.mu.Unlock()
			m.signal()
		}
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
	octx, cancel := q.opCtx(ctx)
	cs, err := q.deadClaims(octx, ids)
	cancel()
	if err != nil {
		return 0, q.fail(ctx, "finding dead deliveries", err)
	}
	return q.removeWithHistory(ctx, "deleting dead deliveries", cs)
}

// removeWithHistory deletes records, each expecting its revision, and the
// histories of the ones that went (a history is kept while its record is).
func (q *Queue) removeWithHistory(ctx context.Context, what string, cs []claim) (int, error) {
	var gone []claim
	var mu sync.Mutex
	n, err := q.rewrite(ctx, what, cs, func(c *claim) put {
		return put{key: deliveryKey(c.d.ID), check: true, expect: c.rev, del: true}
	})
	// Which ones took: the record is gone or newer. Read back only when
	// some were refused (rare: a retry by hand raced the delete).
	if n == len(cs) {
		gone = cs
	} else {
		for _, c := range cs {
			octx, cancel := q.opCtx(ctx)
			_, rev, gerr := q.getRecord(octx, c.p, c.d.ID)
			cancel()
			if errors.Is(gerr, queue.ErrNotFound) || gerr == nil && rev == c.rev {
				mu.Lock()
				gone = append(gone, c)
				mu.Unlock()
			}
		}
	}
	q.dropHistories(ctx, gone)
	return n, err
}

// dropHistories removes the attempt histories of removed deliveries (best
// effort: an orphan history is never read).
func (q *Queue) dropHistories(ctx context.Context, cs []claim) {
	byPart := map[*part][]put{}
	for _, c := range cs {
		byPart[c.p] = append(byPart[c.p], put{key: historyKey(c.d.ID), del: true})
	}
	for p, puts := range byPart {
		for len(puts) > 0 {
			b := puts[:min(len(puts), chunk)]
			puts = puts[len(b):]
			octx, cancel := q.opCtx(ctx)
			q.writeAll(octx, p.prefix, b)
			cancel()
		}
	}
}

// GetEvent reads a stored event from its partition.
func (q *Queue) GetEvent(ctx context.Context, id string) (*queue.Event, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	if id == "" || len(id) > maxIDLen {
		return nil, fmt.Errorf("event %q: %w", id, queue.ErrNotFound)
	}
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	vals := make([][]byte, len(q.parts))
	errs := make([]error, len(q.parts))
	var wg sync.WaitGroup
	for i, p := range q.parts {
		wg.Go(func() {
			e, err := p.kv.Get(octx, eventKey(id))
			if err == nil {
				vals[i] = e.Value()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	var lastErr error
	for i := range q.parts {
		if errs[i] == nil {
			er, err := decodeEvent(vals[i])
			if err != nil {
				return nil, fmt.Errorf("event %s: unreadable record: %v", id, err)
			}
			if er.Chunks > 0 {
				if er.Data, err = q.readBlob(octx, q.parts[i], "e", id, er.Chunks); err != nil {
					return nil, q.fail(ctx, "reading an event", err)
				}
			}
			return &er.Event, nil
		}
		if !errors.Is(errs[i], jetstream.ErrKeyNotFound) {
			lastErr = errs[i]
		}
	}
	if lastErr != nil {
		return nil, q.fail(ctx, "reading an event", lastErr)
	}
	return nil, fmt.Errorf("event %s: %w", id, queue.ErrNotFound)
}

// SetPause stores (p != nil) or removes a pause in the meta bucket; every
// node's Lease skips a paused webhook as soon as its pause watch has seen
// the change.
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
	rev, err := q.write(octx, q.metaPfx, pt)
	if err != nil {
		return q.fail(ctx, "storing a pause", err)
	}
	q.pz.apply(key, rev, pt.val, pt.del)
	q.wake.signal()
	return nil
}

// Pauses lists paused webhooks as this node's pause watch knows them.
func (q *Queue) Pauses(ctx context.Context) ([]queue.Pause, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	return q.pz.list(), nil
}
