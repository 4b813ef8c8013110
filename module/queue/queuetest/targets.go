package queuetest

import (
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// testTargetStats checks that TargetStats counts each target's deliveries
// apart (the customer portal's counts: a target must never see another's),
// through every state change an operator or a worker makes, and after a
// restart.
func testTargetStats(t *testing.T, open Opener) {
	h := newHarness(t, open, Options{})
	want := func(target string, pending, leased, delivered, dead int) {
		t.Helper()
		s, err := h.q.TargetStats(h.ctx, target)
		if err != nil {
			t.Fatalf("TargetStats(%q): %v", target, err)
		}
		if s.Pending != pending || s.Leased != leased || s.Delivered != delivered || s.Dead != dead {
			t.Fatalf("TargetStats(%q) = pending %d leased %d delivered %d dead %d; want %d %d %d %d",
				target, s.Pending, s.Leased, s.Delivered, s.Dead, pending, leased, delivered, dead)
		}
	}
	want("acme", 0, 0, 0, 0)
	later := time.Now().Add(time.Hour)
	// acme: two due, one scheduled, one dead and one delivered on arrival;
	// globex: one due, one scheduled.
	a := h.put(ev{Target: "acme"}, dl{Webhook: "crm"}, dl{Webhook: "crm", Destination: destB}, dl{Webhook: "crm", NextAttempt: later},
		dl{Webhook: "crm", State: queue.Dead}, dl{Webhook: "crm", State: queue.Delivered})
	g := h.put(ev{Target: "globex"}, dl{Webhook: "crm", Destination: destC}, dl{Webhook: "crm", NextAttempt: later})
	want("acme", 3, 0, 1, 1)
	want("globex", 2, 0, 0, 0)
	want("acm", 0, 0, 0, 0)
	h.wantStats(5, 0, 1, 1)

	ls := h.drain(queue.LeaseRequest{})
	h.wantLeased(ls, a[0], a[1], g[0])
	want("acme", 1, 2, 1, 1)
	want("globex", 1, 1, 0, 0)
	for _, l := range ls {
		switch l.Delivery.ID {
		case a[0].ID:
			h.ack(l)
		case a[1].ID:
			h.kill(l, "gave up")
		case g[0].ID:
			h.kill(l, "gave up")
		}
	}
	want("acme", 1, 0, 2, 2)
	want("globex", 1, 0, 0, 1)

	// Operator actions: retry one dead, delete one dead.
	if n, err := h.q.RetryDead(h.ctx, a[1].ID); err != nil || n != 1 {
		t.Fatalf("RetryDead = %d, %v", n, err)
	}
	if n, err := h.q.DeleteDead(h.ctx, g[0].ID); err != nil || n != 1 {
		t.Fatalf("DeleteDead = %d, %v", n, err)
	}
	want("acme", 2, 0, 2, 1)
	want("globex", 1, 0, 0, 0)

	// The prune of delivered ones.
	h.prune(queue.PruneRequest{DeliveredBefore: time.Now().Add(time.Minute)})
	want("acme", 2, 0, 0, 1)

	h.restart(false)
	want("acme", 2, 0, 0, 1)
	want("globex", 1, 0, 0, 0)
	h.wantStats(3, 0, 0, 1)
}
