package queuetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func testConcurrency(t *testing.T, open Opener) {
	t.Run("EnqueueLeaseAck", func(t *testing.T) { testEnqueueLeaseAck(t, open) })
}

// testEnqueueLeaseAck runs producers, workers and readers at once. Leases
// are long, so no delivery may be handed to two workers at the same time, and
// each is acked exactly once; some are retried or released first.
func testEnqueueLeaseAck(t *testing.T, open Opener) {
	h := newHarness(t, open, Options{})
	const producers, envelopes, perEnvelope, workers = 6, 20, 3, 4
	const total = producers * envelopes * perEnvelope

	// Build every envelope up front: the harness's builders are not safe for
	// concurrent use.
	envs := make([][]*queue.Envelope, producers)
	for p := range envs {
		for e := range envelopes {
			var ds []dl
			for i := range perEnvelope {
				ds = append(ds, dl{Webhook: fmt.Sprintf("w%d", i), Destination: []string{destA, destB, destC}[(p+e)%3]})
			}
			envs[p] = append(envs[p], h.env(ev{}, ds...))
		}
	}

	ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
	defer cancel()
	var (
		mu      sync.Mutex
		holding = map[string]bool{}
		acked   = map[string]int{}
		nAcked  atomic.Int64
		ops     atomic.Int64
	)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for _, env := range envs[p] {
				if _, err := h.q.Enqueue(ctx, env); err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
			}
		})
	}
	for w := range workers {
		wg.Go(func() {
			for n := 0; nAcked.Load() < total && ctx.Err() == nil; n++ {
				ls, err := h.q.Lease(ctx, queue.LeaseRequest{Max: 8, Lease: longLease, Wait: 50 * time.Millisecond,
					DefaultDestinationBudget: 4})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Lease: %v", err)
					}
					return
				}
				mu.Lock()
				for _, l := range ls {
					if holding[l.Delivery.ID] {
						t.Errorf("%s leased to two workers at once", l.Delivery.ID)
					}
					holding[l.Delivery.ID] = true
				}
				mu.Unlock()
				for i, l := range ls {
					id := l.Delivery.ID
					mu.Lock()
					delete(holding, id)
					mu.Unlock()
					switch k := ops.Add(1); {
					case k%7 == 0:
						err = h.q.Retry(ctx, l.Token, failAttempt("busy"), time.Now(), "busy")
					case k%11 == 0:
						err = h.q.Release(ctx, l.Token, time.Now())
					case (w+i+n)%5 == 0:
						if err = h.q.Extend(ctx, l.Token, time.Now().Add(longLease)); err == nil {
							err = h.ackCounted(ctx, l, &mu, acked, &nAcked)
						}
					default:
						err = h.ackCounted(ctx, l, &mu, acked, &nAcked)
					}
					if err != nil {
						t.Errorf("outcome for %s: %v", id, err)
					}
				}
			}
		})
	}
	// Readers.
	stop := make(chan struct{})
	var rg sync.WaitGroup
	rg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.q.Stats(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("Stats: %v", err)
			}
			if _, err := h.q.List(ctx, queue.Filter{State: queue.Leased, Limit: 10}); err != nil && ctx.Err() == nil {
				t.Errorf("List: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	wg.Wait()
	close(stop)
	rg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("gave up after 20s with %d of %d delivered", nAcked.Load(), total)
	}
	for _, envs := range envs {
		for _, env := range envs {
			for _, d := range env.Deliveries {
				if acked[d.ID] != 1 {
					t.Errorf("%s acked %d times, want once", d.ID, acked[d.ID])
				}
			}
		}
	}
	h.wantStats(0, 0, total, 0)
}

func (h *harness) ackCounted(ctx context.Context, l queue.Lease, mu *sync.Mutex, acked map[string]int, n *atomic.Int64) error {
	if err := h.q.Ack(ctx, l.Token, okAttempt()); err != nil {
		return err
	}
	mu.Lock()
	acked[l.Delivery.ID]++
	mu.Unlock()
	n.Add(1)
	return nil
}
