package embedded

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

var ctx = context.Background()

func openT(t testing.TB, dir string, o Options) *Queue {
	t.Helper()
	o.Dir = dir
	q, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func env(id string, ds ...*queue.Delivery) *queue.Envelope {
	return &queue.Envelope{Event: queue.Event{ID: "ev-" + id, Target: "t", Name: "after_call", CallID: "c-" + id, ReceivedAt: time.Now()},
		DedupKey: "k-" + id, Deliveries: ds}
}

func dl(id, dest string) *queue.Delivery {
	return &queue.Delivery{ID: id, Target: "t", Event: "after_call", CallID: "c", Webhook: "w", Destination: dest,
		Request: queue.Request{Method: "POST", URL: "http://x/" + id, Body: []byte("{}")}, CreatedAt: time.Now()}
}

func TestSmoke(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir, Options{})
	for i := range 10 {
		res, err := q.Enqueue(ctx, env(fmt.Sprint(i), dl(fmt.Sprint("d", i), "a"), dl(fmt.Sprint("e", i), "b")))
		if err != nil || res.Duplicate || len(res.Refs) != 2 {
			t.Fatal(res, err)
		}
	}
	res, err := q.Enqueue(ctx, env("3", dl("zz", "a")))
	if err != nil || !res.Duplicate || res.Refs[0].ID != "d3" {
		t.Fatal(res, err)
	}
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 100, Lease: time.Minute, DefaultDestinationBudget: 3})
	if err != nil || len(ls) != 6 {
		t.Fatal(len(ls), err)
	}
	st, _ := q.Stats(ctx)
	if st.Pending != 14 || st.Leased != 6 {
		t.Fatal(st)
	}
	for _, l := range ls {
		if err := q.Ack(ctx, l.Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Ack(ctx, ls[0].Token, queue.Attempt{}); err == nil {
		t.Fatal("second ack accepted")
	}
	st, _ = q.Stats(ctx)
	if st.Pending != 14 || st.Leased != 0 || st.Delivered != 6 {
		t.Fatal(st)
	}
	d, err := q.Get(ctx, ls[0].Delivery.ID)
	if err != nil || d.State != queue.Delivered || len(d.Attempts) != 1 {
		t.Fatal(d, err)
	}
	p, err := q.List(ctx, queue.Filter{State: queue.Pending, Limit: 5})
	if err != nil || len(p.Deliveries) != 5 || p.Next == "" {
		t.Fatal(p, err)
	}
	q.Close()
	q = openT(t, dir, Options{})
	st, _ = q.Stats(ctx)
	if st.Pending != 14 || st.Delivered != 6 {
		t.Fatal(st)
	}
	ls, err = q.Lease(ctx, queue.LeaseRequest{Max: 100, Lease: time.Minute})
	if err != nil || len(ls) != 14 {
		t.Fatal(len(ls), err)
	}
	if err := q.Prune(ctx, queue.PruneRequest{DeliveredBefore: time.Now().Add(time.Hour), EventsBefore: time.Now().Add(time.Hour), DedupBefore: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st, _ = q.Stats(ctx)
	if st.Delivered != 0 || st.Leased != 14 {
		t.Fatal(st)
	}
}
