package queuetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func testLease(t *testing.T, open Opener) {
	t.Run("DueOnly", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		past := h.put1(dl{NextAttempt: time.Now().Add(-time.Hour)})
		now := h.put1(dl{})
		later := time.Now().Add(400 * time.Millisecond)
		soon := h.put1(dl{NextAttempt: later})
		h.put1(dl{NextAttempt: time.Now().Add(time.Hour)})

		ls := h.drain(queue.LeaseRequest{})
		// A drain that ended after soon was due (a loaded machine) may have
		// leased it too; see leaseWhenDue.
		var got []queue.Lease
		if i := slices.IndexFunc(ls, func(l queue.Lease) bool { return l.Delivery.ID == soon.ID }); i >= 0 {
			got, ls = ls[i:i+1], slices.Delete(ls, i, i+1)
			if time.Now().Before(later.Add(-timeTol)) {
				t.Fatalf("leased %s %v before its NextAttempt", soon.ID, time.Until(later))
			}
		}
		h.wantLeased(ls, past, now)
		// The scheduled one is handed out by a long poll once it is due,
		// not before, and without waiting for the whole Wait.
		start := time.Now()
		if got == nil {
			got = h.lease(queue.LeaseRequest{Wait: 3 * time.Second})
			if time.Now().Before(later.Add(-timeTol)) {
				t.Errorf("leased %s %v before its NextAttempt", soon.ID, time.Until(later))
			}
		}
		h.wantLeased(got, soon)
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("long poll took %v to hand out a delivery that became due after 400ms", el)
		}
		h.wantLeased(h.drain(queue.LeaseRequest{}))
		h.wantStats(1, 3, 0, 0)
	})

	t.Run("Max", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		var all []*queue.Delivery
		for range 5 {
			all = append(all, h.put1(dl{}))
		}
		var got []queue.Lease
		for range 10 {
			ls := h.lease(queue.LeaseRequest{Max: 2})
			if len(ls) == 0 {
				break
			}
			got = append(got, ls...)
		}
		h.wantLeased(got, all...)
		if first := h.lease(queue.LeaseRequest{Max: 1}); len(first) != 0 {
			t.Fatalf("leased %v with everything leased", short(leaseIDs(first)))
		}
	})

	t.Run("LeasedVisible", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		ds := h.put(ev{}, dl{}, dl{}, dl{})
		h.put1(dl{NextAttempt: time.Now().Add(time.Hour)})
		ls := h.drain(queue.LeaseRequest{})
		h.wantLeased(ls, ds...)
		for _, l := range ls {
			sameDelivery(t, l.Delivery, h.get(l.Delivery.ID))
			d := h.wantState(l.Delivery.ID, queue.Leased)
			if !near(d.LeasedUntil, l.Until, timeTol) {
				t.Errorf("Get(%s).LeasedUntil = %v, want the lease's end %v", d.ID, d.LeasedUntil, l.Until)
			}
		}
		for i, d := range ds {
			sameDelivery(t, h.get(d.ID), ds[i])
		}
		h.wantStats(1, 3, 0, 0)
		listed := h.listAll(queue.Filter{State: queue.Leased})
		if got := sortedIDs(listed...); !slices.Equal(got, sortedIDs(ds...)) {
			t.Fatalf("List(State: leased) = %v, want %v", got, sortedIDs(ds...))
		}
		for _, d := range listed {
			if d.State != queue.Leased {
				t.Errorf("List(State: leased) returned %s in state %s", d.ID, d.State)
			}
		}
		if n := len(h.listAll(queue.Filter{State: queue.Pending})); n != 1 {
			t.Fatalf("List(State: pending) returned %d, want the 1 not due", n)
		}
	})

	t.Run("LongPollWakesOnEnqueue", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		const wait = 3 * time.Second
		env := h.env(ev{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(150 * time.Millisecond)
			if _, err := h.q.Enqueue(h.ctx, env); err != nil {
				t.Errorf("Enqueue: %v", err)
			}
		}()
		defer func() { <-done }()
		start := time.Now()
		ls := h.lease(queue.LeaseRequest{Wait: wait})
		el := time.Since(start)
		if len(ls) == 0 {
			t.Fatalf("long poll returned nothing after %v though a delivery was enqueued after 150ms", el)
		}
		h.wantLeased(ls, env.Deliveries...)
		if el > wait/2 {
			t.Errorf("long poll took %v to see an enqueue made after 150ms (Wait %v)", el, wait)
		}
	})

	t.Run("LongPollReturnsAvailableAtOnce", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		start := time.Now()
		ls := h.lease(queue.LeaseRequest{Max: 10, Wait: 3 * time.Second})
		h.wantLeased(ls, d)
		if el := time.Since(start); el > slack {
			t.Errorf("Lease with one due delivery took %v; it must not wait to fill Max", el)
		}
	})

	t.Run("LongPollTimesOut", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		h.put1(dl{NextAttempt: time.Now().Add(time.Hour)})
		const wait = 300 * time.Millisecond
		start := time.Now()
		ls := h.lease(queue.LeaseRequest{Wait: wait})
		el := time.Since(start)
		if len(ls) != 0 {
			t.Fatalf("leased %v, nothing is due", short(leaseIDs(ls)))
		}
		if el < wait-20*time.Millisecond || el > wait+slack {
			t.Fatalf("empty long poll returned after %v, want about its Wait %v", el, wait)
		}
		start = time.Now()
		if ls := h.lease(queue.LeaseRequest{}); len(ls) != 0 {
			t.Fatalf("leased %v, nothing is due", short(leaseIDs(ls)))
		}
		if el := time.Since(start); el > slack/2 {
			t.Errorf("Lease with Wait 0 took %v", el)
		}
	})

	t.Run("LongPollContextCancel", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		ctx, cancel := context.WithCancel(h.ctx)
		time.AfterFunc(150*time.Millisecond, cancel)
		start := time.Now()
		ls, err := h.q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: longLease, Wait: 10 * time.Second})
		el := time.Since(start)
		if el > 150*time.Millisecond+slack {
			t.Fatalf("long poll returned %v after its context ended", el-150*time.Millisecond)
		}
		if len(ls) != 0 {
			t.Fatalf("leased %v from an empty queue", short(leaseIDs(ls)))
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Lease after cancel: %v, want nil or context.Canceled", err)
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		old := h.leaseOne(d.ID, shortLease)
		if ls := h.drain(queue.LeaseRequest{}); len(ls) != 0 {
			t.Fatalf("leased %v while the lease is held", short(leaseIDs(ls)))
		}
		time.Sleep(shortLease + 100*time.Millisecond)
		cur := h.leaseOne(d.ID, longLease)
		if cur.Token == old.Token {
			t.Fatalf("a new lease of %s reused the token %q", d.ID, old.Token)
		}
		a := failAttempt("late")
		stale := map[string]error{
			"Ack":     h.q.Ack(h.ctx, old.Token, a),
			"Retry":   h.q.Retry(h.ctx, old.Token, a, time.Now(), "late"),
			"Dead":    h.q.Dead(h.ctx, old.Token, a, "late"),
			"Release": h.q.Release(h.ctx, old.Token, time.Now()),
			"Extend":  h.q.Extend(h.ctx, old.Token, time.Now().Add(time.Hour)),
		}
		for op, err := range stale {
			if !errors.Is(err, queue.ErrStaleLease) {
				t.Errorf("%s with the expired token: %v, want ErrStaleLease", op, err)
			}
		}
		got := h.wantState(d.ID, queue.Leased)
		if len(got.Attempts) != 0 || got.LastError != "" {
			t.Fatalf("stale outcomes changed the delivery: %+v", got)
		}
		if !near(got.LeasedUntil, cur.Until, timeTol) {
			t.Fatalf("stale Extend moved the lease to %v", got.LeasedUntil)
		}
		if err := h.q.Extend(h.ctx, cur.Token, time.Now().Add(2*time.Minute)); err != nil {
			t.Fatalf("Extend with the current token: %v", err)
		}
		h.ack(cur)
		h.wantState(d.ID, queue.Delivered)
		h.wantStats(0, 0, 1, 0)
	})

	t.Run("Extend", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		l := h.leaseOne(d.ID, shortLease)
		until := time.Now().Add(3 * time.Second).Truncate(time.Millisecond)
		if err := h.q.Extend(h.ctx, l.Token, until); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		if got := h.wantState(d.ID, queue.Leased); !near(got.LeasedUntil, until, timeTol) {
			t.Errorf("LeasedUntil after Extend = %v, want %v", got.LeasedUntil, until)
		}
		time.Sleep(shortLease + 100*time.Millisecond)
		if ls := h.drain(queue.LeaseRequest{}); len(ls) != 0 {
			t.Fatalf("an extended lease expired at its first end: leased %v again", short(leaseIDs(ls)))
		}
		h.wantStats(0, 1, 0, 0)
		h.ack(l)
		h.wantState(d.ID, queue.Delivered)
	})
}
