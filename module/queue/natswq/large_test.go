package natswq

import (
	"bytes"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// TestLargeEvent stores an event of max_body (1 MiB) and a delivery whose
// body is as large on a server with the default max_payload (1 MB): raw
// bytes in blob keys, read back whole by Lease, Get and GetEvent, and kept
// by an outcome (which rewrites the record only).
func TestLargeEvent(t *testing.T) {
	q := openTest(t, t.TempDir(), Options{})
	defer q.Close()
	ctx := t.Context()
	big := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	body := append([]byte(nil), big...)
	body[0] = '{'
	env := &queue.Envelope{
		Event: queue.Event{ID: "evt-big", Target: "t1", Name: "call.ended", CallID: "call-big", ReceivedAt: time.Now(), Data: big},
		Deliveries: []*queue.Delivery{{
			ID: "dlv-big", EventID: "evt-big", Target: "t1", Event: "call.ended", CallID: "call-big", Webhook: "w1",
			Destination: "https://r.example:443", State: queue.Pending, CreatedAt: time.Now(),
			Request: queue.Request{Method: "POST", URL: "https://r.example/hook", Body: body},
			Policy:  queue.Policy{Timeout: time.Second, MaxAttempts: 3},
		}},
	}
	if _, err := q.Enqueue(ctx, env); err != nil {
		t.Fatalf("Enqueue of a 1 MiB event: %v", err)
	}
	e, err := q.GetEvent(ctx, "evt-big")
	if err != nil || !bytes.Equal(e.Data, big) {
		t.Fatalf("GetEvent: %v, %d bytes back of %d", err, len(e.Data), len(big))
	}
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Minute})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease: %v, %d leases", err, len(ls))
	}
	if got := ls[0].Delivery; !bytes.Equal(got.Request.Body, body) || len(got.Attempts) != 0 {
		t.Fatalf("leased body %d bytes (want %d), %d attempts", len(got.Request.Body), len(body), len(got.Attempts))
	}
	if err := q.Retry(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 503}, time.Now(), "503"); err != nil {
		t.Fatal(err)
	}
	d, err := q.Get(ctx, "dlv-big")
	if err != nil || !bytes.Equal(d.Request.Body, body) || d.State != queue.Pending || len(d.Attempts) != 1 {
		t.Fatalf("Get after Retry: %v, state %s, %d body bytes, %d attempts", err, d.State, len(d.Request.Body), len(d.Attempts))
	}
}
