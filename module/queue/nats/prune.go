package nats

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Prune removes delivered deliveries and events that retention no longer
// keeps (delete markers, each expecting the revision the mirror holds), and
// purges dedup keys written before the cutoff.
func (q *Queue) Prune(ctx context.Context, r queue.PruneRequest) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	if !r.DeliveredBefore.IsZero() {
		var cs []claim
		q.m.mu.Lock()
		for _, rc := range q.m.byState[queue.Delivered].s {
			if rc.d.FinishedAt.Before(r.DeliveredBefore) {
				cs = append(cs, claim{r: rc, d: rc.d, rev: rc.rev})
			}
		}
		q.m.mu.Unlock()
		if _, err := q.rewrite(ctx, "pruning delivered deliveries", cs, func(c *claim) put {
			return put{key: deliveryKey(c.d.ID), check: true, expect: c.rev, del: true}
		}); err != nil {
			return err
		}
		q.dropHistories(ctx, cs)
	}
	if !r.EventsBefore.IsZero() {
		var cs []claim
		q.m.mu.Lock()
		for id, e := range q.m.events {
			if !e.received.Before(r.EventsBefore) {
				continue
			}
			done := true
			for _, did := range e.ids {
				if d := q.m.recs[did]; d != nil && d.d.State != queue.Delivered {
					done = false
					break
				}
			}
			if done {
				cs = append(cs, claim{d: queue.Delivery{ID: id}, rev: e.rev})
			}
		}
		q.m.mu.Unlock()
		if _, err := q.rewrite(ctx, "pruning events", cs, func(c *claim) put {
			return put{key: eventKey(c.d.ID), check: true, expect: c.rev, del: true}
		}); err != nil {
			return err
		}
	}
	if !r.DedupBefore.IsZero() {
		if err := q.pruneDedup(ctx, r); err != nil {
			return q.fail(ctx, "pruning dedup keys", err)
		}
	}
	return nil
}

// pruneDedup purges the dedup keys stored before the cutoff: it finds, by
// binary search over stream sequences, the first dedup key stored at or
// after it, and purges the dedup subjects below that sequence. Stream time
// grows with the sequence, so that is exactly the keys older than the
// cutoff, in a few round trips whatever their number.
func (q *Queue) pruneDedup(ctx context.Context, r queue.PruneRequest) error {
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	s, err := q.js.Stream(octx, "KV_"+q.bucket)
	if err != nil {
		return err
	}
	info, err := s.Info(octx)
	if err != nil {
		return err
	}
	subj := q.prefix + kDedup + ">"
	lo, hi := info.State.FirstSeq, info.State.LastSeq+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := s.GetMsg(octx, mid, jetstream.WithGetMsgSubject(subj))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			hi = mid
		case err != nil:
			return err
		case !m.Time.Before(r.DedupBefore):
			hi = mid
		default:
			lo = m.Sequence + 1
		}
	}
	if lo <= info.State.FirstSeq {
		return nil
	}
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(subj)}
	if lo <= info.State.LastSeq {
		opts = append(opts, jetstream.WithPurgeSequence(lo))
	}
	return s.Purge(octx, opts...)
}
