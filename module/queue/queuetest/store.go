package queuetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// listAll follows List's cursors to the end and checks every page.
func (h *harness) listAll(f queue.Filter) []*queue.Delivery {
	h.t.Helper()
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var all []*queue.Delivery
	seen := map[string]bool{}
	for range 10000 {
		p, err := h.q.List(h.ctx, f)
		if err != nil {
			h.t.Fatalf("List(%+v): %v", f, err)
		}
		if len(p.Deliveries) > limit {
			h.t.Fatalf("List(%+v) returned %d, over the limit %d", f, len(p.Deliveries), limit)
		}
		for _, d := range p.Deliveries {
			if seen[d.ID] {
				h.t.Fatalf("List(%+v) returned %s on two pages", f, d.ID)
			}
			seen[d.ID] = true
		}
		all = append(all, p.Deliveries...)
		if p.Next == "" {
			return all
		}
		if p.Next == f.Cursor {
			h.t.Fatalf("List(%+v) returned its own cursor as Next", f)
		}
		f.Cursor = p.Next
	}
	h.t.Fatalf("List(%+v) never ended", f)
	return nil
}

func testStore(t *testing.T, open Opener) {
	t.Run("GetUnknown", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		h.put1(dl{})
		h.wantGone("no-such-delivery", "")
		h.wantNoEvent("no-such-event")
	})

	t.Run("ListFilters", func(t *testing.T) { testListFilters(t, open) })
	t.Run("TargetStats", func(t *testing.T) { testTargetStats(t, open) })

	t.Run("ListPagingStableUnderInserts", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		var old []*queue.Delivery
		for range 7 {
			old = append(old, h.put1(dl{}))
		}
		slices.Reverse(old) // newest first
		p, err := h.q.List(h.ctx, queue.Filter{Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if p.Next == "" || len(p.Deliveries) == 0 {
			t.Fatalf("first page of 7 with Limit 3: %d deliveries, Next %q", len(p.Deliveries), p.Next)
		}
		got := deliveryIDs(p.Deliveries)
		// Newer deliveries arrive while the operator pages.
		h.put1(dl{})
		h.put1(dl{})
		rest := h.listAll(queue.Filter{Limit: 3, Cursor: p.Next})
		got = append(got, deliveryIDs(rest)...)
		if want := deliveryIDs(old); !slices.Equal(got, want) {
			t.Fatalf("pages across inserts = %v, want %v (each older delivery once, newest first)", got, want)
		}
	})

	t.Run("ListLimit", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		for range 5 {
			h.put1(dl{})
		}
		for _, limit := range []int{1, 2, 5, 6, 1000, 5000} {
			p, err := h.q.List(h.ctx, queue.Filter{Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Deliveries) > limit {
				t.Errorf("List(Limit %d) of 5 returned %d", limit, len(p.Deliveries))
			}
			if len(h.listAll(queue.Filter{Limit: limit})) != 5 {
				t.Errorf("List(Limit %d) pages do not cover all 5", limit)
			}
		}
	})

	t.Run("ListContextCancelled", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		h.put1(dl{})
		if _, err := h.q.List(cancelled(h.ctx), queue.Filter{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("List with a cancelled context: %v, want context.Canceled", err)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		if s := h.wantStats(0, 0, 0, 0); !s.OldestPending.IsZero() {
			t.Fatalf("OldestPending of an empty queue = %v", s.OldestPending)
		}
		// Finished deliveries never count as pending, however old.
		env := h.env(ev{}, dl{State: queue.Dead}, dl{State: queue.Delivered})
		for _, d := range env.Deliveries {
			d.CreatedAt = d.CreatedAt.Add(-time.Hour)
		}
		h.enqueue(env)
		if s := h.wantStats(0, 0, 1, 1); !s.OldestPending.IsZero() {
			t.Fatalf("OldestPending with nothing pending = %v", s.OldestPending)
		}
		p1 := h.put1(dl{})
		p2 := h.put1(dl{NextAttempt: time.Now().Add(time.Hour)})
		p3 := h.put1(dl{})
		oldest := func(want *queue.Delivery) {
			t.Helper()
			if s := h.stats(); !near(s.OldestPending, want.CreatedAt, timeTol) {
				t.Fatalf("OldestPending = %v, want %s's CreatedAt %v", s.OldestPending, want.ID, want.CreatedAt)
			}
		}
		h.wantStats(3, 0, 1, 1)
		oldest(p1)
		ls := h.drain(queue.LeaseRequest{})
		h.wantLeased(ls, p1, p3)
		h.wantStats(1, 2, 1, 1)
		oldest(p1) // leased counts
		for _, l := range ls {
			if l.Delivery.ID == p1.ID {
				h.ack(l)
			} else {
				h.retry(l, time.Now().Add(time.Hour), "x")
			}
		}
		h.wantStats(2, 0, 2, 1)
		oldest(p2)
		if n, err := h.q.RetryDead(h.ctx); err != nil || n != 1 {
			t.Fatalf("RetryDead() = %d, %v; want 1", n, err)
		}
		h.wantStats(3, 0, 2, 0)
		oldest(env.Deliveries[0]) // the retried one keeps its CreatedAt
	})

	t.Run("RetryDead", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		doa := h.put(ev{}, dl{State: queue.Dead})[0]
		k := h.put1(dl{})
		p := h.put1(dl{NextAttempt: time.Now().Add(time.Hour)})
		dlv := h.put(ev{}, dl{State: queue.Delivered})[0]
		l := h.leaseOne(k.ID, longLease)
		h.retry(l, time.Now(), "first")
		l = h.leaseOne(k.ID, longLease)
		h.kill(l, "second")
		h.wantStats(1, 0, 1, 2)

		// Not dead, or unknown: nothing happens.
		for _, id := range []string{p.ID, dlv.ID, "no-such-delivery"} {
			before := h.get2(id)
			n, err := h.q.RetryDead(h.ctx, id)
			if n != 0 || err != nil && !errors.Is(err, queue.ErrNotDead) && !errors.Is(err, queue.ErrNotFound) {
				t.Fatalf("RetryDead(%s) = %d, %v; want 0", id, n, err)
			}
			if after := h.get2(id); before != nil && (after == nil || after.State != before.State) {
				t.Fatalf("RetryDead(%s) changed it from %s", id, before.State)
			}
		}
		h.wantStats(1, 0, 1, 2)

		start := time.Now()
		if n, err := h.q.RetryDead(h.ctx, k.ID); err != nil || n != 1 {
			t.Fatalf("RetryDead(%s) = %d, %v; want 1", k.ID, n, err)
		}
		got := h.wantState(k.ID, queue.Pending)
		if got.AttemptCount != 0 {
			t.Errorf("AttemptCount after RetryDead = %d, want 0", got.AttemptCount)
		}
		if !recent(got.RetriedAt, start) {
			t.Errorf("RetriedAt after RetryDead = %v, want about now", got.RetriedAt)
		}
		if got.NextAttempt.After(time.Now().Add(timeTol)) {
			t.Errorf("NextAttempt after RetryDead = %v, want due now", got.NextAttempt)
		}
		sameDelivery(t, got, k) // CreatedAt and the rest kept
		h.wantStats(2, 0, 1, 1)
		l = h.leaseOne(k.ID, longLease)
		if l.Delivery.AttemptCount != 0 {
			t.Errorf("leased after RetryDead with AttemptCount %d, want 0", l.Delivery.AttemptCount)
		}
		h.ack(l)

		// No ids: every dead one.
		h.put(ev{}, dl{State: queue.Dead})
		if n, err := h.q.RetryDead(h.ctx); err != nil || n != 2 {
			t.Fatalf("RetryDead() = %d, %v; want 2", n, err)
		}
		h.wantStats(3, 0, 2, 0)
		got = h.wantState(doa.ID, queue.Pending)
		if !recent(got.RetriedAt, start) || !near(got.CreatedAt, doa.CreatedAt, timeTol) {
			t.Errorf("dead on arrival after RetryDead: RetriedAt %v CreatedAt %v", got.RetriedAt, got.CreatedAt)
		}
		if ls := h.drain(queue.LeaseRequest{}); len(ls) != 2 {
			t.Fatalf("leased %v after RetryDead(), want the 2 retried", short(leaseIDs(ls)))
		}
		if n, err := h.q.RetryDead(h.ctx); err != nil || n != 0 {
			t.Fatalf("RetryDead() with none dead = %d, %v", n, err)
		}
	})

	t.Run("Redeliver", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		d := h.put(ev{}, dl{State: queue.Dead})[0]
		p := h.put1(dl{})
		nd := h.get(d.ID)
		nd.Request = queue.Request{Method: "PUT", URL: "https://new.example/hook", Header: [][2]string{{"X-New", "1"}}, Body: []byte("new body")}
		nd.Policy.MaxAttempts = 2
		nd.Policy.SealedSecret = []byte("new secret")
		// A delivery dead on arrival had no URL, so no destination; the
		// new rendering has one, and may be ordered now.
		nd.Destination, nd.OrderKey = destB, "k-redeliver"
		o := h.put(ev{CallID: d.CallID}, dl{OrderKey: "k-redeliver"})[0] // an order key stays within its call
		start := time.Now()
		if err := h.q.Redeliver(h.ctx, nd); err != nil {
			t.Fatalf("Redeliver: %v", err)
		}
		got := h.wantState(d.ID, queue.Pending)
		sameDelivery(t, got, nd)
		if got.AttemptCount != 0 || !recent(got.RetriedAt, start) {
			t.Errorf("after Redeliver: AttemptCount %d RetriedAt %v", got.AttemptCount, got.RetriedAt)
		}
		ls := h.drain(queue.LeaseRequest{})
		h.wantLeased(ls, p, o) // d waits behind o, the head of its new order key
		for _, l := range ls {
			if l.Delivery.ID == o.ID {
				h.ack(l)
			}
		}
		ls = h.drain(queue.LeaseRequest{DestinationBudget: map[string]int{destB: 1}})
		h.wantLeased(ls, d)
		for _, l := range ls {
			if l.Delivery.ID == d.ID {
				sameDelivery(t, l.Delivery, nd)
			}
		}
		if err := h.q.Redeliver(h.ctx, nd); !errors.Is(err, queue.ErrNotDead) {
			t.Errorf("Redeliver of a leased delivery: %v, want ErrNotDead", err)
		}
		if err := h.q.Redeliver(h.ctx, &queue.Delivery{ID: "no-such-delivery", Request: nd.Request}); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("Redeliver of an unknown delivery: %v, want ErrNotFound", err)
		}
		h.wantStats(0, 2, 1, 0)
	})

	t.Run("DeleteDead", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		ds := h.put(ev{}, dl{State: queue.Dead}, dl{State: queue.Dead}, dl{State: queue.Delivered}, dl{})
		x1, x2, dlv, p := ds[0], ds[1], ds[2], ds[3]
		x3 := h.put1(dl{})
		l := h.leaseOne2(x3.ID, p.ID)
		h.kill(l, "gone")
		h.wantStats(1, 0, 1, 3)
		if n, err := h.q.DeleteDead(h.ctx, x1.ID); err != nil || n != 1 {
			t.Fatalf("DeleteDead(%s) = %d, %v; want 1", x1.ID, n, err)
		}
		h.wantGone(x1.ID)
		for _, id := range []string{p.ID, dlv.ID, x1.ID, "no-such-delivery"} {
			n, err := h.q.DeleteDead(h.ctx, id)
			if n != 0 || err != nil && !errors.Is(err, queue.ErrNotDead) && !errors.Is(err, queue.ErrNotFound) {
				t.Fatalf("DeleteDead(%s) = %d, %v; want 0", id, n, err)
			}
		}
		h.wantState(p.ID, queue.Pending)
		h.wantState(dlv.ID, queue.Delivered)
		h.wantStats(1, 0, 1, 2)
		if n, err := h.q.DeleteDead(h.ctx); err != nil || n != 2 {
			t.Fatalf("DeleteDead() = %d, %v; want 2", n, err)
		}
		h.wantGone(x2.ID, x3.ID)
		h.wantStats(1, 0, 1, 0)
		if ds := h.listAll(queue.Filter{State: queue.Dead}); len(ds) != 0 {
			t.Fatalf("List(State: dead) after DeleteDead() = %s", short(deliveryIDs(ds)))
		}
		if ds := h.listAll(queue.Filter{}); len(ds) != 2 {
			t.Fatalf("List() after DeleteDead() = %s, want the pending and the delivered", short(deliveryIDs(ds)))
		}
	})

	t.Run("Pauses", func(t *testing.T) {
		h := newHarness(t, open, Options{})
		pauses := func(want ...queue.Pause) {
			t.Helper()
			got, err := h.q.Pauses(h.ctx)
			if err != nil {
				t.Fatalf("Pauses: %v", err)
			}
			key := func(p queue.Pause) string { return p.Target + "/" + p.Webhook }
			sort.Slice(got, func(i, j int) bool { return key(got[i]) < key(got[j]) })
			sort.Slice(want, func(i, j int) bool { return key(want[i]) < key(want[j]) })
			if len(got) != len(want) {
				t.Fatalf("Pauses = %+v, want %+v", got, want)
			}
			for i := range got {
				if key(got[i]) != key(want[i]) || got[i].Reason != want[i].Reason || !near(got[i].Since, want[i].Since, timeTol) {
					t.Fatalf("Pauses = %+v, want %+v", got, want)
				}
			}
		}
		set := func(target, webhook string, p *queue.Pause) {
			t.Helper()
			if err := h.q.SetPause(h.ctx, target, webhook, p); err != nil {
				t.Fatalf("SetPause(%s, %s, %v): %v", target, webhook, p, err)
			}
		}
		pauses()
		since := time.Now().Truncate(time.Millisecond)
		p1 := queue.Pause{Target: "t1", Webhook: "w1", Since: since, Reason: "receiver down"}
		p2 := queue.Pause{Target: "t2", Webhook: "w1", Since: since.Add(-time.Minute), Reason: "maintenance"}
		set("t1", "w1", &p1)
		set("t2", "w1", &p2)
		pauses(p1, p2)
		p1b := p1
		p1b.Reason, p1b.Since = "still down", since.Add(time.Second)
		set("t1", "w1", &p1b)
		pauses(p1b, p2)
		set("t1", "w1", nil)
		pauses(p2)
		set("t1", "w1", nil) // resuming what is not paused is fine
		set("t3", "w9", nil)
		pauses(p2)
		h.restart(false)
		pauses(p2)
		if h.crasher() {
			h.restart(true)
			pauses(p2)
		}
	})
}

