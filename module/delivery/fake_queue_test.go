package delivery

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/embedded"
)

// testQueue is the real embedded queue in a temporary directory, with a few
// hooks for the pool's tests: failing the first Lease calls, counting
// releases, and noticing a delivery leased twice at once.
type testQueue struct {
	*embedded.Queue
	t *testing.T

	mu           sync.Mutex
	leaseCalls   int
	leaseErrs    int // fail this many Lease calls first
	releases     int
	held         map[string]bool
	doubleLeased []string
	n            int
}

func newMemQueue(t *testing.T) *testQueue {
	q, err := embedded.Open(embedded.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return &testQueue{Queue: q, t: t, held: map[string]bool{}}
}

// add enqueues deliveries, one envelope each, as they are (history included).
func (q *testQueue) add(ds ...*queue.Delivery) {
	q.t.Helper()
	for _, d := range ds {
		q.mu.Lock()
		q.n++
		n := q.n
		q.mu.Unlock()
		env := &queue.Envelope{Event: queue.Event{ID: "ev-" + d.ID, Target: d.Target, Name: d.Event, ReceivedAt: time.Now()}, Deliveries: []*queue.Delivery{d}}
		_ = n
		if _, err := q.Queue.Enqueue(context.Background(), env); err != nil {
			q.t.Fatalf("enqueue %s: %v", d.ID, err)
		}
	}
}

func (q *testQueue) get(id string) *queue.Delivery {
	d, err := q.Queue.Get(context.Background(), id)
	if err != nil {
		q.t.Errorf("get %s: %v", id, err)
		return &queue.Delivery{}
	}
	return d
}

func (q *testQueue) releaseCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.releases
}

func (q *testQueue) Lease(ctx context.Context, req queue.LeaseRequest) ([]queue.Lease, error) {
	q.mu.Lock()
	q.leaseCalls++
	if q.leaseErrs > 0 {
		q.leaseErrs--
		q.mu.Unlock()
		return nil, errors.New("injected lease failure")
	}
	q.mu.Unlock()
	ls, err := q.Queue.Lease(ctx, req)
	q.mu.Lock()
	for _, l := range ls {
		if q.held[l.Delivery.ID] {
			q.doubleLeased = append(q.doubleLeased, l.Delivery.ID)
		}
		q.held[l.Delivery.ID] = true
	}
	q.mu.Unlock()
	return ls, err
}

func (q *testQueue) done(t queue.Token) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for id := range q.held {
		if len(t) > len(id) && string(t[len(t)-len(id):]) == id {
			delete(q.held, id)
		}
	}
}

func (q *testQueue) Ack(ctx context.Context, t queue.Token, a queue.Attempt) error {
	q.done(t)
	return q.Queue.Ack(ctx, t, a)
}

func (q *testQueue) Retry(ctx context.Context, t queue.Token, a queue.Attempt, next time.Time, reason string) error {
	q.done(t)
	return q.Queue.Retry(ctx, t, a, next, reason)
}

func (q *testQueue) Dead(ctx context.Context, t queue.Token, a queue.Attempt, reason string) error {
	q.done(t)
	return q.Queue.Dead(ctx, t, a, reason)
}

func (q *testQueue) Release(ctx context.Context, t queue.Token, next time.Time) error {
	q.done(t)
	q.mu.Lock()
	q.releases++
	q.mu.Unlock()
	return q.Queue.Release(ctx, t, next)
}

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
