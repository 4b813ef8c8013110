package delivery

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// memQueue is an in-memory queue.Queue for tests. It is strict where the
// pool could be sloppy: recording an outcome for a delivery that is not
// leased is an error, and it notices a delivery leased twice at once.
type memQueue struct {
	mu  sync.Mutex
	ds  map[string]*queue.Delivery
	ids []string // insertion order

	leaseCalls   int
	leaseErrs    int // fail this many Lease calls first
	doubleLeased []string
	releases     int
}

var _ queue.Queue = (*memQueue)(nil)

func newMemQueue() *memQueue { return &memQueue{ds: map[string]*queue.Delivery{}} }

func clone(d *queue.Delivery) *queue.Delivery {
	c := *d
	c.Attempts = slices.Clone(d.Attempts)
	c.Request.Header = slices.Clone(d.Request.Header)
	return &c
}

func (q *memQueue) add(ds ...*queue.Delivery) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range ds {
		if d.State == "" {
			d.State = queue.Pending
		}
		q.ds[d.ID] = clone(d)
		q.ids = append(q.ids, d.ID)
	}
}

func (q *memQueue) get(id string) *queue.Delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	return clone(q.ds[id])
}

func (q *memQueue) releaseCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.releases
}

func (q *memQueue) Enqueue(_ context.Context, _ string, ds []*queue.Delivery) ([]queue.Ref, bool, error) {
	q.add(ds...)
	refs := make([]queue.Ref, len(ds))
	for i, d := range ds {
		refs[i] = queue.Ref{ID: d.ID, Webhook: d.Webhook}
	}
	return refs, false, nil
}

func (q *memQueue) Lease(_ context.Context, now time.Time, max int, lease time.Duration, skip func(string) bool) ([]*queue.Delivery, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.leaseCalls++
	if q.leaseErrs > 0 {
		q.leaseErrs--
		return nil, fmt.Errorf("disk on fire")
	}
	var due []*queue.Delivery
	for _, id := range q.ids {
		d := q.ds[id]
		if d.State == queue.Pending && !d.NextAttempt.After(now) {
			due = append(due, d)
		}
	}
	slices.SortStableFunc(due, func(a, b *queue.Delivery) int { return a.NextAttempt.Compare(b.NextAttempt) })
	var out []*queue.Delivery
	for _, d := range due {
		if len(out) >= max {
			break
		}
		if skip != nil && skip(d.Destination) {
			continue
		}
		if !d.LeasedUntil.IsZero() {
			// Lease expired while a worker still held it: only acceptable
			// if the pool really let it lapse.
			q.doubleLeased = append(q.doubleLeased, d.ID)
		}
		d.LeasedUntil = now.Add(lease)
		d.NextAttempt = d.LeasedUntil
		out = append(out, clone(d))
	}
	return out, nil
}

func (q *memQueue) leased(id string) (*queue.Delivery, error) {
	d, ok := q.ds[id]
	if !ok {
		return nil, queue.ErrNotFound
	}
	if d.LeasedUntil.IsZero() || d.State != queue.Pending {
		return nil, fmt.Errorf("delivery %s is not leased", id)
	}
	return d, nil
}

func (q *memQueue) Ack(_ context.Context, id string, a queue.Attempt) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	d, err := q.leased(id)
	if err != nil {
		return err
	}
	d.Attempts = append(d.Attempts, a)
	d.State = queue.Delivered
	d.LeasedUntil = time.Time{}
	d.FinishedAt = a.Start.Add(a.Duration)
	return nil
}

func (q *memQueue) Reschedule(_ context.Context, id string, a queue.Attempt, next time.Time) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	d, err := q.leased(id)
	if err != nil {
		return err
	}
	d.Attempts = append(d.Attempts, a)
	d.LastError = a.Error
	d.LeasedUntil = time.Time{}
	d.NextAttempt = next
	return nil
}

func (q *memQueue) Kill(_ context.Context, id string, a queue.Attempt, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	d, err := q.leased(id)
	if err != nil {
		return err
	}
	if !a.Start.IsZero() {
		d.Attempts = append(d.Attempts, a)
	}
	d.State = queue.Dead
	d.LastError = reason
	d.LeasedUntil = time.Time{}
	d.FinishedAt = time.Now()
	return nil
}

func (q *memQueue) Release(_ context.Context, id string, next time.Time) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	d, err := q.leased(id)
	if err != nil {
		return err
	}
	q.releases++
	d.LeasedUntil = time.Time{}
	d.NextAttempt = next
	return nil
}

func (q *memQueue) NextDue(context.Context) (time.Time, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	ok := false
	for _, d := range q.ds {
		if d.State == queue.Pending && (!ok || d.NextAttempt.Before(next)) {
			next, ok = d.NextAttempt, true
		}
	}
	return next, ok, nil
}

func (q *memQueue) Get(_ context.Context, id string) (*queue.Delivery, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	d, ok := q.ds[id]
	if !ok {
		return nil, queue.ErrNotFound
	}
	return clone(d), nil
}

func (q *memQueue) List(_ context.Context, f queue.Filter) ([]*queue.Delivery, string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*queue.Delivery
	for i := len(q.ids) - 1; i >= 0; i-- {
		d := q.ds[q.ids[i]]
		if f.State == "" || d.State == f.State {
			out = append(out, clone(d))
		}
	}
	return out, "", nil
}

func (q *memQueue) RetryDead(_ context.Context, ids ...string) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	now := time.Now()
	for _, d := range q.ds {
		if d.State == queue.Dead && (len(ids) == 0 || slices.Contains(ids, d.ID)) {
			d.State, d.CreatedAt, d.NextAttempt, d.FinishedAt = queue.Pending, now, now, time.Time{}
			n++
		}
	}
	return n, nil
}

func (q *memQueue) Stats(context.Context) (queue.Stats, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var s queue.Stats
	for _, d := range q.ds {
		switch {
		case d.State == queue.Pending && !d.LeasedUntil.IsZero():
			s.Leased++
		case d.State == queue.Pending:
			s.Pending++
		case d.State == queue.Delivered:
			s.Delivered++
		case d.State == queue.Dead:
			s.Dead++
		}
	}
	return s, nil
}

func (q *memQueue) Prune(context.Context, time.Time, time.Time) error { return nil }
func (q *memQueue) Close() error                                      { return nil }

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
