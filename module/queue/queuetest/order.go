package queuetest

import (
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Deliveries that share an order key share their call (the handler's keys
// are target/webhook/call): a backend may keep one call's work in one
// partition and order it there. ordered builds one such delivery.
func (h *harness) ordered(key string, s dl) *queue.Delivery {
	h.t.Helper()
	s.OrderKey = key
	return h.put(ev{CallID: "call-of-" + key}, s)[0]
}

func testOrder(t *testing.T, open Opener) {
	t.Run("OneAtATime", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		a1 := h.ordered("k", dl{})
		a2 := h.ordered("k", dl{})
		b1 := h.ordered("j", dl{Webhook: "w2"})
		a34 := h.put(ev{CallID: "call-of-k"}, dl{OrderKey: "k"}, dl{OrderKey: "k"})
		a3, a4 := a34[0], a34[1]
		c1 := h.put1(dl{})

		ls := h.drain(queue.LeaseRequest{})
		h.wantLeased(ls, a1, b1, c1)
		for _, l := range ls {
			if l.Delivery.ID == b1.ID || l.Delivery.ID == c1.ID {
				h.ack(l)
			}
		}
		l1 := ls[0]
		for _, l := range ls {
			if l.Delivery.ID == a1.ID {
				l1 = l
			}
		}

		// Retrying: the head keeps its place even though the next is due.
		due := time.Now().Add(300 * time.Millisecond)
		h.retry(l1, due, "503")
		ls = h.leaseWhenDue(due, a1)
		// Released: still the head.
		h.release(ls[0], time.Now())
		l1 = h.leaseOne(a1.ID, longLease)
		// Lease expired: still the head.
		h.release(l1, time.Now())
		l1 = h.leaseOne(a1.ID, shortLease)
		time.Sleep(shortLease + 100*time.Millisecond)
		l1 = h.leaseOne(a1.ID, longLease)

		// Ack moves to the next, Dead too; an envelope keeps its order.
		h.ack(l1)
		l2 := h.leaseOne(a2.ID, longLease)
		h.kill(l2, "410")
		l3 := h.leaseOne(a3.ID, longLease)
		h.ack(l3)
		l4 := h.leaseOne(a4.ID, longLease)
		h.ack(l4)
		if ls := h.drain(queue.LeaseRequest{}); len(ls) != 0 {
			t.Fatalf("leased %v, all done", short(leaseIDs(ls)))
		}
		h.wantStats(0, 0, 5, 1)
	})

	t.Run("EnqueueOrderOverDueTime", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		due := time.Now().Add(300 * time.Millisecond)
		x1 := h.ordered("k", dl{NextAttempt: due})
		x2 := h.ordered("k", dl{})
		// x2 is due at once but behind x1: nothing is leased before x1 is due.
		ls := h.leaseWhenDue(due, x1)
		h.ack(ls[0])
		h.leaseOne(x2.ID, longLease)
	})

	t.Run("IndependentKeys", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		var heads []*queue.Delivery
		for _, k := range []string{"k1", "k2", "k3"} {
			heads = append(heads, h.ordered(k, dl{}))
			h.ordered(k, dl{})
		}
		h.wantLeased(h.drain(queue.LeaseRequest{}), heads...)
		h.wantStats(3, 3, 0, 0)
	})

	t.Run("FinishedOnArrivalDoesNotBlock", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		ds := h.put(ev{CallID: "call-of-m"}, dl{OrderKey: "m", State: queue.Dead}, dl{OrderKey: "m", State: queue.Delivered}, dl{OrderKey: "m"})
		h.leaseOne(ds[2].ID, longLease)
	})

	t.Run("AcrossReopen", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		r1 := h.ordered("k", dl{})
		r2 := h.ordered("k", dl{})
		r3 := h.ordered("k", dl{})
		h.leaseOne(r1.ID, time.Second)
		h.restart(false)
		if ls := h.drain(queue.LeaseRequest{}); len(ls) > 1 || len(ls) == 1 && ls[0].Delivery.ID != r1.ID {
			t.Fatalf("after reopen leased %v, want at most the head %s", short(leaseIDs(ls)), r1.ID)
		} else if len(ls) == 1 {
			h.ack(ls[0])
		} else {
			ls = h.lease(queue.LeaseRequest{Wait: 3 * time.Second})
			h.wantLeased(ls, r1)
			h.ack(ls[0])
		}
		h.leaseOne(r2.ID, time.Second)
		h.restart(false)
		ls := h.lease(queue.LeaseRequest{Wait: 3 * time.Second})
		h.wantLeased(ls, r2)
		h.ack(ls[0])
		h.leaseOne(r3.ID, longLease)
	})
}
