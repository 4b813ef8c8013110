package queuetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func testEnqueue(t *testing.T, open Opener) {
	t.Run("RefsAndStoredFields", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		env := h.env(ev{Target: "t1", Name: "call.started"},
			dl{Webhook: "w1"},
			dl{Webhook: "w2", State: queue.Dead},
			dl{Webhook: "w3", State: queue.Delivered},
			dl{Webhook: "w4", Destination: destB, OrderKey: "t1/w4/call"},
		)
		r := h.enqueue(env)
		if r.EventID != env.Event.ID {
			t.Errorf("EventID = %q, want %q", r.EventID, env.Event.ID)
		}
		if len(r.Refs) != len(env.Deliveries) {
			t.Fatalf("%d refs for %d deliveries", len(r.Refs), len(env.Deliveries))
		}
		wantStates := []queue.State{queue.Pending, queue.Dead, queue.Delivered, queue.Pending}
		for i, ref := range r.Refs {
			d := env.Deliveries[i]
			if ref.ID != d.ID || ref.Webhook != d.Webhook || ref.State != wantStates[i] {
				t.Errorf("ref %d = %+v, want id %s webhook %s state %s (refs in envelope order)", i, ref, d.ID, d.Webhook, wantStates[i])
			}
			if wantErr := d.LastError; d.State == queue.Dead && ref.Error != wantErr {
				t.Errorf("ref %d Error = %q, want the render error %q", i, ref.Error, wantErr)
			}
			if d.State != queue.Dead && ref.Error != "" {
				t.Errorf("ref %d Error = %q, want none", i, ref.Error)
			}
		}
		for i, d := range env.Deliveries {
			got := h.wantState(d.ID, wantStates[i])
			sameDelivery(t, got, d)
			if got.AttemptCount != d.AttemptCount {
				t.Errorf("%s AttemptCount = %d, want %d", d.ID, got.AttemptCount, d.AttemptCount)
			}
			if got.State == queue.Pending && !got.LeasedUntil.IsZero() {
				t.Errorf("pending %s has LeasedUntil %v", d.ID, got.LeasedUntil)
			}
		}
		e, err := h.q.GetEvent(h.ctx, env.Event.ID)
		if err != nil {
			t.Fatalf("GetEvent: %v", err)
		}
		want := env.Event
		if e.ID != want.ID || e.Target != want.Target || e.Name != want.Name || e.CallID != want.CallID ||
			!near(e.ReceivedAt, want.ReceivedAt, timeTol) || !bytes.Equal(e.Data, want.Data) {
			t.Errorf("GetEvent = %+v, want %+v", e, want)
		}
		h.wantStats(2, 0, 1, 1)
	})

	t.Run("DeadAndDeliveredOnArrival", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		ds := h.put(ev{}, dl{State: queue.Dead}, dl{State: queue.Delivered}, dl{})
		doa, sync, live := ds[0], ds[1], ds[2]

		got := h.wantState(doa.ID, queue.Dead)
		if got.LastError != doa.LastError {
			t.Errorf("dead on arrival LastError = %q, want %q", got.LastError, doa.LastError)
		}
		if got.AttemptCount != 0 || len(got.Attempts) != 0 {
			t.Errorf("dead on arrival has %d attempts (count %d), want none", len(got.Attempts), got.AttemptCount)
		}
		got = h.wantState(sync.ID, queue.Delivered)
		if len(got.Attempts) != 1 {
			t.Fatalf("delivered on arrival has %d attempts, want its one", len(got.Attempts))
		}
		sameAttempt(t, sync.ID, 0, got.Attempts[0], sync.Attempts[0])
		if !near(got.FinishedAt, sync.FinishedAt, timeTol) {
			t.Errorf("delivered on arrival FinishedAt = %v, want %v as given", got.FinishedAt, sync.FinishedAt)
		}
		if got.AttemptCount != 1 {
			t.Errorf("delivered on arrival AttemptCount = %d, want 1", got.AttemptCount)
		}

		// Only the live one is ever leased, also after its lease expires.
		ls := h.drain(queue.LeaseRequest{Lease: shortLease})
		h.wantLeased(ls, live)
		time.Sleep(shortLease + 100*time.Millisecond)
		h.wantLeased(h.drain(queue.LeaseRequest{}), live)
		h.wantStats(0, 1, 1, 1)
	})

	t.Run("ErrFull", func(t *testing.T) {
		h := newHarness(t, open, Options{MaxPending: 2})
		h.put1(dl{})
		h.put1(dl{})
		env := h.env(ev{})
		if _, err := h.q.Enqueue(h.ctx, env); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Enqueue over MaxPending: %v, want ErrFull", err)
		}
		h.wantGone(env.Deliveries[0].ID)
		h.wantNoEvent(env.Event.ID)
		h.wantStats(2, 0, 0, 0)

		// A leased delivery still counts against the cap.
		l := h.lease(queue.LeaseRequest{Max: 1})
		if len(l) != 1 {
			t.Fatalf("leased %d, want 1", len(l))
		}
		if _, err := h.q.Enqueue(h.ctx, h.env(ev{})); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Enqueue over MaxPending with one leased: %v, want ErrFull", err)
		}
		// Finishing one makes room for one.
		h.ack(l[0])
		h.enqueue(env)
		h.wantState(env.Deliveries[0].ID, queue.Pending)
		if _, err := h.q.Enqueue(h.ctx, h.env(ev{})); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Enqueue over MaxPending after refill: %v, want ErrFull", err)
		}
		h.wantStats(2, 0, 1, 0)
	})

	t.Run("AllOrNoneOverCap", func(t *testing.T) {
		h := newHarness(t, open, Options{MaxPending: 3})
		h.put1(dl{})
		h.put1(dl{})
		before := h.stats()
		// Two live deliveries with one slot left: none of the envelope
		// (event, the dead and delivered ones, dedup key) may be stored.
		env := h.env(ev{DedupKey: "all-or-none"}, dl{Webhook: "w1"}, dl{Webhook: "w2", State: queue.Dead},
			dl{Webhook: "w3", State: queue.Delivered}, dl{Webhook: "w4"})
		if _, err := h.q.Enqueue(h.ctx, env); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("Enqueue over MaxPending: %v, want ErrFull", err)
		}
		for _, d := range env.Deliveries {
			h.wantGone(d.ID)
		}
		h.wantNoEvent(env.Event.ID)
		if after := h.stats(); after != before {
			t.Fatalf("Stats changed by a failed Enqueue: %+v -> %+v", before, after)
		}
		if ds := h.listAll(queue.Filter{EventID: env.Event.ID}); len(ds) != 0 {
			t.Fatalf("List(EventID) after failed Enqueue = %s", short(deliveryIDs(ds)))
		}
		// Room for the envelope: the dedup key was not taken.
		ls := h.drain(queue.LeaseRequest{})
		for _, l := range ls {
			h.ack(l)
		}
		r := h.enqueue(env)
		if r.EventID != env.Event.ID || len(r.Refs) != 4 {
			t.Fatalf("Enqueue after making room = %+v", r)
		}
		h.wantStats(2, 0, 3, 1)
	})

	t.Run("AllOrNoneDuplicateID", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		first := h.put1(dl{})
		env := h.env(ev{DedupKey: "dup-id"}, dl{}, dl{})
		env.Deliveries[1].ID = first.ID
		if _, err := h.q.Enqueue(h.ctx, env); err == nil {
			// The contract does not say ids must be unique; a backend that
			// accepts this must keep the first delivery's record intact.
			t.Logf("Enqueue accepted a delivery id that already exists")
			return
		}
		h.wantGone(env.Deliveries[0].ID)
		h.wantNoEvent(env.Event.ID)
		sameDelivery(t, h.wantState(first.ID, queue.Pending), first)
		env.Deliveries[1].ID = h.id("dlv")
		h.enqueue(env) // the dedup key is free
		h.wantStats(3, 0, 0, 0)
	})

	t.Run("CancelledContext", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		env := h.env(ev{DedupKey: "cancelled"})
		if _, err := h.q.Enqueue(cancelled(h.ctx), env); !errors.Is(err, context.Canceled) {
			t.Fatalf("Enqueue with a cancelled context: %v, want context.Canceled", err)
		}
		h.wantGone(env.Deliveries[0].ID)
		h.wantNoEvent(env.Event.ID)
		h.wantStats(0, 0, 0, 0)
		h.enqueue(env) // not a duplicate
	})
}

