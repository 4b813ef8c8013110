package natswq

import (
	"context"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Per-target counts, for TargetStats (the customer portal). The owner of a
// partition keeps them in its mirror, moved by attach and detach with the
// partition-wide counts, and publishes them with those every second; a
// node answers for the partitions it owns exactly and for the others from
// what their owners published (at most about a second old), as Stats does.

// publishedCounts is what an owner publishes for a partition (s.<i>).
type publishedCounts struct {
	queue.Stats
	// Targets counts the partition's records by target: pending, leased,
	// delivered, dead.
	Targets map[string][4]int `json:"targets,omitempty"`
}

func stateSlot(s queue.State) int {
	switch s {
	case queue.Pending:
		return 0
	case queue.Leased:
		return 1
	case queue.Delivered:
		return 2
	}
	return 3
}

// countTarget moves r's target counters by n (1: attach, -1: detach); a
// target with nothing left is forgotten. m.mu is held.
func (m *mirror) countTarget(r *rec, n int) {
	c := m.tcounts[r.d.Target]
	if c == nil {
		if n < 0 {
			return
		}
		c = new([4]int)
		m.tcounts[r.d.Target] = c
	}
	c[stateSlot(r.d.State)] += n
	if *c == ([4]int{}) {
		delete(m.tcounts, r.d.Target)
	}
}

// published is what this owner publishes for its partition.
func (m *mirror) published() publishedCounts {
	s := m.stats()
	m.mu.Lock()
	defer m.mu.Unlock()
	t := make(map[string][4]int, len(m.tcounts))
	for k, c := range m.tcounts {
		t[k] = *c
	}
	return publishedCounts{Stats: s, Targets: t}
}

func (m *mirror) targetCounts(target string) [4]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.tcounts[target]; c != nil {
		return *c
	}
	return [4]int{}
}

// TargetStats counts one target's deliveries by state (see queue.Store).
func (q *Queue) TargetStats(ctx context.Context, target string) (queue.Stats, error) {
	if err := q.check(ctx); err != nil {
		return queue.Stats{}, err
	}
	var sum [4]int
	for _, p := range q.parts {
		var c [4]int
		if m := p.mirror(); m != nil {
			c = m.targetCounts(target)
		} else {
			q.counts.mu.Lock()
			c = q.counts.t[p.i][target]
			q.counts.mu.Unlock()
		}
		for i := range sum {
			sum[i] += c[i]
		}
	}
	return queue.Stats{Pending: sum[0], Leased: sum[1], Delivered: sum[2], Dead: sum[3]}, nil
}

func (w *waiting) TargetStats(ctx context.Context, target string) (queue.Stats, error) {
	q, err := w.get()
	if err != nil {
		return queue.Stats{}, err
	}
	return q.TargetStats(ctx, target)
}
