package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/callhook/caddy-callhook/module/queue"
)

// TestTargetCountsOfOlderStore opens a store written before the per-target
// counters existed (no counter keys, no ready mark): they are counted once
// from the target index, and kept from then on.
func TestTargetCountsOfOlderStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	q := openT(t, dir, Options{})
	now := time.Now()
	env := &queue.Envelope{Event: queue.Event{ID: "ev1", Target: "acme", Name: "after_call", ReceivedAt: now}}
	for i, s := range []queue.State{"", "", queue.Dead, queue.Delivered} {
		env.Deliveries = append(env.Deliveries, &queue.Delivery{ID: "d" + string(rune('0'+i)), EventID: "ev1", Target: "acme", Event: "after_call",
			Webhook: "crm", Destination: "https://a.example:443", CreatedAt: now, State: s,
			Request: queue.Request{Method: "POST", URL: "https://a.example/"}})
	}
	env.Deliveries = append(env.Deliveries, &queue.Delivery{ID: "g1", EventID: "ev1", Target: "globex", Event: "after_call",
		Webhook: "crm", Destination: "https://b.example:443", CreatedAt: now, Request: queue.Request{Method: "POST", URL: "https://b.example/"}})
	if _, err := q.Enqueue(ctx, env); err != nil {
		t.Fatal(err)
	}
	// Make it look like an older build's store.
	b := q.db.NewBatch()
	b.Delete(metaTargetsReady, nil)
	b.Delete(targetCountKey("acme"), nil)
	b.Delete(targetCountKey("globex"), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	q.Close()

	q = openT(t, dir, Options{})
	for target, want := range map[string]queue.Stats{"acme": {Pending: 2, Delivered: 1, Dead: 1}, "globex": {Pending: 1}} {
		got, err := q.TargetStats(ctx, target)
		if err != nil || got != want {
			t.Errorf("TargetStats(%s) after counting an older store = %+v, %v; want %+v", target, got, err, want)
		}
	}
	if v, _ := q.getRaw(metaTargetsReady); v == nil {
		t.Error("the counts were not marked as done: every open would count again")
	}
}