func testDedup(t *testing.T, open Opener) {
	dupOf := func(t *testing.T, h *harness, first *queue.Envelope, firstRes queue.EnqueueResult, key string) {
		t.Helper()
		before := h.stats()
		env := h.env(ev{DedupKey: key}, dl{}, dl{Webhook: "w2"}, dl{Webhook: "w3"})
		r, err := h.q.Enqueue(h.ctx, env)
		if err != nil {
			t.Fatalf("Enqueue of a duplicate: %v", err)
		}
		if !r.Duplicate {
			t.Fatalf("Enqueue with a known dedup key: not a duplicate")
		}
		if r.EventID != first.Event.ID {
			t.Errorf("duplicate EventID = %q, want the first %q", r.EventID, first.Event.ID)
		}
		if len(r.Refs) != len(firstRes.Refs) {
			t.Fatalf("duplicate refs %+v, want the first %+v", r.Refs, firstRes.Refs)
		}
		for i := range r.Refs {
			if r.Refs[i].ID != firstRes.Refs[i].ID || r.Refs[i].Webhook != firstRes.Refs[i].Webhook {
				t.Errorf("duplicate ref %d = %+v, want %+v", i, r.Refs[i], firstRes.Refs[i])
			}
		}
		for _, d := range env.Deliveries {
			h.wantGone(d.ID)
		}
		h.wantNoEvent(env.Event.ID)
		if after := h.stats(); after.Pending != before.Pending || after.Leased != before.Leased ||
			after.Delivered != before.Delivered || after.Dead != before.Dead {
			t.Fatalf("Stats changed by a duplicate: %+v -> %+v", before, after)
		}
	}

	t.Run("Duplicate", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		first := h.env(ev{DedupKey: "k1"}, dl{}, dl{Webhook: "w2", State: queue.Dead})
		r := h.enqueue(first)
		dupOf(t, h, first, r, "k1")
		// Still a duplicate once the first is delivered.
		ls := h.drain(queue.LeaseRequest{})
		for _, l := range ls {
			h.ack(l)
		}
		dupOf(t, h, first, r, "k1")
	})

	t.Run("EmptyKeyNeverDedups", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		for range 3 {
			h.put(ev{DedupKey: ""})
		}
		h.wantStats(3, 0, 0, 0)
	})

	t.Run("DifferentKeys", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		a := h.env(ev{DedupKey: "ka"})
		ra := h.enqueue(a)
		b := h.env(ev{DedupKey: "kb"})
		rb := h.enqueue(b)
		dupOf(t, h, a, ra, "ka")
		dupOf(t, h, b, rb, "kb")
		h.wantStats(2, 0, 0, 0)
	})

	t.Run("PruneForgets", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		first := h.env(ev{DedupKey: "kp"})
		r := h.enqueue(first)
		// A cutoff before the key was seen keeps it.
		if err := h.q.Prune(h.ctx, queue.PruneRequest{DedupBefore: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		dupOf(t, h, first, r, "kp")
		if err := h.q.Prune(h.ctx, queue.PruneRequest{DedupBefore: time.Now().Add(time.Hour)}); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		h.put(ev{DedupKey: "kp"})
		h.wantStats(2, 0, 0, 0)
	})

	t.Run("Window", func(t *testing.T) {
		h := newHarness(t, open, Options{DedupWindow: time.Second})
		first := h.env(ev{DedupKey: "kw"})
		r := h.enqueue(first)
		dupOf(t, h, first, r, "kw")
		time.Sleep(1200 * time.Millisecond)
		h.put(ev{DedupKey: "kw"}) // not a duplicate, Prune or not
		h.wantStats(2, 0, 0, 0)
	})

	t.Run("SurvivesReopen", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		first := h.env(ev{DedupKey: "kr"})
		r := h.enqueue(first)
		h.restart(false)
		dupOf(t, h, first, r, "kr")
	})

	t.Run("Concurrent", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		const n = 16
		envs := make([]*queue.Envelope, n)
		for i := range envs {
			envs[i] = h.env(ev{DedupKey: "race"}, dl{}, dl{Webhook: "w2"})
		}
		res := make([]queue.EnqueueResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range envs {
			wg.Go(func() { res[i], errs[i] = h.q.Enqueue(h.ctx, envs[i]) })
		}
		wg.Wait()
		winner := -1
		for i := range res {
			if errs[i] != nil {
				t.Fatalf("concurrent Enqueue: %v", errs[i])
			}
			if !res[i].Duplicate {
				if winner >= 0 {
					t.Fatalf("two envelopes with one dedup key were both stored (%d and %d)", winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("every concurrent envelope was a duplicate; none was stored")
		}
		for i := range res {
			if res[i].EventID != envs[winner].Event.ID || len(res[i].Refs) != 2 ||
				res[i].Refs[0].ID != envs[winner].Deliveries[0].ID || res[i].Refs[1].ID != envs[winner].Deliveries[1].ID {
				t.Errorf("result %d = %+v, want the stored envelope's %s", i, res[i], envs[winner].Event.ID)
			}
			if i != winner {
				h.wantNoEvent(envs[i].Event.ID)
			}
		}
		h.wantStats(2, 0, 0, 0)
	})
}
