package queuetest

import (
	"errors"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func testClose(t *testing.T, open Opener) {
	t.Run("ErrClosed", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put(ev{}, dl{}, dl{State: queue.Dead})
		l := h.leaseOne(d[0].ID, longLease)
		if err := h.q.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		q, ctx := h.q, h.ctx
		a := okAttempt()
		ops := map[string]func() error{
			"Enqueue": func() error { _, err := q.Enqueue(ctx, h.env(ev{})); return err },
			"Lease": func() error {
				_, err := q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Second, Wait: time.Second})
				return err
			},
			"Ack":        func() error { return q.Ack(ctx, l.Token, a) },
			"Retry":      func() error { return q.Retry(ctx, l.Token, a, time.Now(), "x") },
			"Dead":       func() error { return q.Dead(ctx, l.Token, a, "x") },
			"Release":    func() error { return q.Release(ctx, l.Token, time.Now()) },
			"Extend":     func() error { return q.Extend(ctx, l.Token, time.Now().Add(time.Minute)) },
			"Get":        func() error { _, err := q.Get(ctx, d[0].ID); return err },
			"List":       func() error { _, err := q.List(ctx, queue.Filter{}); return err },
			"Stats":      func() error { _, err := q.Stats(ctx); return err },
			"RetryDead":  func() error { _, err := q.RetryDead(ctx); return err },
			"Redeliver":  func() error { return q.Redeliver(ctx, d[1]) },
			"DeleteDead": func() error { _, err := q.DeleteDead(ctx); return err },
			"GetEvent":   func() error { _, err := q.GetEvent(ctx, d[0].EventID); return err },
			"SetPause": func() error {
				return q.SetPause(ctx, "t1", "w1", &queue.Pause{Target: "t1", Webhook: "w1", Since: time.Now()})
			},
			"Pauses": func() error { _, err := q.Pauses(ctx); return err },
			"Prune":  func() error { return q.Prune(ctx, queue.PruneRequest{DeliveredBefore: time.Now()}) },
		}
		for name, op := range ops {
			start := time.Now()
			if err := op(); !errors.Is(err, queue.ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", name, err)
			}
			if el := time.Since(start); el > slack/2 {
				t.Errorf("%s after Close took %v", name, el)
			}
		}
		if err := q.Close(); err != nil && !errors.Is(err, queue.ErrClosed) {
			t.Errorf("second Close: %v, want nil or ErrClosed", err)
		}
		// The data is still there for the next open.
		h.q = h.open(t, h.dir, h.opts)
		if s := h.stats(); s.Pending+s.Leased != 1 || s.Dead != 1 || s.Delivered != 0 {
			t.Fatalf("Stats after reopen = %+v, want 1 pending or leased and 1 dead", s)
		}
	})

	t.Run("CloseUnblocksLongPoll", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		done := make(chan error, 1)
		go func() {
			_, err := h.q.Lease(h.ctx, queue.LeaseRequest{Max: 1, Lease: longLease, Wait: 10 * time.Second})
			done <- err
		}()
		time.Sleep(150 * time.Millisecond)
		closed := make(chan error, 1)
		go func() { closed <- h.q.Close() }()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, queue.ErrClosed) {
				t.Errorf("long poll cut short by Close: %v, want nil or ErrClosed", err)
			}
		case <-time.After(slack):
			t.Fatal("Close did not end a long poll within a second")
		}
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
		case <-time.After(slack):
			t.Fatal("Close with a long poll running did not return within a second")
		}
		h.q = nil
	})
}
