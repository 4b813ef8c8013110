package natswq

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Prune removes, in the partitions this node owns, delivered deliveries
// and events that retention no longer keeps (delete markers, each
// expecting the revision the mirror holds), and purges dedup keys written
// before the cutoff. Every node prunes what it owns: with the retention
// prune running on every node, every partition is pruned by its owner.
func (q *Queue) Prune(ctx context.Context, r queue.PruneRequest) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	for _, p := range q.parts {
		m := p.mirror()
		if m == nil {
			continue
		}
		if !r.DeliveredBefore.IsZero() {
			var cs []claim
			m.mu.Lock()
			for _, rc := range m.byState[queue.Delivered].s {
				if rc.d.FinishedAt.Before(r.DeliveredBefore) {
					cs = append(cs, claim{p: p, d: rc.d, rev: rc.rev})
				}
			}
			m.mu.Unlock()
			if _, err := q.removeWithHistory(ctx, "pruning delivered deliveries", cs); err != nil {
				return err
			}
		}
		if !r.EventsBefore.IsZero() {
			var cs []claim
			m.mu.Lock()
			for id, e := range m.events {
				if !e.received.Before(r.EventsBefore) {
					continue
				}
				done := true
				for _, did := range e.ids {
					if d := m.recs[did]; d != nil && d.d.State != queue.Delivered {
						done = false
						break
					}
				}
				// Sync calls recorded after their event (an envelope without
				// an event) name it by EventID only: keep the event while
				// any of them is not delivered either, so it can be replayed.
				if ix := m.byField[fEventID][id]; done && ix != nil {
					for _, d := range ix.s {
						if d.d.State != queue.Delivered {
							done = false
							break
						}
					}
				}
				if done {
					cs = append(cs, claim{p: p, d: queue.Delivery{ID: id}, rev: e.rev})
				}
			}
			m.mu.Unlock()
			if _, err := q.rewrite(ctx, "pruning events", cs, func(c *claim) put {
				return put{key: eventKey(c.d.ID), check: true, expect: c.rev, del: true}
			}); err != nil {
				return err
			}
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
// binary search over the meta stream's sequences, the first dedup key
// stored at or after it, and purges the dedup subjects below that
// sequence. Stream time grows with the sequence, so that is exactly the
// keys older than the cutoff, in a few round trips whatever their number.
func (q *Queue) pruneDedup(ctx context.Context, r queue.PruneRequest) error {
	octx, cancel := q.opCtx(ctx)
	defer cancel()
	s, err := q.js.Stream(octx, "KV_"+q.bucket+"_META")
	if err != nil {
		return err
	}
	info, err := s.Info(octx)
	if err != nil {
		return err
	}
	subj := q.metaPfx + kDedup + ">"
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
