// Package queuetest is the conformance suite that every [queue.Queue]
// backend runs unchanged, in the style of River's riverdrivertest.
//
// A backend wires it from one test of its own:
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T, dir string, o queuetest.Options) queue.Queue {
//			q, err := mybackend.Open(mybackend.Options{
//				Path:        filepath.Join(dir, "queue"),
//				MaxPending:  o.MaxPending,
//				DedupWindow: o.DedupWindow,
//			})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return q
//		})
//	}
//
// # What the suite assumes of the opener
//
//   - dir is a fresh directory per test (from t.TempDir). Opening again with
//     the same dir must see the same data: the restart tests close (or
//     crash) a queue and open dir again. A backend that keeps no files (a
//     remote server) must map dir to its own namespace (stream or bucket
//     prefix, schema) so that tests do not see each other's data.
//   - The suite closes every queue it opens, exactly once, or calls
//     SimulateCrash on it instead (see [Crasher]); the opener must not close
//     it itself. It may register cleanups for anything else it starts.
//   - Options.MaxPending caps pending plus leased deliveries (0: no cap);
//     Options.DedupWindow is the dedup window (0: the backend's default,
//     which the suite expects to be at least a minute).
//
// # Time
//
// Every test runs on the real clock with short durations (leases of a few
// hundred milliseconds), so a backend needs no clock injection. The whole
// suite sleeps for about five seconds in total.
//
// Times the suite stores and reads back (CreatedAt, ReceivedAt, NextAttempt
// given to Retry and Release, Pause.Since) are compared to the millisecond,
// so a backend may store them with millisecond precision.
//
// # Readings of the contract the suite relies on
//
// Where package queue leaves room, the suite takes these readings (each
// subtest's failure message names the property):
//
//   - The caller assigns Event.ID, Delivery.ID and CreatedAt; EventID in the
//     result is Event.ID. List's newest first is by CreatedAt.
//   - Lease is greedy: with Wait 0 and a handful of eligible deliveries, one
//     call hands out all it may (up to Max) rather than some. Repeated calls
//     are only used to drain.
//   - Budgets are the holder's accounting for one call: the backend does not
//     subtract deliveries the holder already holds. A destination in
//     DestinationBudget with 0 gets nothing; 0 means unlimited only for
//     DefaultDestinationBudget.
//   - A long poll returns as soon as something can be handed out: a new
//     enqueue, or a scheduled delivery (Retry, Release, NextAttempt) falling
//     due during the Wait.
//   - Dead with a zero Attempt records no attempt. Outcomes with a token whose
//     lease was finished, or was taken over by a newer lease (also one taken
//     after a restart), fail with ErrStaleLease; tokens that name no lease
//     fail with ErrStaleLease or ErrNotFound.
//   - RetryDead and DeleteDead skip ids that are not dead (returning nil,
//     ErrNotDead or ErrNotFound, and counting 0); Redeliver of a delivery that
//     is not dead is ErrNotDead, of an unknown one ErrNotFound.
//   - Acknowledged outcomes survive a restart (also a crash); leases held when
//     the queue stopped end at the latest when they would have expired.
//   - After Close every method returns ErrClosed, promptly; Close ends a
//     running long poll; a second Close returns nil or ErrClosed.
//
// The suite validates itself against a small in-memory reference backend
// (memqueue_test.go), which a -break flag can make wrong in named ways.
package queuetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Options carries the knobs the suite needs from a backend.
type Options struct {
	// MaxPending caps pending plus leased deliveries; 0 means no cap. An
	// envelope whose pending deliveries would take the count over the cap
	// must store nothing, and Enqueue return an error wrapping
	// queue.ErrFull.
	MaxPending int
	// DedupWindow is how long a dedup key is remembered; 0 means the
	// backend's default. The suite sets it (to one second) only to test
	// that a key is forgotten once the window has passed.
	DedupWindow time.Duration
}

// Opener opens a fresh queue on dir, or the existing one when dir was used
// before in the same test. It fails t itself when it cannot.
type Opener func(t *testing.T, dir string, o Options) queue.Queue

// Crasher is implemented by a backend that can stop as if its process died:
// without flushing buffers, releasing leases or running any shutdown path.
// When the queue returned by the opener implements it, the restart tests run
// twice, once after Close and once after SimulateCrash. After SimulateCrash
// the suite does not call Close on that queue; it only opens dir again.
type Crasher interface {
	SimulateCrash() error
}

// Run runs the whole suite against the backend that open opens.
func Run(t *testing.T, open Opener) {
	t.Helper()
	t.Run("Enqueue", func(t *testing.T) { testEnqueue(t, open) })
	t.Run("Dedup", func(t *testing.T) { testDedup(t, open) })
	t.Run("Lease", func(t *testing.T) { testLease(t, open) })
	t.Run("Outcome", func(t *testing.T) { testOutcome(t, open) })
	t.Run("Budget", func(t *testing.T) { testBudget(t, open) })
	t.Run("Order", func(t *testing.T) { testOrder(t, open) })
	t.Run("Store", func(t *testing.T) { testStore(t, open) })
	t.Run("Restart", func(t *testing.T) { testRestart(t, open) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, open) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, open) })
	t.Run("Close", func(t *testing.T) { testClose(t, open) })
}

