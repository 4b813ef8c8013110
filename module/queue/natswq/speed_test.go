package natswq

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEnqueueSpeed (only with CALLHOOK_NATS_SPEED set) prints how many
// envelopes 64 goroutines enqueue in 5 s, and where the time goes.
func TestEnqueueSpeed(t *testing.T) {
	if os.Getenv("CALLHOOK_NATS_SPEED") == "" {
		t.Skip("set CALLHOOK_NATS_SPEED to measure")
	}
	q := openTest(t, t.TempDir(), Options{Partitions: 8})
	defer q.Close()
	var n, tClaim, tBatch, tWait atomic.Int64
	speedHook = func(claim, batch, wait time.Duration) {
		tClaim.Add(int64(claim))
		tBatch.Add(int64(batch))
		tWait.Add(int64(wait))
	}
	defer func() { speedHook = nil }()
	stop := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				id := fmt.Sprintf("e%d-%d", w, i)
				e := env(id, dlv("w", "https://r.example:443", ""))
				e.DedupKey = id
				if _, err := q.Enqueue(t.Context(), e); err != nil {
					t.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	k := max(n.Load(), 1)
	t.Logf("%d envelopes in 5s = %.0f/s; per envelope: claim %v, batch %v, wait for own watch %v",
		n.Load(), float64(n.Load())/5, time.Duration(tClaim.Load()/k), time.Duration(tBatch.Load()/k), time.Duration(tWait.Load()/k))
}
