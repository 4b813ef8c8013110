package natswq

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
)

// TestTwoNodesShareWork: a second node takes half the partitions; work
// enqueued through either node is leased once, by the owner of its call's
// partition; when a node closes, the other takes its partitions and its
// unfinished work.
func TestTwoNodesShareWork(t *testing.T) {
	dir := t.TempDir()
	a := openTest(t, dir, Options{Node: "node-a"})
	defer a.Close()
	b := openTest(t, dir, Options{Node: "node-b"})
	defer b.Close()
	deadline := time.Now().Add(15 * time.Second)
	for len(a.ownedList()) != 2 || len(b.ownedList()) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 15s node a owns %v and node b %v, want 2 each", a.ownedList(), b.ownedList())
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx := t.Context()
	const n = 40
	for i := range n {
		via := a
		if i%2 == 1 {
			via = b
		}
		if _, err := via.Enqueue(ctx, env("s"+string(rune('a'+i%26))+strings.Repeat("x", i/26), dlv("w", "", ""))); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	lease := func(q *Queue, name string) []queue.Lease {
		var out []queue.Lease
		for {
			ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 100, Lease: time.Minute, Wait: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) == 0 {
				return out
			}
			for _, l := range ls {
				if other, dup := seen[l.Delivery.ID]; dup {
					t.Fatalf("%s leased by %s and %s", l.Delivery.ID, other, name)
				}
				seen[l.Delivery.ID] = name
			}
			out = append(out, ls...)
		}
	}
	la, lb := lease(a, "a"), lease(b, "b")
	if len(la)+len(lb) != n || len(la) == 0 || len(lb) == 0 {
		t.Fatalf("node a leased %d and node b %d, want %d in all, some on each", len(la), len(lb), n)
	}
	// TargetStats on either node counts both nodes' partitions (the other
	// owner's as it published them, within about a second).
	target := lb[0].Delivery.Target
	for name, q := range map[string]*Queue{"a": a, "b": b} {
		var s queue.Stats
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if s, _ = q.TargetStats(ctx, target); s.Leased == n {
				break
			}
		}
		if s.Leased != n || s.Pending+s.Delivered+s.Dead != 0 {
			t.Fatalf("TargetStats(%q) on node %s = %+v, want all %d leased across both nodes", target, name, s, n)
		}
		if s, _ := q.TargetStats(ctx, target+"-other"); s != (queue.Stats{}) {
			t.Fatalf("TargetStats of an unknown target on node %s = %+v, want nothing", name, s)
		}
	}
	// Operator views on either node cover both nodes' partitions: List
	// pages through the owners, RetryDead() asks them for their dead.
	for name, q := range map[string]*Queue{"a": a, "b": b} {
		var all []*queue.Delivery
		f := queue.Filter{State: queue.Leased, Limit: 7}
		for {
			pg, err := q.List(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, pg.Deliveries...)
			if pg.Next == "" {
				break
			}
			f.Cursor = pg.Next
		}
		if len(all) != n {
			t.Fatalf("List(leased) on node %s found %d, want all %d across both nodes", name, len(all), n)
		}
	}
	if err := b.Dead(ctx, lb[len(lb)-1].Token, queue.Attempt{}, "gone"); err != nil {
		t.Fatal(err)
	}
	if k, err := a.RetryDead(ctx); err != nil || k != 1 {
		t.Fatalf("RetryDead() on node a of a delivery node b killed = %d, %v; want 1", k, err)
	}
	// B acks half of its leases and closes: the rest go back to A.
	for _, l := range lb[:len(lb)/2] {
		if err := b.Ack(ctx, l.Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	want := len(lb) - len(lb)/2
	var got []queue.Lease
	for time.Now().Before(deadline.Add(10*time.Second)) && len(got) < want {
		ls, err := a.Lease(ctx, queue.LeaseRequest{Max: 100, Lease: time.Minute, Wait: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ls...)
	}
	if len(got) != want || len(a.ownedList()) != 4 {
		t.Fatalf("after node b closed node a owns %v and leased %d of b's %d unfinished", a.ownedList(), len(got), want)
	}
	if s, _ := a.Stats(ctx); s.Delivered != len(lb)/2 || s.Leased != n-len(lb)/2 {
		t.Fatalf("Stats on node a = %+v, want %d delivered and %d leased", s, len(lb)/2, n-len(lb)/2)
	}
}

// A node that finds the previous backend's bucket refuses to start and
// says how to drain it: queued work is never silently left behind.
func TestOldBucketIsAStartError(t *testing.T) {
	dir := t.TempDir()
	bucket := bucketFor(dir)
	c := openTest(t, t.TempDir(), Options{})
	_, err := c.js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	kv, _ := c.js.KeyValue(t.Context(), bucket)
	if _, err := kv.Put(t.Context(), "d.old", []byte(`{"id":"old","state":"pending"}`)); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = Open(Options{URLs: urls, Bucket: bucket, Replicas: replicas})
	if err == nil || !strings.Contains(err.Error(), "holding 1 records") || !strings.Contains(err.Error(), "drain it first with the previous callhook version") {
		t.Fatalf("Open beside the old bucket: %v, want a start error saying how to drain it", err)
	}
}

func TestPartitionCountIsAStartError(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{Partitions: 4}).Close()
	_, err := Open(Options{URLs: urls, Bucket: bucketFor(dir), Replicas: replicas, Partitions: 8})
	if err == nil || !strings.Contains(err.Error(), "`partitions 4`") {
		t.Fatalf("Open with another partition count: %v, want a start error naming `partitions 4`", err)
	}
}