// get2 is Get that returns nil for an unknown id.
func (h *harness) get2(id string) *queue.Delivery {
	h.t.Helper()
	d, err := h.q.Get(h.ctx, id)
	if errors.Is(err, queue.ErrNotFound) {
		return nil
	}
	if err != nil {
		h.t.Fatalf("Get(%s): %v", id, err)
	}
	return d
}

// leaseOne2 leases the two due deliveries a and b, releases b until an hour
// from now and returns a's lease.
func (h *harness) leaseOne2(a, b string) queue.Lease {
	h.t.Helper()
	ls := h.drain(queue.LeaseRequest{})
	if got, want := leaseIDs(ls), []string{min(a, b), max(a, b)}; !slices.Equal(got, want) {
		h.t.Fatalf("leased %v, want %v", got, want)
	}
	var la queue.Lease
	for _, l := range ls {
		if l.Delivery.ID == a {
			la = l
		} else {
			h.release(l, time.Now().Add(time.Hour))
		}
	}
	return la
}

// testListFilters builds deliveries in every state across targets, events,
// calls and webhooks, and checks every filter (alone and combined) against a
// model, with and without paging.
func testListFilters(t *testing.T, open Opener) {
	h := newHarness(t, open, Options{})
	later := time.Now().Add(time.Hour)
	type spec struct {
		e  ev
		ds []dl
	}
	specs := []spec{
		{ev{Target: "t1", Name: "call.started", CallID: "c1"}, []dl{{Webhook: "w1", NextAttempt: later}, {Webhook: "w2", State: queue.Dead}}},
		{ev{Target: "t1", Name: "call.ended", CallID: "c1"}, []dl{{Webhook: "w1", State: queue.Delivered}, {Webhook: "w2"}}},
		{ev{Target: "t2", Name: "call.ended", CallID: "c2"}, []dl{{Webhook: "w3", NextAttempt: later}, {Webhook: "w3", Destination: destB, NextAttempt: later}}},
		{ev{Target: "t2", Name: "call.started", CallID: "c3"}, []dl{{Webhook: "w3"}, {Webhook: "w3", NextAttempt: later}}},
		{ev{Target: "t1", Name: "call.ended", CallID: "c4"}, []dl{{Webhook: "w1"}, {Webhook: "w2", NextAttempt: later}}},
	}
	var all []*queue.Delivery // creation order
	state := map[string]queue.State{}
	var envs []*queue.Envelope
	for _, s := range specs {
		env := h.env(s.e, s.ds...)
		h.enqueue(env)
		envs = append(envs, env)
		for _, d := range env.Deliveries {
			all = append(all, d)
			state[d.ID] = d.State
		}
	}
	// The three due ones: one stays leased, one is delivered, one dies.
	leased, acked, killed := envs[1].Deliveries[1], envs[4].Deliveries[0], envs[3].Deliveries[0]
	ls := h.drain(queue.LeaseRequest{})
	h.wantLeased(ls, leased, acked, killed)
	for _, l := range ls {
		switch l.Delivery.ID {
		case leased.ID:
			state[leased.ID] = queue.Leased
		case acked.ID:
			h.ack(l)
			state[acked.ID] = queue.Delivered
		case killed.ID:
			h.kill(l, "dead")
			state[killed.ID] = queue.Dead
		}
	}
	h.wantStats(5, 1, 2, 2)

	filters := []queue.Filter{
		{},
		{State: queue.Pending}, {State: queue.Leased}, {State: queue.Delivered}, {State: queue.Dead},
		{Webhook: "w1"}, {Webhook: "w2"}, {Webhook: "w3"},
		{Event: "call.started"}, {Event: "call.ended"},
		{CallID: "c1"}, {CallID: "c3"},
		{Target: "t1"}, {Target: "t2"},
		{EventID: envs[2].Event.ID}, {EventID: envs[1].Event.ID},
		{State: queue.Pending, Target: "t2"},
		{State: queue.Dead, Webhook: "w2"},
		{Event: "call.ended", CallID: "c1"},
		{Target: "t1", Webhook: "w2", State: queue.Leased},
		{State: queue.Delivered, EventID: envs[4].Event.ID},
		{Webhook: "nope"},
		{Target: "t2", Webhook: "w1"},
	}
	match := func(f queue.Filter, d *queue.Delivery) bool {
		return (f.State == "" || state[d.ID] == f.State) && (f.Webhook == "" || d.Webhook == f.Webhook) &&
			(f.Event == "" || d.Event == f.Event) && (f.CallID == "" || d.CallID == f.CallID) &&
			(f.Target == "" || d.Target == f.Target) && (f.EventID == "" || d.EventID == f.EventID)
	}
	for _, f := range filters {
		var want []string
		for i := len(all) - 1; i >= 0; i-- {
			if match(f, all[i]) {
				want = append(want, all[i].ID)
			}
		}
		for _, limit := range []int{0, 1, 2, 3} {
			f.Limit = limit
			t.Run(filterName(f), func(t *testing.T) {
				got := h.listAll(f)
				if ids := deliveryIDs(got); !slices.Equal(ids, want) {
					t.Fatalf("List = %v, want %v (newest first)", ids, want)
				}
				for _, d := range got {
					if d.State != state[d.ID] {
						t.Errorf("List returned %s in state %s, want %s", d.ID, d.State, state[d.ID])
					}
					if len(d.Attempts) != 0 {
						t.Errorf("List loaded %d attempts of %s; only Get loads history", len(d.Attempts), d.ID)
					}
				}
			})
		}
	}
}

func filterName(f queue.Filter) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("state", string(f.State))
	add("webhook", f.Webhook)
	add("event", f.Event)
	add("call", f.CallID)
	add("target", f.Target)
	add("event_id", f.EventID)
	parts = append(parts, fmt.Sprintf("limit=%d", f.Limit))
	return strings.Join(parts, ",")
}
