package embedded

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// benchEnvelope is one event fanned out to three webhooks with a 1 KiB body.
func benchEnvelope(n int64) *queue.Envelope {
	id := fmt.Sprint(n)
	e := env(id)
	for i := range 3 {
		d := dl(fmt.Sprintf("%s-%d", id, i), fmt.Sprint("dest", i))
		d.Request.Body = bytes.Repeat([]byte("x"), 1024)
		e.Deliveries = append(e.Deliveries, d)
	}
	return e
}

func reportBatching(b *testing.B, q *Queue) {
	if c := q.syncs.Load(); c > 0 {
		b.ReportMetric(float64(q.committedOp.Load())/float64(c), "ops/fsync")
	}
}

// BenchmarkEnqueue is one ingest request at a time: every Enqueue pays its
// own fsync.
func BenchmarkEnqueue(b *testing.B) {
	q := openT(b, b.TempDir(), Options{})
	var n int64
	for b.Loop() {
		n++
		if _, err := q.Enqueue(ctx, benchEnvelope(n)); err != nil {
			b.Fatal(err)
		}
	}
	reportBatching(b, q)
}

// BenchmarkEnqueueParallel is many concurrent ingest requests (32 per CPU);
// group commit shares fsyncs between them.
func BenchmarkEnqueueParallel(b *testing.B) {
	q := openT(b, b.TempDir(), Options{})
	var n atomic.Int64
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Enqueue(ctx, benchEnvelope(n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportBatching(b, q)
}

// BenchmarkLeaseAck is the delivery path: lease one and ack it.
func BenchmarkLeaseAck(b *testing.B) {
	q := openT(b, b.TempDir(), Options{})
	const pre = 20000
	for i := 0; i < pre; i += 500 {
		e := env(fmt.Sprint(i))
		for j := range 500 {
			e.Deliveries = append(e.Deliveries, dl(fmt.Sprintf("p%d-%d", i, j), "a"))
		}
		if _, err := q.Enqueue(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%pre == 0 {
			b.StopTimer()
			for k := 0; k < pre; k += 500 {
				e := env(fmt.Sprint("r", i, k))
				for j := range 500 {
					e.Deliveries = append(e.Deliveries, dl(fmt.Sprintf("r%d-%d-%d", i, k, j), "a"))
				}
				q.Enqueue(ctx, e)
			}
			b.StartTimer()
		}
		ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Minute})
		if err != nil || len(ls) != 1 {
			b.Fatal(len(ls), err)
		}
		if err := q.Ack(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliveryCycle is S1's life of a delivery in the queue: many
// concurrent Enqueues of one event with one delivery and a dedup key,
// then leases and acks until the queue is empty. cpu-µs/delivery is the
// process's user+system CPU (the committer and pebble's flushes and
// compactions included), which a busy shared machine disturbs less than
// ns/op.
func BenchmarkDeliveryCycle(b *testing.B) {
	q := openT(b, b.TempDir(), Options{})
	var n atomic.Int64
	cpu0 := processCPU()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			e := env(fmt.Sprint(i), dl(fmt.Sprint("d", i), "a"))
			e.Deliveries[0].Request.Body = bytes.Repeat([]byte("x"), 600)
			if _, err := q.Enqueue(ctx, e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	ackAll(b, q, 64)
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(n.Load()), "cpu-µs/delivery")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
