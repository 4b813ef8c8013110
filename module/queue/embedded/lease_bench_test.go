package embedded

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// BenchmarkLeaseAck is the delivery side of the queue as the pool drives
// it: lease up to 32 due deliveries, then ack them all at once (group
// commit shares the fsync). Per op is one delivery leased and acked. The
// bodies are 600 bytes, about what a webhook with 7 params sends.
func BenchmarkLeaseAck(b *testing.B) {
	q := open(b, Options{})
	body := bytes.Repeat([]byte("x"), 600)
	const perEvent = 100
	for i := 0; i < b.N; i += perEvent {
		ds := make([]*queue.Delivery, 0, perEvent)
		for j := i; j < min(i+perEvent, b.N); j++ {
			d := delivery(fmt.Sprint("d-", j), "sink")
			d.Request.Body = body
			d.Policy.Secret = []byte("0123456789abcdef0123456789abcdef")
			ds = append(ds, d)
		}
		if _, _, err := q.Enqueue(ctx, fmt.Sprint("e-", i), ds); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	acked := 0
	for acked < b.N {
		ds, err := q.Lease(ctx, time.Now(), 32, time.Minute, nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(ds) == 0 {
			b.Fatalf("nothing due after %d of %d acks", acked, b.N)
		}
		var wg sync.WaitGroup
		for _, d := range ds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := q.Ack(ctx, d.ID, queue.Attempt{Start: time.Now(), Duration: time.Millisecond, Status: 204}); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		acked += len(ds)
	}
	b.StopTimer()
	reportOpsPerTx(b, q)
}
