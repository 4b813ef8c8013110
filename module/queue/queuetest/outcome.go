package queuetest

import (
	"errors"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func testOutcome(t *testing.T, open Opener) {
	t.Run("Ack", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		l := h.leaseOne(d.ID, longLease)
		a1 := failAttempt("503 from receiver")
		h.retry(l, time.Now(), "503 from receiver")
		l = h.leaseOne(d.ID, longLease)
		if l.Delivery.AttemptCount != 1 || l.Delivery.LastError != "503 from receiver" {
			t.Errorf("re-leased delivery AttemptCount %d LastError %q, want 1 and the retry's reason",
				l.Delivery.AttemptCount, l.Delivery.LastError)
		}
		start := time.Now()
		a2 := okAttempt()
		if err := h.q.Ack(h.ctx, l.Token, a2); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		got := h.wantState(d.ID, queue.Delivered)
		if !recent(got.FinishedAt, start) {
			t.Errorf("FinishedAt = %v, want about now", got.FinishedAt)
		}
		if got.LastError != "" {
			t.Errorf("LastError = %q after delivery, want it cleared", got.LastError)
		}
		if !got.LeasedUntil.IsZero() {
			t.Errorf("LeasedUntil = %v after delivery, want zero", got.LeasedUntil)
		}
		if got.AttemptCount != 2 || len(got.Attempts) != 2 {
			t.Fatalf("AttemptCount %d, %d attempts; want 2 and 2", got.AttemptCount, len(got.Attempts))
		}
		sameAttempt(t, d.ID, 0, got.Attempts[0], a1)
		sameAttempt(t, d.ID, 1, got.Attempts[1], a2)
		sameDelivery(t, got, d)
		h.wantStats(0, 0, 1, 0)
		if ls := h.drain(queue.LeaseRequest{}); len(ls) != 0 {
			t.Fatalf("leased %v after delivery", short(leaseIDs(ls)))
		}
	})

	t.Run("Retry", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		l := h.leaseOne(d.ID, longLease)
		next := time.Now().Add(300 * time.Millisecond)
		a := failAttempt("connection refused")
		if err := h.q.Retry(h.ctx, l.Token, a, next, "connection refused"); err != nil {
			t.Fatalf("Retry: %v", err)
		}
		got := h.wantState(d.ID, queue.Pending)
		if !near(got.NextAttempt, next, timeTol) {
			t.Errorf("NextAttempt = %v, want %v", got.NextAttempt, next)
		}
		if got.LastError != "connection refused" || got.AttemptCount != 1 || len(got.Attempts) != 1 {
			t.Fatalf("after Retry: LastError %q AttemptCount %d attempts %d", got.LastError, got.AttemptCount, len(got.Attempts))
		}
		sameAttempt(t, d.ID, 0, got.Attempts[0], a)
		if !got.LeasedUntil.IsZero() || !got.FinishedAt.IsZero() {
			t.Errorf("after Retry: LeasedUntil %v FinishedAt %v, want zero", got.LeasedUntil, got.FinishedAt)
		}
		h.wantStats(1, 0, 0, 0)
		h.leaseWhenDue(next, d)
		if late := time.Since(next); late > slack {
			t.Errorf("a long poll handed out the retry %v after it was due", late)
		}
		if err := h.q.Retry(h.ctx, l.Token, a, time.Now(), "again"); !errors.Is(err, queue.ErrStaleLease) {
			t.Errorf("Retry with the token of the finished lease: %v, want ErrStaleLease", err)
		}
	})

	t.Run("Dead", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		l := h.leaseOne(d.ID, longLease)
		a := failAttempt("410 gone")
		if err := h.q.Dead(h.ctx, l.Token, a, "410 gone: receiver refused"); err != nil {
			t.Fatalf("Dead: %v", err)
		}
		got := h.wantState(d.ID, queue.Dead)
		if got.LastError != "410 gone: receiver refused" || got.AttemptCount != 1 || len(got.Attempts) != 1 {
			t.Fatalf("after Dead: LastError %q AttemptCount %d attempts %d", got.LastError, got.AttemptCount, len(got.Attempts))
		}
		sameAttempt(t, d.ID, 0, got.Attempts[0], a)
		if !got.LeasedUntil.IsZero() {
			t.Errorf("after Dead: LeasedUntil %v, want zero", got.LeasedUntil)
		}
		h.wantStats(0, 0, 0, 1)
		if ls := h.drain(queue.LeaseRequest{}); len(ls) != 0 {
			t.Fatalf("leased %v after Dead", short(leaseIDs(ls)))
		}
	})

	t.Run("DeadWithoutAttempt", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		l := h.leaseOne(d.ID, longLease)
		if err := h.q.Dead(h.ctx, l.Token, queue.Attempt{}, "too old"); err != nil {
			t.Fatalf("Dead: %v", err)
		}
		got := h.wantState(d.ID, queue.Dead)
		if got.LastError != "too old" || got.AttemptCount != 0 || len(got.Attempts) != 0 {
			t.Fatalf("after Dead with a zero attempt: LastError %q AttemptCount %d attempts %d; want no attempt recorded",
				got.LastError, got.AttemptCount, len(got.Attempts))
		}
	})

	t.Run("Release", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		l := h.leaseOne(d.ID, longLease)
		next := time.Now().Add(300 * time.Millisecond)
		if err := h.q.Release(h.ctx, l.Token, next); err != nil {
			t.Fatalf("Release: %v", err)
		}
		got := h.wantState(d.ID, queue.Pending)
		if !near(got.NextAttempt, next, timeTol) {
			t.Errorf("NextAttempt = %v, want %v", got.NextAttempt, next)
		}
		if got.AttemptCount != 0 || len(got.Attempts) != 0 || got.LastError != "" {
			t.Fatalf("Release recorded an attempt: AttemptCount %d attempts %d LastError %q", got.AttemptCount, len(got.Attempts), got.LastError)
		}
		h.wantStats(1, 0, 0, 0)
		ls := h.leaseWhenDue(next, d)
		if late := time.Since(next); late > slack {
			t.Errorf("a long poll handed out the released delivery %v after it was due", late)
		}
		if ls[0].Delivery.AttemptCount != 0 {
			t.Errorf("re-leased after Release: AttemptCount %d, want 0", ls[0].Delivery.AttemptCount)
		}
		// Released due now (or in the past): leasable at once.
		h.release(ls[0], time.Now().Add(-time.Second))
		h.leaseOne(d.ID, longLease)
	})

	t.Run("UnknownToken", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put1(dl{})
		l := h.leaseOne(d.ID, longLease)
		for _, tok := range []queue.Token{"", "not-a-token", queue.Token(d.ID), l.Token + "x"} {
			a := failAttempt("x")
			errs := map[string]error{
				"Ack":     h.q.Ack(h.ctx, tok, a),
				"Retry":   h.q.Retry(h.ctx, tok, a, time.Now(), "x"),
				"Dead":    h.q.Dead(h.ctx, tok, a, "x"),
				"Release": h.q.Release(h.ctx, tok, time.Now()),
				"Extend":  h.q.Extend(h.ctx, tok, time.Now().Add(time.Hour)),
			}
			for op, err := range errs {
				if !isStaleOrNotFound(err) {
					t.Errorf("%s(%q): %v, want ErrStaleLease or ErrNotFound", op, tok, err)
				}
			}
		}
		got := h.wantState(d.ID, queue.Leased)
		if got.AttemptCount != 0 || !near(got.LeasedUntil, l.Until, timeTol) {
			t.Fatalf("outcomes with unknown tokens changed the delivery: %+v", got)
		}
		h.ack(l)
	})

	t.Run("UsedToken", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		for _, finish := range []string{"Ack", "Dead", "Retry", "Release"} {
			t.Run(finish, func(t *testing.T) {
				d := h.put1(dl{})
				l := h.leaseOne(d.ID, longLease)
				switch finish {
				case "Ack":
					h.ack(l)
				case "Dead":
					h.kill(l, "x")
				case "Retry":
					h.retry(l, time.Now().Add(time.Hour), "x")
				case "Release":
					h.release(l, time.Now().Add(time.Hour))
				}
				before := h.get(d.ID)
				a := failAttempt("again")
				errs := map[string]error{
					"Ack":     h.q.Ack(h.ctx, l.Token, a),
					"Retry":   h.q.Retry(h.ctx, l.Token, a, time.Now(), "again"),
					"Dead":    h.q.Dead(h.ctx, l.Token, a, "again"),
					"Release": h.q.Release(h.ctx, l.Token, time.Now()),
					"Extend":  h.q.Extend(h.ctx, l.Token, time.Now().Add(time.Hour)),
				}
				for op, err := range errs {
					if !errors.Is(err, queue.ErrStaleLease) {
						t.Errorf("%s after %s with the same token: %v, want ErrStaleLease", op, finish, err)
					}
				}
				after := h.get(d.ID)
				if after.State != before.State || after.AttemptCount != before.AttemptCount ||
					after.LastError != before.LastError || !after.NextAttempt.Equal(before.NextAttempt) {
					t.Fatalf("outcomes with a used token changed %s: %+v -> %+v", d.ID, before, after)
				}
			})
		}
	})
}
