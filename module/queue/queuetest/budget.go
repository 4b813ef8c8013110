package queuetest

import (
	"maps"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// count groups leases by a key of their delivery.
func count(ls []queue.Lease, key func(*queue.Delivery) string) map[string]int {
	m := map[string]int{}
	for _, l := range ls {
		m[key(l.Delivery)]++
	}
	return m
}

func byDest(d *queue.Delivery) string { return d.Destination }
func byHook(d *queue.Delivery) string { return d.WebhookKey() }

func wantCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	maps.DeleteFunc(want, func(_ string, n int) bool { return n == 0 })
	if !maps.Equal(got, want) {
		t.Fatalf("%s: leased %v, want %v", what, got, want)
	}
}

func testBudget(t *testing.T, open Opener) {
	// The first Lease of each case must hand out exactly what the budgets
	// allow (few deliveries, Max larger than all of them); a drain then
	// checks that repeated calls, each with the same budgets, never exceed
	// them and that nothing the budgets exclude is ever handed out.
	type put struct {
		n      int
		d      dl
		target string // "" is t1
	}
	cases := []struct {
		name  string
		puts  []put
		req   queue.LeaseRequest
		first map[string]int // by destination, or by webhook key when byHook
		hook  bool
		never func(*queue.Delivery) bool
	}{
		{
			name:  "DefaultDestination",
			puts:  []put{{3, dl{Destination: destA}, ""}, {3, dl{Destination: destB}, ""}, {2, dl{Destination: destC}, ""}},
			req:   queue.LeaseRequest{DefaultDestinationBudget: 1},
			first: map[string]int{destA: 1, destB: 1, destC: 1},
		},
		{
			name:  "DestinationMap",
			puts:  []put{{3, dl{Destination: destA}, ""}, {3, dl{Destination: destB}, ""}, {2, dl{Destination: destC}, ""}},
			req:   queue.LeaseRequest{DestinationBudget: map[string]int{destA: 2, destB: 0}},
			first: map[string]int{destA: 2, destC: 2},
			never: func(d *queue.Delivery) bool { return d.Destination == destB },
		},
		{
			name: "DestinationMapOverDefault",
			puts: []put{{3, dl{Destination: destA}, ""}, {3, dl{Destination: destB}, ""}, {2, dl{Destination: destC}, ""}},
			req: queue.LeaseRequest{DestinationBudget: map[string]int{destA: 3, destB: 0},
				DefaultDestinationBudget: 1},
			first: map[string]int{destA: 3, destC: 1},
			never: func(d *queue.Delivery) bool { return d.Destination == destB },
		},
		{
			name:  "NoDestinationUncapped",
			puts:  []put{{3, dl{Destination: noDest}, ""}, {3, dl{Destination: destA}, ""}},
			req:   queue.LeaseRequest{DefaultDestinationBudget: 1},
			first: map[string]int{"": 3, destA: 1},
		},
		{
			name: "Webhook",
			puts: []put{{3, dl{Webhook: "w1"}, ""}, {3, dl{Webhook: "w2"}, ""}, {2, dl{Webhook: "w3"}, ""}, {2, dl{Webhook: "w1"}, "t2"}},
			req: queue.LeaseRequest{WebhookBudget: map[string]int{
				queue.WebhookKey("t1", "w1"): 1, queue.WebhookKey("t1", "w3"): 0,
				queue.WebhookKey("t2", "w2"): 0, // another target's webhook of the same name
			}},
			first: map[string]int{"t1/w1": 1, "t1/w2": 3, "t2/w1": 2},
			hook:  true,
			never: func(d *queue.Delivery) bool { return d.WebhookKey() == "t1/w3" },
		},
		{
			name:  "WebhookAndDestination",
			puts:  []put{{3, dl{Webhook: "w1", Destination: destA}, ""}, {3, dl{Webhook: "w1", Destination: destB}, ""}, {2, dl{Webhook: "w2", Destination: destC}, ""}},
			req:   queue.LeaseRequest{DestinationBudget: map[string]int{destA: 2}, WebhookBudget: map[string]int{"t1/w1": 4}},
			first: map[string]int{"t1/w1": 4, "t1/w2": 2},
			hook:  true,
		},
		{
			name:  "Paused",
			puts:  []put{{5, dl{Webhook: "w1"}, ""}, {2, dl{Webhook: "w2"}, ""}, {1, dl{Webhook: "w3"}, ""}, {2, dl{Webhook: "w1"}, "t2"}},
			req:   queue.LeaseRequest{Paused: map[string]bool{"t1/w1": true, "t1/w3": false, "t2/w2": true}},
			first: map[string]int{"t1/w2": 2, "t1/w3": 1, "t2/w1": 2},
			hook:  true,
			never: func(d *queue.Delivery) bool { return d.WebhookKey() == "t1/w1" },
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, open, Options{})
			total := 0
			for _, p := range c.puts {
				for range p.n {
					h.put(ev{Target: p.target}, p.d)
					total++
				}
			}
			req := c.req
			req.Max = 100
			first := h.lease(req)
			key := byDest
			if c.hook {
				key = byHook
			}
			wantCounts(t, "first Lease", count(first, key), c.first)
			rest := h.drain(req)
			held := len(first) + len(rest)
			for _, l := range append(first, rest...) {
				if c.never != nil && c.never(l.Delivery) {
					t.Fatalf("leased %s (%s at %s), which the request excludes", l.Delivery.ID, l.Delivery.WebhookKey(), l.Delivery.Destination)
				}
			}
			// Everything else goes out without budgets.
			rest = h.drain(queue.LeaseRequest{})
			if held+len(rest) != total {
				t.Fatalf("leased %d in all, want %d", held+len(rest), total)
			}
			h.wantStats(0, total, 0, 0)
		})
	}

	t.Run("PerCall", func(t *testing.T) {
		// Budgets are the holder's accounting: the backend must not subtract
		// what the holder already holds.
		h := newHarness(t, open, Options{})
		for range 3 {
			h.put1(dl{Destination: destA})
		}
		req := queue.LeaseRequest{DestinationBudget: map[string]int{destA: 1}, WebhookBudget: map[string]int{"t1/w1": 1}}
		for i := range 3 {
			if ls := h.lease(req); len(ls) != 1 {
				t.Fatalf("call %d with budget 1 leased %d, want 1", i, len(ls))
			}
		}
		if ls := h.lease(req); len(ls) != 0 {
			t.Fatalf("leased %v with everything leased", short(leaseIDs(ls)))
		}
	})

	t.Run("Fairness", func(t *testing.T) { testFairness(t, open) })
}

