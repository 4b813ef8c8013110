package natswq

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// gate holds a node's partition reader back while closed is false.
type gate struct {
	mu   sync.Mutex
	held bool
	open chan struct{}
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) hold() { g.mu.Lock(); g.held = true; g.mu.Unlock() }

func (g *gate) release() {
	g.mu.Lock()
	if g.held {
		g.held = false
		close(g.open)
	}
	g.mu.Unlock()
}

func (g *gate) wait(int) {
	g.mu.Lock()
	held, ch := g.held, g.open
	g.mu.Unlock()
	if held {
		<-ch
	}
}

// TestOrderAcrossNodes: node B stores a call's first event while node A,
// which owns the call's partition, has not read it yet; then the second
// event goes in through A. The two deliveries must go out in order, one
// at a time: A must not lease the second before it has read the first.
func TestOrderAcrossNodes(t *testing.T) {
	dir := t.TempDir()
	g := newGate()
	a, err := open(context.Background(), Options{URLs: urls, Bucket: bucketFor(dir), Node: "node-a", Partitions: 1, Replicas: replicas}, g.wait)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer g.release()
	b := openTest(t, dir, Options{Node: "node-b", Partitions: 1})
	defer b.Close()
	if got := a.ownedList(); len(got) != 1 {
		t.Fatalf("node a owns %v, want the one partition", got)
	}

	ctx := t.Context()
	mk := func(n int) *queue.Envelope {
		id := []string{"evt-1", "evt-2"}[n]
		did := []string{"dlv-1", "dlv-2"}[n]
		return &queue.Envelope{
			Event: queue.Event{ID: id, Target: "t1", Name: "call.updated", CallID: "call-x", ReceivedAt: time.Now()},
			Deliveries: []*queue.Delivery{{
				ID: did, EventID: id, Target: "t1", Event: "call.updated", CallID: "call-x", Webhook: "w1",
				Destination: "https://r.example:443", OrderKey: "t1/w1/call-x", State: queue.Pending,
				Request:   queue.Request{Method: "POST", URL: "https://r.example/hook", Body: []byte(`{}`)},
				Policy:    queue.Policy{Timeout: time.Second, MaxAttempts: 3},
				CreatedAt: time.Now(),
			}},
		}
	}
	g.hold()
	if _, err := b.Enqueue(ctx, mk(0)); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		_, err := a.Enqueue(ctx, mk(1))
		second <- err
	}()
	// While A has not read the first event, it must lease nothing of the
	// call (the old mirror leased the second here: it applied its own
	// write ahead of its watch).
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		ls, err := a.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) > 0 {
			t.Fatalf("node a leased %s before it had read %s, stored first by node b", ls[0].Delivery.ID, "dlv-1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.release()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	ls, err := a.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Delivery.ID != "dlv-1" {
		t.Fatalf("leased %d deliveries (first %v), want dlv-1 alone", len(ls), ids(ls))
	}
	if more, _ := a.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute}); len(more) != 0 {
		t.Fatalf("leased %v while dlv-1 is in flight: two deliveries of one call at once", ids(more))
	}
	if err := a.Ack(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
		t.Fatal(err)
	}
	ls, err = a.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Delivery.ID != "dlv-2" {
		t.Fatalf("after dlv-1 was delivered leased %v, want dlv-2", ids(ls))
	}
}

func ids(ls []queue.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Delivery.ID)
	}
	return out
}
