package callhook

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// TestAdminListLeased: the stats report leased deliveries, so the list
// takes ?state=leased too and lists only those.
func TestAdminListLeased(t *testing.T) {
	a, e := testAdmin(t)
	now := time.Now()
	enqueueTest(t, e,
		&queue.Delivery{ID: "msg_leased", Webhook: "w", Destination: "https://a", State: queue.Pending, NextAttempt: now.Add(-time.Second), Request: queue.Request{Method: "POST", URL: "https://a/"}},
	)
	if _, err := e.q.Lease(context.Background(), queue.LeaseRequest{Max: 10, Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	enqueueTest(t, e,
		&queue.Delivery{ID: "msg_waiting", Webhook: "w", State: queue.Pending, NextAttempt: now.Add(time.Hour), Request: queue.Request{Method: "POST", URL: "https://h/"}},
	)
	status, body := call(a, "GET", "/callhook/deliveries?state=leased")
	if status != 200 || !strings.Contains(body, "msg_leased") || strings.Contains(body, "msg_waiting") {
		t.Errorf("state=leased: %d %s", status, body)
	}
}