// Durations the tests use. shortLease is short so that expiry tests are
// fast, and long enough that the calls made while it must still be held (a
// drain, an Extend) fit in it on a loaded machine: a CI run beside the
// fault suite once took over 300 ms for one NATS enqueue. slack is how long
// the suite allows for a call that should be prompt.
const (
	shortLease = time.Second
	longLease  = time.Minute
	slack      = time.Second
	timeTol    = time.Millisecond
)

// harness is one test's queue and the helpers around it.
type harness struct {
	t    *testing.T
	open Opener
	dir  string
	opts Options
	q    queue.Queue
	ctx  context.Context

	n           int       // id counter
	lastCreated time.Time // CreatedAt of the newest delivery built
}

func newHarness(t *testing.T, open Opener, o Options) *harness {
	t.Helper()
	h := &harness{t: t, open: open, dir: t.TempDir(), opts: o, ctx: t.Context()}
	h.q = open(t, h.dir, o)
	if h.q == nil {
		t.Fatal("opener returned a nil queue")
	}
	t.Cleanup(func() {
		if h.q != nil {
			if err := h.q.Close(); err != nil && !errors.Is(err, queue.ErrClosed) {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return h
}

// crasher reports whether the current queue can simulate a crash.
func (h *harness) crasher() bool {
	_, ok := h.q.(Crasher)
	return ok
}

// restart closes the queue (or crashes it, when crash is set) and opens the
// same dir again.
func (h *harness) restart(crash bool) {
	h.t.Helper()
	if crash {
		c, ok := h.q.(Crasher)
		if !ok {
			h.t.Fatal("restart(crash) on a queue that is no Crasher")
		}
		if err := c.SimulateCrash(); err != nil {
			h.t.Fatalf("SimulateCrash: %v", err)
		}
	} else if err := h.q.Close(); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	h.q = nil
	h.q = h.open(h.t, h.dir, h.opts)
	if h.q == nil {
		h.t.Fatal("opener returned a nil queue on reopen")
	}
}

func (h *harness) id(prefix string) string {
	h.n++
	return fmt.Sprintf("%s-%04d", prefix, h.n)
}

// created returns a CreatedAt later than every earlier one by at least a
// millisecond, truncated to the millisecond, so that newest-first order is
// unambiguous for a backend that keeps milliseconds.
func (h *harness) created() time.Time {
	c := time.Now().Truncate(time.Millisecond)
	if !c.After(h.lastCreated) {
		c = h.lastCreated.Add(time.Millisecond)
	}
	h.lastCreated = c
	return c
}

// ev describes the event of an envelope; empty fields get defaults.
type ev struct {
	Target, Name, CallID, DedupKey string
	ReceivedAt                     time.Time
}

// dl describes one delivery of an envelope; empty fields get defaults.
type dl struct {
	Webhook, Destination, OrderKey string
	State                          queue.State // "" is Pending
	NextAttempt                    time.Time
}

const (
	destA = "https://a.example:443"
	destB = "https://b.example:443"
	destC = "https://c.example:443"
	// noDest in dl.Destination builds a delivery without a Destination.
	noDest = "-"
)

// env builds an envelope for e with one delivery per d (none given: one
// default delivery).
func (h *harness) env(e ev, ds ...dl) *queue.Envelope {
	if e.Target == "" {
		e.Target = "t1"
	}
	if e.Name == "" {
		e.Name = "call.ended"
	}
	if e.CallID == "" {
		e.CallID = h.id("call")
	}
	if e.ReceivedAt.IsZero() {
		e.ReceivedAt = time.Now().Truncate(time.Millisecond)
	}
	if len(ds) == 0 {
		ds = []dl{{}}
	}
	eid := h.id("evt")
	env := &queue.Envelope{
		Event: queue.Event{
			ID: eid, Target: e.Target, Name: e.Name, CallID: e.CallID,
			ReceivedAt: e.ReceivedAt, Data: []byte(`{"event":"` + e.Name + `","id":"` + eid + `"}`),
		},
		DedupKey: e.DedupKey,
	}
	for _, s := range ds {
		env.Deliveries = append(env.Deliveries, h.delivery(&env.Event, s))
	}
	return env
}

func (h *harness) delivery(e *queue.Event, s dl) *queue.Delivery {
	if s.Webhook == "" {
		s.Webhook = "w1"
	}
	if s.Destination == "" {
		s.Destination = destA
	}
	if s.Destination == noDest {
		s.Destination = ""
	}
	if s.State == "" {
		s.State = queue.Pending
	}
	id := h.id("dlv")
	d := &queue.Delivery{
		ID: id, EventID: e.ID, Target: e.Target, Event: e.Name, CallID: e.CallID,
		Webhook: s.Webhook, Destination: s.Destination, OrderKey: s.OrderKey,
		Request: queue.Request{
			Method: "POST",
			URL:    "https://" + s.Webhook + ".example/hook/" + id,
			Header: [][2]string{{"Content-Type", "application/json"}, {"Authorization", "Bearer s3cret"}, {"X-A", "2"}, {"X-A", "1"}},
			Body:   []byte(`{"delivery":"` + id + `"}`),
		},
		Policy: queue.Policy{
			Timeout: 5 * time.Second, MaxAttempts: 7, BackoffMin: time.Second,
			BackoffMax: time.Minute, MaxAge: time.Hour, JSONRPC: true, SealedSecret: []byte("sealed"),
		},
		State:       s.State,
		CreatedAt:   h.created(),
		NextAttempt: s.NextAttempt,
	}
	switch s.State {
	case queue.Dead:
		d.LastError = "render: template failed for " + id
		d.NextAttempt = time.Time{}
	case queue.Delivered:
		start := d.CreatedAt
		d.Attempts = []queue.Attempt{{Start: start, Duration: 12 * time.Millisecond, Status: 200, Response: []byte("ok")}}
		d.AttemptCount = 1
		d.FinishedAt = start.Add(12 * time.Millisecond)
		d.NextAttempt = time.Time{}
	}
	return d
}

// enqueue enqueues env and fails the test on an error or a duplicate.
func (h *harness) enqueue(env *queue.Envelope) queue.EnqueueResult {
	h.t.Helper()
	r, err := h.q.Enqueue(h.ctx, env)
	if err != nil {
		h.t.Fatalf("Enqueue(%s): %v", env.Event.ID, err)
	}
	if r.Duplicate {
		h.t.Fatalf("Enqueue(%s): unexpected duplicate", env.Event.ID)
	}
	return r
}

// put enqueues one envelope with the given deliveries and returns them.
func (h *harness) put(e ev, ds ...dl) []*queue.Delivery {
	h.t.Helper()
	env := h.env(e, ds...)
	h.enqueue(env)
	return env.Deliveries
}

// put1 enqueues one delivery in an envelope of its own.
func (h *harness) put1(s dl) *queue.Delivery {
	h.t.Helper()
	return h.put(ev{}, s)[0]
}

func (h *harness) fill(req *queue.LeaseRequest) {
	if req.Max == 0 {
		req.Max = 100
	}
	if req.Lease == 0 {
		req.Lease = longLease
	}
}

// lease calls Lease once (Max 100 and a one-minute lease unless req says
// otherwise) and checks what every answer must satisfy.
func (h *harness) lease(req queue.LeaseRequest) []queue.Lease {
	h.t.Helper()
	h.fill(&req)
	before := time.Now()
	ls, err := h.q.Lease(h.ctx, req)
	if err != nil {
		h.t.Fatalf("Lease: %v", err)
	}
	h.checkLeases(req, before, ls)
	return ls
}

func (h *harness) checkLeases(req queue.LeaseRequest, before time.Time, ls []queue.Lease) {
	h.t.Helper()
	if len(ls) > req.Max {
		h.t.Fatalf("Lease(Max %d) returned %d leases", req.Max, len(ls))
	}
	seen := map[string]bool{}
	tokens := map[queue.Token]bool{}
	for _, l := range ls {
		if l.Delivery == nil {
			h.t.Fatal("Lease returned a lease without a delivery")
		}
		d := l.Delivery
		if seen[d.ID] {
			h.t.Fatalf("Lease returned %s twice in one answer", d.ID)
		}
		seen[d.ID] = true
		if l.Token == "" || tokens[l.Token] {
			h.t.Fatalf("Lease returned an empty or repeated token %q for %s", l.Token, d.ID)
		}
		tokens[l.Token] = true
		if d.State != queue.Leased {
			h.t.Errorf("leased %s has State %q, want leased", d.ID, d.State)
		}
		if len(d.Attempts) != 0 {
			h.t.Errorf("leased %s has %d attempts loaded; Lease must not load history", d.ID, len(d.Attempts))
		}
		if l.Until.Before(before.Add(req.Lease-timeTol)) || l.Until.After(time.Now().Add(req.Lease+slack)) {
			h.t.Errorf("lease of %s ends %v, want about now + %v", d.ID, time.Until(l.Until), req.Lease)
		}
		if req.Paused[d.WebhookKey()] {
			h.t.Errorf("leased %s of paused webhook %s", d.ID, d.WebhookKey())
		}
	}
	// Budgets are per call.
	perDest := map[string]int{}
	perHook := map[string]int{}
	for _, l := range ls {
		d := l.Delivery
		if d.Destination != "" {
			perDest[d.Destination]++
		}
		perHook[d.WebhookKey()]++
	}
	for dest, n := range perDest {
		b, ok := req.DestinationBudget[dest]
		if !ok {
			b = req.DefaultDestinationBudget
			if b == 0 {
				continue
			}
		}
		if n > max(b, 0) {
			h.t.Errorf("Lease handed out %d deliveries for destination %s over its budget %d", n, dest, b)
		}
	}
	for hook, n := range perHook {
		if b, ok := req.WebhookBudget[hook]; ok && n > max(b, 0) {
			h.t.Errorf("Lease handed out %d deliveries for webhook %s over its budget %d", n, hook, b)
		}
	}
}

// drain leases with Wait 0 until a call returns nothing and returns every
// lease handed out (a backend may hand out fewer than Max per call).
func (h *harness) drain(req queue.LeaseRequest) []queue.Lease {
	h.t.Helper()
	req.Wait = 0
	var all []queue.Lease
	seen := map[string]bool{}
	for range 10000 {
		ls := h.lease(req)
		if len(ls) == 0 {
			return all
		}
		for _, l := range ls {
			if seen[l.Delivery.ID] {
				h.t.Fatalf("delivery %s leased twice while its lease is held", l.Delivery.ID)
			}
			seen[l.Delivery.ID] = true
		}
		all = append(all, ls...)
	}
	h.t.Fatal("drain: Lease kept returning deliveries")
	return nil
}

// leaseOne leases exactly the one due delivery with that id (the test made
// sure it is the only one due) and returns its lease.
func (h *harness) leaseOne(id string, lease time.Duration) queue.Lease {
	h.t.Helper()
	ls := h.drain(queue.LeaseRequest{Lease: lease})
	if len(ls) != 1 || ls[0].Delivery.ID != id {
		h.t.Fatalf("leased %s, want only %s", short(leaseIDs(ls)), id)
	}
	return ls[0]
}

// short formats ids for a failure message, eliding the middle of a long list.
func short(ids []string) string {
	if len(ids) <= 12 {
		return fmt.Sprint(ids)
	}
	return fmt.Sprintf("%v ... %v (%d in all)", ids[:6], ids[len(ids)-3:], len(ids))
}

func leaseIDs(ls []queue.Lease) []string {
	ids := make([]string, 0, len(ls))
	for _, l := range ls {
		ids = append(ids, l.Delivery.ID)
	}
	slices.Sort(ids)
	return ids
}

func deliveryIDs(ds []*queue.Delivery) []string {
	ids := make([]string, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

func sortedIDs(ds ...*queue.Delivery) []string {
	ids := deliveryIDs(ds)
	slices.Sort(ids)
	return ids
}

// leaseWhenDue checks that want, scheduled for due, is not leased before
// it and is then handed out by a long poll. A drain that ends after due (a
// loaded machine: a CI run once took over 300 ms to enqueue one delivery)
// cannot tell early from on time, so what it leased then counts as the
// long poll's; a drain that ends before due must lease nothing.
func (h *harness) leaseWhenDue(due time.Time, want ...*queue.Delivery) []queue.Lease {
	h.t.Helper()
	early := func(ls []queue.Lease) {
		h.t.Helper()
		if len(ls) > 0 && time.Now().Before(due.Add(-timeTol)) {
			h.t.Fatalf("leased %v %v before %v was due, want nothing yet", short(leaseIDs(ls)), time.Until(due).Round(time.Millisecond), short(sortedIDs(want...)))
		}
	}
	ls := h.drain(queue.LeaseRequest{})
	early(ls)
	if len(ls) == 0 {
		ls = h.lease(queue.LeaseRequest{Wait: 3 * time.Second})
		early(ls)
	}
	h.wantLeased(ls, want...)
	return ls
}

func (h *harness) wantLeased(ls []queue.Lease, want ...*queue.Delivery) {
	h.t.Helper()
	if got, w := leaseIDs(ls), sortedIDs(want...); !slices.Equal(got, w) {
		h.t.Fatalf("leased %s, want %s", short(got), short(w))
	}
}

func (h *harness) get(id string) *queue.Delivery {
	h.t.Helper()
	d, err := h.q.Get(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", id, err)
	}
	if d == nil || d.ID != id {
		h.t.Fatalf("Get(%s) returned %+v", id, d)
	}
	return d
}

func (h *harness) wantState(id string, s queue.State) *queue.Delivery {
	h.t.Helper()
	d := h.get(id)
	if d.State != s {
		h.t.Fatalf("%s is %s, want %s", id, d.State, s)
	}
	return d
}

func (h *harness) wantGone(ids ...string) {
	h.t.Helper()
	for _, id := range ids {
		if d, err := h.q.Get(h.ctx, id); err == nil && d != nil {
			h.t.Fatalf("Get(%s) found it in state %s; want ErrNotFound", id, d.State)
		} else if !errors.Is(err, queue.ErrNotFound) {
			h.t.Fatalf("Get(%s): %v; want ErrNotFound", id, err)
		}
	}
}

func (h *harness) wantNoEvent(id string) {
	h.t.Helper()
	if e, err := h.q.GetEvent(h.ctx, id); err == nil && e != nil {
		h.t.Fatalf("GetEvent(%s) found the event; want ErrNotFound", id)
	} else if !errors.Is(err, queue.ErrNotFound) {
		h.t.Fatalf("GetEvent(%s): %v; want ErrNotFound", id, err)
	}
}

func (h *harness) stats() queue.Stats {
	h.t.Helper()
	s, err := h.q.Stats(h.ctx)
	if err != nil {
		h.t.Fatalf("Stats: %v", err)
	}
	return s
}

// wantStats checks the four counters.
func (h *harness) wantStats(pending, leased, delivered, dead int) queue.Stats {
	h.t.Helper()
	s := h.stats()
	if s.Pending != pending || s.Leased != leased || s.Delivered != delivered || s.Dead != dead {
		h.t.Fatalf("Stats = pending %d leased %d delivered %d dead %d; want %d %d %d %d",
			s.Pending, s.Leased, s.Delivered, s.Dead, pending, leased, delivered, dead)
	}
	return s
}

func (h *harness) ack(l queue.Lease) {
	h.t.Helper()
	if err := h.q.Ack(h.ctx, l.Token, okAttempt()); err != nil {
		h.t.Fatalf("Ack(%s): %v", l.Delivery.ID, err)
	}
}

func (h *harness) kill(l queue.Lease, reason string) {
	h.t.Helper()
	if err := h.q.Dead(h.ctx, l.Token, failAttempt(reason), reason); err != nil {
		h.t.Fatalf("Dead(%s): %v", l.Delivery.ID, err)
	}
}

func (h *harness) retry(l queue.Lease, next time.Time, reason string) {
	h.t.Helper()
	if err := h.q.Retry(h.ctx, l.Token, failAttempt(reason), next, reason); err != nil {
		h.t.Fatalf("Retry(%s): %v", l.Delivery.ID, err)
	}
}

func (h *harness) release(l queue.Lease, next time.Time) {
	h.t.Helper()
	if err := h.q.Release(h.ctx, l.Token, next); err != nil {
		h.t.Fatalf("Release(%s): %v", l.Delivery.ID, err)
	}
}

func okAttempt() queue.Attempt {
	return queue.Attempt{Start: time.Now().Truncate(time.Millisecond), Duration: 3 * time.Millisecond, Status: 204, Response: []byte("accepted")}
}

func failAttempt(reason string) queue.Attempt {
	return queue.Attempt{Start: time.Now().Truncate(time.Millisecond), Duration: 5 * time.Millisecond, Status: 503, Error: reason, Response: []byte("busy")}
}

// near reports whether a and b are within tol of each other.
func near(a, b time.Time, tol time.Duration) bool {
	d := a.Sub(b)
	return d <= tol && d >= -tol
}

// recent reports whether a backend-stamped time lies between since (minus
// a little) and now (plus a little).
func recent(ts, since time.Time) bool {
	return !ts.IsZero() && !ts.Before(since.Add(-slack)) && !ts.After(time.Now().Add(slack))
}

func isStaleOrNotFound(err error) bool {
	return errors.Is(err, queue.ErrStaleLease) || errors.Is(err, queue.ErrNotFound)
}

// sameDelivery checks the fields the caller gave at enqueue against what
// the backend returned (state, times set by the backend and history aside).
func sameDelivery(t *testing.T, got, want *queue.Delivery) {
	t.Helper()
	var diffs []string
	eq := func(name string, g, w any) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	eq("ID", got.ID, want.ID)
	eq("EventID", got.EventID, want.EventID)
	eq("Target", got.Target, want.Target)
	eq("Event", got.Event, want.Event)
	eq("CallID", got.CallID, want.CallID)
	eq("Webhook", got.Webhook, want.Webhook)
	eq("Destination", got.Destination, want.Destination)
	eq("OrderKey", got.OrderKey, want.OrderKey)
	eq("Request.Method", got.Request.Method, want.Request.Method)
	eq("Request.URL", got.Request.URL, want.Request.URL)
	if !slices.Equal(got.Request.Header, want.Request.Header) {
		diffs = append(diffs, fmt.Sprintf("Request.Header = %q, want %q (order kept)", got.Request.Header, want.Request.Header))
	}
	if !bytes.Equal(got.Request.Body, want.Request.Body) {
		diffs = append(diffs, fmt.Sprintf("Request.Body = %q, want %q", got.Request.Body, want.Request.Body))
	}
	gp, wp := got.Policy, want.Policy
	if !bytes.Equal(gp.SealedSecret, wp.SealedSecret) {
		diffs = append(diffs, "Policy.SealedSecret differs")
	}
	gp.SealedSecret, wp.SealedSecret = nil, nil
	if !reflectEqualPolicy(gp, wp) {
		diffs = append(diffs, fmt.Sprintf("Policy = %+v, want %+v", gp, wp))
	}
	if !near(got.CreatedAt, want.CreatedAt, timeTol) {
		diffs = append(diffs, fmt.Sprintf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt))
	}
	if len(diffs) > 0 {
		t.Errorf("delivery %s as stored:\n  %s", want.ID, strings.Join(diffs, "\n  "))
	}
}

func reflectEqualPolicy(a, b queue.Policy) bool {
	return a.Timeout == b.Timeout && a.MaxAttempts == b.MaxAttempts && a.BackoffMin == b.BackoffMin &&
		a.BackoffMax == b.BackoffMax && a.MaxAge == b.MaxAge && a.JSONRPC == b.JSONRPC
}

func sameAttempt(t *testing.T, id string, i int, got, want queue.Attempt) {
	t.Helper()
	if !near(got.Start, want.Start, timeTol) || got.Duration != want.Duration || got.Status != want.Status ||
		got.Error != want.Error || !bytes.Equal(got.Response, want.Response) {
		t.Errorf("%s attempt %d = %+v, want %+v", id, i, got, want)
	}
}

func cancelled(ctx context.Context) context.Context {
	c, cancel := context.WithCancel(ctx)
	cancel()
	return c
}
