package queuetest

import (
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func (h *harness) prune(r queue.PruneRequest) {
	h.t.Helper()
	if err := h.q.Prune(h.ctx, r); err != nil {
		h.t.Fatalf("Prune(%+v): %v", r, err)
	}
}

func testPrune(t *testing.T, open Opener) {
	t.Run("Delivered", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		env := h.env(ev{}, dl{State: queue.Delivered}, dl{State: queue.Delivered}, dl{State: queue.Dead})
		oldSync := env.Deliveries[0]
		oldSync.FinishedAt = time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
		oldSync.Attempts[0].Start = oldSync.FinishedAt.Add(-12 * time.Millisecond)
		newSync, doa := env.Deliveries[1], env.Deliveries[2]
		h.enqueue(env)
		d1 := h.put1(dl{})
		d2 := h.put1(dl{})
		p := h.put1(dl{NextAttempt: time.Now().Add(time.Hour)})
		lx := h.put1(dl{})
		x := h.put1(dl{})
		ls := h.drain(queue.LeaseRequest{})
		h.wantLeased(ls, d1, d2, lx, x)
		var l2 queue.Lease
		for _, l := range ls {
			switch l.Delivery.ID {
			case d1.ID:
				h.ack(l)
			case d2.ID:
				l2 = l
			case x.ID:
				h.kill(l, "x")
			}
		}
		h.wantStats(1, 2, 3, 2)

		h.prune(queue.PruneRequest{DeliveredBefore: time.Now().Add(-time.Hour)})
		h.wantGone(oldSync.ID)
		h.wantStats(1, 2, 2, 2)

		time.Sleep(20 * time.Millisecond)
		cutoff := time.Now()
		time.Sleep(20 * time.Millisecond)
		h.ack(l2)
		h.prune(queue.PruneRequest{DeliveredBefore: cutoff})
		h.wantGone(d1.ID, newSync.ID)
		h.wantState(d2.ID, queue.Delivered)
		h.wantState(p.ID, queue.Pending)
		h.wantState(lx.ID, queue.Leased)
		h.wantState(x.ID, queue.Dead)
		h.wantState(doa.ID, queue.Dead)
		h.wantStats(1, 1, 1, 2)
		if ds := h.listAll(queue.Filter{State: queue.Delivered}); len(ds) != 1 || ds[0].ID != d2.ID {
			t.Fatalf("List(State: delivered) after Prune = %s, want [%s]", short(deliveryIDs(ds)), d2.ID)
		}
		if ds := h.listAll(queue.Filter{}); len(ds) != 5 {
			t.Fatalf("List() after Prune = %s, want 5", short(deliveryIDs(ds)))
		}
	})

	t.Run("Events", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		old := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
		mk := func(received time.Time, ds ...dl) *queue.Envelope {
			env := h.env(ev{ReceivedAt: received}, ds...)
			h.enqueue(env)
			return env
		}
		done := mk(old, dl{}, dl{State: queue.Delivered})                 // the pending one is acked below
		goneEnv := h.env(ev{ReceivedAt: old}, dl{State: queue.Delivered}) // its delivery is pruned
		goneEnv.Deliveries[0].FinishedAt = old
		h.enqueue(goneEnv)
		gone := goneEnv
		pending := mk(old, dl{NextAttempt: time.Now().Add(time.Hour)}, dl{State: queue.Delivered})
		dead := mk(old, dl{State: queue.Dead}, dl{State: queue.Delivered})
		leased := mk(old, dl{})
		fresh := mk(time.Now(), dl{State: queue.Delivered})

		ls := h.drain(queue.LeaseRequest{})
		h.wantLeased(ls, done.Deliveries[0], leased.Deliveries[0])
		for _, l := range ls {
			if l.Delivery.ID == done.Deliveries[0].ID {
				h.ack(l)
			}
		}
		// Nothing asked, nothing removed.
		before := h.stats()
		h.prune(queue.PruneRequest{})
		if after := h.stats(); after != before {
			t.Fatalf("an empty Prune changed Stats: %+v -> %+v", before, after)
		}
		for _, e := range []*queue.Envelope{done, gone, pending, dead, leased, fresh} {
			if _, err := h.q.GetEvent(h.ctx, e.Event.ID); err != nil {
				t.Fatalf("GetEvent(%s) after an empty Prune: %v", e.Event.ID, err)
			}
		}

		h.prune(queue.PruneRequest{DeliveredBefore: time.Now().Add(-time.Hour)})
		h.wantGone(gone.Deliveries[0].ID)
		h.wantState(pending.Deliveries[1].ID, queue.Delivered)

		h.prune(queue.PruneRequest{EventsBefore: time.Now().Add(-time.Hour)})
		h.wantNoEvent(done.Event.ID)
		h.wantNoEvent(gone.Event.ID)
		for _, e := range []*queue.Envelope{pending, dead, leased, fresh} {
			if _, err := h.q.GetEvent(h.ctx, e.Event.ID); err != nil {
				t.Errorf("GetEvent(%s) after Prune: %v; its deliveries are not all delivered, or it is newer than the cutoff", e.Event.ID, err)
			}
		}
		// Removing an event leaves its deliveries.
		h.wantState(done.Deliveries[0].ID, queue.Delivered)
		h.wantState(done.Deliveries[1].ID, queue.Delivered)
	})
}
