package embedded

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Per-target counters, for TargetStats (the customer portal's counts).
// They move with the state index, in writeIndexes, moveState and
// deleteIndexes, the three places a delivery's state key is written, so
// they cannot drift from it. A batch collects its changes per target and
// writes each touched target's totals (M t <target>) into the same commit;
// a target with nothing left loses its key. A store written by a build
// without them is counted once when it is opened (metaTargetsReady marks
// it done).

var metaTargetsReady = []byte{pMeta, 'T'}

func targetCountKey(target string) []byte { return strKey(pMeta, "t"+target) }

// countTarget records that a delivery of target entered (n=1) or left
// (n=-1) state, in this batch.
func (w *wtx) countTarget(target string, state queue.State, n int64) {
	if w.tc == nil {
		return
	}
	c := w.tc[target]
	if c == nil {
		c = new(counts)
		w.tc[target] = c
	}
	c.add(state, n)
	if *c == (counts{}) {
		// A delivery that moved within the batch: nothing to write.
		delete(w.tc, target)
	}
}

func (c *counts) add(state queue.State, n int64) {
	switch state {
	case queue.Pending, queue.Leased:
		c.pending += n
	case queue.Delivered:
		c.delivered += n
	case queue.Dead:
		c.dead += n
	}
}

// writeTargetCounts puts the totals of the targets a batch touched into
// it, and returns them for publishTargetCounts once it is committed.
func (q *Queue) writeTargetCounts(b *pebble.Batch, delta map[string]*counts) map[string]counts {
	if len(delta) == 0 {
		return nil
	}
	out := q.ttotals
	clear(out)
	q.tmu.Lock()
	for t, d := range delta {
		c := q.tcounts[t]
		c.pending += d.pending
		c.delivered += d.delivered
		c.dead += d.dead
		out[t] = c
	}
	q.tmu.Unlock()
	for t, c := range out {
		if c == (counts{}) {
			_ = b.Delete(targetCountKey(t), nil)
		} else {
			_ = b.Set(targetCountKey(t), encodeCounts(c), nil)
		}
	}
	return out
}

// publishTargetCounts makes a committed batch's totals what TargetStats
// reads.
func (q *Queue) publishTargetCounts(totals map[string]counts) {
	if len(totals) == 0 {
		return
	}
	q.tmu.Lock()
	for t, c := range totals {
		if c == (counts{}) {
			delete(q.tcounts, t)
		} else {
			q.tcounts[t] = c
		}
	}
	q.tmu.Unlock()
}

// loadTargetCounts reads the per-target totals at open, counting them from
// the target index first when the store has none yet.
func (q *Queue) loadTargetCounts() error {
	q.tcounts = map[string]counts{}
	q.tdelta, q.ttotals = map[string]*counts{}, map[string]counts{}
	ready, err := q.getRaw(metaTargetsReady)
	if err != nil {
		return err
	}
	if ready == nil {
		return q.countTargets()
	}
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pMeta}, UpperBound: []byte{pMeta + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		// M len(2) "t" target
		if len(k) < 4 || k[3] != 't' {
			continue
		}
		n := int(k[1])<<8 | int(k[2])
		if len(k) != 3+n {
			continue
		}
		v := it.Value()
		if len(v) != 24 {
			continue
		}
		q.tcounts[string(k[4:])] = counts{int64(getU64(v[:8])), int64(getU64(v[8:16])), int64(getU64(v[16:]))}
	}
	return it.Error()
}

// countTargets counts every delivery by target and state, once, for a
// store written before the counters existed.
func (q *Queue) countTargets() error {
	start := time.Now()
	pfx := []byte{pIndex, ixHook} // X h target webhook ...: every delivery once
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) < 4 {
			continue
		}
		n := int(k[2])<<8 | int(k[3])
		if len(k) < 4+n {
			continue
		}
		target := string(k[4 : 4+n])
		mv, err := q.getRaw(mutableKey(string(it.Value())))
		if err != nil {
			it.Close()
			return err
		}
		if mv == nil {
			continue
		}
		m, err := decodeMutable(mv)
		if err != nil {
			continue
		}
		c := q.tcounts[target]
		c.add(m.state, 1)
		q.tcounts[target] = c
	}
	if err := it.Close(); err != nil {
		return err
	}
	b := q.db.NewBatch()
	defer b.Close()
	for t, c := range q.tcounts {
		_ = b.Set(targetCountKey(t), encodeCounts(c), nil)
	}
	_ = b.Set(metaTargetsReady, []byte{1}, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("writing the per-target counts of queue %s: %w", q.dir, err)
	}
	if len(q.tcounts) > 0 {
		q.log.Info("counted the queue's deliveries by target once, for the dashboard's per-target counts (the queue was written by an older build)",
			zap.String("dir", q.dir), zap.Int("targets", len(q.tcounts)), zap.Duration("took", time.Since(start)))
	}
	return nil
}

// TargetStats counts one target's deliveries by state (see queue.Store).
func (q *Queue) TargetStats(ctx context.Context, target string) (queue.Stats, error) {
	if err := ctx.Err(); err != nil {
		return queue.Stats{}, err
	}
	var st queue.Stats
	err := q.reading(func() error {
		q.tmu.Lock()
		c := q.tcounts[target]
		q.tmu.Unlock()
		leased := 0
		q.sched.mu.Lock()
		for _, lr := range q.sched.leases {
			if lr.st.target == target {
				leased++
			}
		}
		q.sched.mu.Unlock()
		st = queue.Stats{
			Pending:   max(int(c.pending)-leased, 0),
			Leased:    leased,
			Delivered: int(c.delivered),
			Dead:      int(c.dead),
		}
		return nil
	})
	return st, err
}
