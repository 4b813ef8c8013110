package delivery

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// stallAckQueue writes no delivered outcome until gate is closed: a
// stalled disk.
type stallAckQueue struct {
	*testQueue
	gate chan struct{}
}

func (q *stallAckQueue) Ack(ctx context.Context, t queue.Token, a queue.Attempt) error {
	select {
	case <-q.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.testQueue.Ack(ctx, t, a)
}

// TestPoolRecordingFollowsWorkers: while outcomes wait on a stalled disk,
// as many of them as there are workers free their slot for the next
// attempt, after `workers` grew on a reload too (it kept its first size).
func TestPoolRecordingFollowsWorkers(t *testing.T) {
	var hits atomic.Int32
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		hits.Add(1)
	})
	q := &stallAckQueue{testQueue: newMemQueue(t), gate: make(chan struct{})}
	for i := range 10 {
		q.add(newDelivery(fmt.Sprintf("d%d", i), srv.URL, srv.URL, fastPolicy))
	}
	p := NewPool(PoolOptions{Queue: q, Sender: newTestSender(t, SenderOptions{}), Workers: 1, PerDestination: 1})
	p.SetLimits(3, 3)
	p.Start()
	t.Cleanup(func() {
		close(q.gate)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Stop(ctx)
	})
	// 3 outcomes waiting with their slots freed, 3 more holding theirs.
	deadline := time.Now().Add(5 * time.Second)
	for hits.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // and no more than that
	if n := hits.Load(); n != 6 {
		t.Fatalf("%d attempts sent while outcomes could not be written, want 6 (3 workers + 3 outcomes waiting)", n)
	}
}
