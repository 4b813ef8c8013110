package queuetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// testRestart checks what survives Close (and SimulateCrash, when the
// backend offers it) and reopen. Leases held when the queue stopped are one
// second long; after reopen the suite waits up to three seconds for them, so
// a backend may either void old leases on open or let them expire.
func testRestart(t *testing.T, open Opener) {
	modes := []struct {
		name  string
		crash bool
	}{{"Close", false}, {"Crash", true}}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			h := newHarness(t, open, Options{})
			if m.crash && !h.crasher() {
				t.Skip("the backend offers no SimulateCrash")
			}
			testRestartOnce(t, h, m.crash)
		})
	}
}

func testRestartOnce(t *testing.T, h *harness, crash bool) {
	first := h.env(ev{DedupKey: "restart"}, dl{Webhook: "w1"}, dl{Webhook: "w2", State: queue.Dead}, dl{Webhook: "w3", State: queue.Delivered})
	firstRes := h.enqueue(first)
	p := first.Deliveries[0]
	doa, sync := first.Deliveries[1], first.Deliveries[2]
	f := h.put1(dl{NextAttempt: time.Now().Add(time.Hour)})
	l1 := h.put1(dl{})
	l2 := h.put1(dl{})
	a := h.put1(dl{})
	x := h.put1(dl{})
	r := h.put1(dl{})

	ls := h.drain(queue.LeaseRequest{Lease: time.Second})
	h.wantLeased(ls, p, l1, l2, a, x, r)
	old := map[string]queue.Lease{}
	for _, l := range ls {
		switch l.Delivery.ID {
		case p.ID:
			h.release(l, time.Now())
		case a.ID:
			h.ack(l)
		case x.ID:
			h.kill(l, "gave up")
		case r.ID:
			h.retry(l, time.Now(), "retry me")
		default:
			old[l.Delivery.ID] = l
		}
	}
	h.wantStats(3, 2, 2, 2)

	h.restart(crash)

	s := h.stats()
	if s.Pending+s.Leased != 5 || s.Delivered != 2 || s.Dead != 2 {
		t.Fatalf("Stats after restart = %+v; want 5 pending or leased, 2 delivered, 2 dead", s)
	}
	if !near(s.OldestPending, p.CreatedAt, timeTol) {
		t.Errorf("OldestPending after restart = %v, want %v", s.OldestPending, p.CreatedAt)
	}

	// Every delivery not acknowledged is due again: the pending ones at
	// once, the leased ones once their lease is void or over.
	want := sortedIDs(p, l1, l2, r)
	var got []queue.Lease
	deadline := time.Now().Add(3 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		got = append(got, h.lease(queue.LeaseRequest{Wait: time.Until(deadline)})...)
	}
	if ids := leaseIDs(got); !slices.Equal(ids, want) {
		t.Fatalf("after restart leased %v, want %v", ids, want)
	}
	for _, l := range got {
		switch l.Delivery.ID {
		case r.ID:
			if l.Delivery.AttemptCount != 1 || l.Delivery.LastError != "retry me" {
				t.Errorf("retried delivery after restart: AttemptCount %d LastError %q", l.Delivery.AttemptCount, l.Delivery.LastError)
			}
		case l1.ID, l2.ID:
			o := old[l.Delivery.ID]
			if o.Token == l.Token {
				t.Fatalf("a lease after restart reused the token %q of the lease before", l.Token)
			}
			if err := h.q.Ack(h.ctx, o.Token, okAttempt()); !errors.Is(err, queue.ErrStaleLease) {
				t.Fatalf("Ack with a token from before the restart after the delivery was leased again: %v, want ErrStaleLease", err)
			}
		}
		sameDelivery(t, l.Delivery, map[string]*queue.Delivery{p.ID: p, l1.ID: l1, l2.ID: l2, r.ID: r}[l.Delivery.ID])
		h.ack(l)
	}

	got1 := h.wantState(a.ID, queue.Delivered)
	if len(got1.Attempts) != 1 || got1.AttemptCount != 1 || got1.FinishedAt.IsZero() {
		t.Errorf("acked before restart: %d attempts, count %d, FinishedAt %v", len(got1.Attempts), got1.AttemptCount, got1.FinishedAt)
	}
	if got := h.wantState(x.ID, queue.Dead); got.LastError != "gave up" || got.AttemptCount != 1 {
		t.Errorf("killed before restart: LastError %q AttemptCount %d", got.LastError, got.AttemptCount)
	}
	if got := h.wantState(doa.ID, queue.Dead); got.LastError != doa.LastError {
		t.Errorf("dead on arrival after restart: LastError %q", got.LastError)
	}
	h.wantState(sync.ID, queue.Delivered)
	if got := h.wantState(f.ID, queue.Pending); !near(got.NextAttempt, f.NextAttempt, timeTol) {
		t.Errorf("scheduled delivery after restart: NextAttempt %v, want %v", got.NextAttempt, f.NextAttempt)
	}
	if _, err := h.q.GetEvent(h.ctx, first.Event.ID); err != nil {
		t.Errorf("GetEvent after restart: %v", err)
	}
	dup, err := h.q.Enqueue(h.ctx, h.env(ev{DedupKey: "restart"}))
	if err != nil || !dup.Duplicate || dup.EventID != firstRes.EventID {
		t.Errorf("dedup key after restart: %+v, %v; want a duplicate of %s", dup, err, firstRes.EventID)
	}
	h.wantStats(1, 0, 6, 2)
}
