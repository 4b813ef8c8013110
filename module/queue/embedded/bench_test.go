package embedded

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/callhook/caddy-callhook/module/queue"
)

// benchEvent is one event fanned out to three webhooks with a 1 KiB body.
func benchEvent(n int64) (string, []*queue.Delivery) {
	key := fmt.Sprint("evt-", n)
	ds := make([]*queue.Delivery, 3)
	for i := range ds {
		d := delivery(fmt.Sprintf("%s-%d", key, i), fmt.Sprint("dest", i))
		d.Request.Body = bytes.Repeat([]byte("x"), 1024)
		ds[i] = d
	}
	return key, ds
}

func reportOpsPerTx(b *testing.B, q *Queue) {
	if c := q.commits.Load(); c > 0 {
		b.ReportMetric(float64(q.committedOp.Load())/float64(c), "ops/tx")
	}
}

// BenchmarkEnqueue is one ingest request at a time: every Enqueue pays its
// own fsync.
func BenchmarkEnqueue(b *testing.B) {
	q := open(b, Options{})
	var n int64
	b.ResetTimer()
	for b.Loop() {
		n++
		key, ds := benchEvent(n)
		if _, _, err := q.Enqueue(ctx, key, ds); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportOpsPerTx(b, q)
}

// BenchmarkEnqueueParallel is many concurrent ingest requests (32 per CPU);
// group commit shares fsyncs between them.
func BenchmarkEnqueueParallel(b *testing.B) {
	q := open(b, Options{})
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key, ds := benchEvent(n.Add(1))
			if _, _, err := q.Enqueue(ctx, key, ds); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportOpsPerTx(b, q)
}