// testFairness builds a backlog for one destination and webhook and checks
// that a delivery for another is handed out by the first Lease whichever way
// the backlog is excluded (destination budget 0, webhook budget 0, paused),
// promptly, and in about the same time at 500 and 5,000 blocked.
func testFairness(t *testing.T, open Opener) {
	h := newHarness(t, open, Options{})
	hot := dl{Webhook: "hot", Destination: destA}
	grow := func(to, have int) {
		for have < to {
			n := min(500, to-have)
			ds := make([]dl, n)
			for i := range ds {
				ds[i] = hot
			}
			h.put(ev{}, ds...)
			have += n
		}
	}
	grow(500, 0)
	cool := h.put1(dl{Webhook: "cool", Destination: destB})

	variants := []struct {
		name string
		req  queue.LeaseRequest
	}{
		{"DestinationBudget0", queue.LeaseRequest{DestinationBudget: map[string]int{destA: 0}}},
		{"DefaultDestinationBudget", queue.LeaseRequest{DestinationBudget: map[string]int{destA: 0}, DefaultDestinationBudget: 5}},
		{"WebhookBudget0", queue.LeaseRequest{WebhookBudget: map[string]int{"t1/hot": 0}}},
		{"Paused", queue.LeaseRequest{Paused: map[string]bool{"t1/hot": true}}},
	}
	// measure returns, per variant, the fastest of three first Lease calls,
	// each of which must hand out the cool delivery.
	measure := func(backlog int) []time.Duration {
		out := make([]time.Duration, len(variants))
		for i, v := range variants {
			best := time.Duration(1 << 62)
			for range 3 {
				req := v.req
				req.Max = 1
				start := time.Now()
				ls := h.lease(req)
				el := time.Since(start)
				if len(ls) != 1 || ls[0].Delivery.ID != cool.ID {
					t.Fatalf("%s with %d blocked: first Lease handed out %v, want %s", v.name, backlog, short(leaseIDs(ls)), cool.ID)
				}
				best = min(best, el)
				// Due again now, which is later than every blocked one.
				h.release(ls[0], time.Now())
			}
			if best > slack {
				t.Errorf("%s with %d blocked: Lease took %v", v.name, backlog, best)
			}
			out[i] = best
		}
		return out
	}
	small := measure(500)
	grow(5000, 500)
	large := measure(5000)
	for i, v := range variants {
		t.Logf("%s: %v at 500 blocked, %v at 5000", v.name, small[i], large[i])
		if large[i] > 4*small[i]+100*time.Millisecond {
			t.Errorf("%s: Lease took %v with 5,000 blocked and %v with 500; skipping a blocked backlog must not grow with it",
				v.name, large[i], small[i])
		}
	}

	// A long poll with only blocked work wakes for new unblocked work.
	req := variants[0].req
	req.Max, req.Lease = 1, longLease
	if ls := h.lease(req); len(ls) != 1 || ls[0].Delivery.ID != cool.ID {
		t.Fatalf("leased %s, want %s", short(leaseIDs(ls)), cool.ID)
	}
	env := h.env(ev{}, dl{Webhook: "cool", Destination: destB})
	enqueued := make(chan error, 1)
	time.AfterFunc(100*time.Millisecond, func() {
		_, err := h.q.Enqueue(h.ctx, env)
		enqueued <- err
	})
	defer func() {
		if err := <-enqueued; err != nil {
			t.Errorf("Enqueue: %v", err)
		}
	}()
	start := time.Now()
	req.Wait = 3 * time.Second
	ls, err := h.q.Lease(h.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); len(ls) != 1 || ls[0].Delivery.ID != env.Deliveries[0].ID || el > 100*time.Millisecond+slack {
		t.Fatalf("long poll over 5,000 blocked returned %s after %v, want %s soon after 100ms", short(leaseIDs(ls)), el, env.Deliveries[0].ID)
	}
	s := h.stats()
	if s.Pending != 5000 || s.Leased != 2 {
		t.Fatalf("Stats %+v, want 5000 pending and 2 leased", s)
	}
}
