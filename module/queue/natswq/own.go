package natswq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	// lockTTL is how long a partition lock holds without renewal: a node
	// that died is replaced after at most this long.
	lockTTL = 5 * time.Second
	// ownEvery is how often a node renews its locks, publishes its counts
	// and rebalances.
	ownEvery = time.Second
)

// lockVal is the value of o.<i> and n.<node>.
type lockVal struct {
	Node  string `json:"node"`
	Until int64  `json:"until_ms"`
}

func lockKey(i int) string    { return fmt.Sprintf("o.%d", i) }
func statsKey(i int) string   { return fmt.Sprintf("s.%d", i) }
func nodeKey(n string) string { return "n." + token(n) }
func (q *Queue) lockVal() []byte {
	return encode(lockVal{Node: q.node, Until: time.Now().Add(lockTTL).UnixMilli()})
}

func (q *Queue) ownLoop(bctx context.Context) {
	defer q.bg.Done()
	t := time.NewTicker(ownEvery)
	defer t.Stop()
	for {
		select {
		case <-bctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(bctx, 3*ownEvery)
		if err := q.ownRound(ctx, bctx, false); err != nil && bctx.Err() == nil {
			q.logger.Warn("nats queue: partition ownership round failed; trying again in a second", zap.Error(err))
		}
		cancel()
	}
}

// ownRound renews this node's locks (dropping any it lost), publishes the
// counts of its partitions, gives back what it holds over its fair share
// and takes unowned partitions up to it.
func (q *Queue) ownRound(ctx, bctx context.Context, first bool) error {
	q.ownMu.Lock()
	defer q.ownMu.Unlock()
	if _, err := q.meta.Put(ctx, nodeKey(q.node), q.lockVal()); err != nil {
		return err
	}
	live, err := q.liveNodes(ctx)
	if err != nil {
		return err
	}
	fair := (len(q.parts) + live - 1) / live
	owned := 0
	for _, p := range q.parts {
		p.mu.Lock()
		m, rev := p.m, p.lockRev
		p.mu.Unlock()
		if m == nil {
			continue
		}
		nrev, err := q.meta.Update(ctx, lockKey(p.i), q.lockVal(), rev)
		if isCASConflict(err) {
			// A renewal that timed out here may still have been stored:
			// the lock then names this node at a newer revision. Adopt it
			// rather than give up partitions nobody took.
			if e, gerr := q.meta.Get(ctx, lockKey(p.i)); gerr == nil {
				var lv lockVal
				if decodeJSON(e.Value(), &lv) == nil && lv.Node == q.node {
					nrev, err = q.meta.Update(ctx, lockKey(p.i), q.lockVal(), e.Revision())
				}
			}
		}
		switch {
		case err == nil:
			p.mu.Lock()
			p.lockRev = nrev
			p.mu.Unlock()
			owned++
			_, _ = q.meta.Put(ctx, statsKey(p.i), encode(m.published()))
		case isCASConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound):
			q.logger.Warn("nats queue: lost a partition to another node (this node did not renew its lock in time); its leases here are void",
				zap.Int("partition", p.i), zap.String("node", q.node))
			p.drop()
		default:
			return err
		}
	}
	for i := len(q.parts) - 1; i >= 0 && owned > fair; i-- {
		p := q.parts[i]
		p.mu.Lock()
		rev := p.lockRev
		p.mu.Unlock()
		if rev == 0 {
			continue
		}
		p.drop()
		_ = q.meta.Delete(ctx, lockKey(p.i), jetstream.LastRevision(rev))
		owned--
		q.logger.Info("nats queue: gave a partition back for another node to take", zap.Int("partition", p.i), zap.Int("fair_share", fair))
	}
	now := time.Now().UnixMilli()
	for _, p := range q.parts {
		if owned >= fair {
			break
		}
		if p.owned() {
			continue
		}
		var rev uint64
		e, err := q.meta.Get(ctx, lockKey(p.i))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev, err = q.meta.Create(ctx, lockKey(p.i), q.lockVal())
		case err != nil:
			return err
		default:
			var lv lockVal
			if decodeJSON(e.Value(), &lv) != nil || lv.Node != q.node && lv.Until > now {
				continue
			}
			rev, err = q.meta.Update(ctx, lockKey(p.i), q.lockVal(), e.Revision())
		}
		if isCASConflict(err) || errors.Is(err, jetstream.ErrKeyExists) {
			continue // another node was quicker
		}
		if err != nil {
			return err
		}
		lctx := ctx
		if first {
			lctx = bctx // loading a large partition may take longer than a round
		}
		if err := q.load(lctx, p, rev); err != nil {
			_ = q.meta.Delete(ctx, lockKey(p.i), jetstream.LastRevision(rev))
			return fmt.Errorf("loading partition %d: %w", p.i, err)
		}
		owned++
	}
	q.refreshCounts(ctx)
	return nil
}

// liveNodes counts the nodes whose heartbeat has not run out (at least 1:
// this one).
func (q *Queue) liveNodes(ctx context.Context) (int, error) {
	l, err := q.meta.ListKeysFiltered(ctx, "n.>")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 1, nil
		}
		return 0, err
	}
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	now := time.Now().UnixMilli()
	n := 0
	for _, k := range keys {
		e, err := q.meta.Get(ctx, k)
		if err != nil {
			continue
		}
		var lv lockVal
		if decodeJSON(e.Value(), &lv) == nil && lv.Until > now {
			n++
		}
	}
	return max(n, 1), nil
}

// releaseAll gives back every lock this node holds and its heartbeat, so
// other nodes take its partitions at once.
func (q *Queue) releaseAll(ctx context.Context, revs map[int]uint64) {
	for i, rev := range revs {
		_ = q.meta.Delete(ctx, lockKey(i), jetstream.LastRevision(rev))
	}
	_ = q.meta.Delete(ctx, nodeKey(q.node))
}

func (q *Queue) ownedList() []int {
	var out []int
	for _, p := range q.parts {
		if p.owned() {
			out = append(out, p.i)
		}
	}
	return out
}

// countCache holds the counts owners publish for their partitions, so a
// node can answer Stats and the max_pending cap for partitions it does not
// own (at most about a second old).
type countCache struct {
	mu sync.Mutex
	s  []queue.Stats
	t  []map[string][4]int // per partition: its owner's counts by target
}

func newCountCache(n int) *countCache {
	return &countCache{s: make([]queue.Stats, n), t: make([]map[string][4]int, n)}
}

func (q *Queue) refreshCounts(ctx context.Context) {
	for _, p := range q.parts {
		if p.owned() {
			continue
		}
		var s publishedCounts
		if e, err := q.meta.Get(ctx, statsKey(p.i)); err == nil {
			_ = decodeJSON(e.Value(), &s)
		}
		q.counts.mu.Lock()
		q.counts.s[p.i] = s.Stats
		q.counts.t[p.i] = s.Targets
		q.counts.mu.Unlock()
	}
}

// stats counts the mirror's records.
func (m *mirror) stats() queue.Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := queue.Stats{
		Pending: m.counts[queue.Pending], Leased: m.counts[queue.Leased],
		Delivered: m.counts[queue.Delivered], Dead: m.counts[queue.Dead],
	}
	if len(m.age) > 0 {
		s.OldestPending = m.age[0].d.CreatedAt
	}
	return s
}
