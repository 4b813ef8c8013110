package render

import (
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
)

func ptr[T any](v T) *T { return &v }

var testNow = time.Date(2026, 3, 4, 10, 11, 12, 0, time.UTC)

// testEvent is an after_call event whose body is data.
func testEvent(data map[string]any) *intake.Event {
	start := time.Date(2026, 3, 4, 22, 11, 12, 345000000, time.UTC)
	return &intake.Event{
		Name:   "after_call",
		CallID: "c-1",
		Call: &intake.Call{
			CallID:    ptr("c-1"),
			Caller:    ptr("+380441234567"),
			Duration:  ptr(int64(42)),
			StartTime: &start,
			Tags:      []string{"vip", "new"},
		},
		Data:    data,
		Request: intake.RequestInfo{Method: "POST", Path: "/calls/after_call", Headers: map[string]string{}, Query: map[string]string{}},
	}
}

// hook is a webhook config on after_call with params a and b taken from
// the body (data.a, data.b), which tests fill with hostile values.
func hook(url string) Config {
	return Config{
		Name:   "crm",
		On:     []string{"after_call"},
		URL:    url,
		Params: []Param{{Name: "a", Expr: "data.a"}, {Name: "b", Expr: "data.b"}},
	}
}

func mustCompile(t testing.TB, c Config) *Webhook {
	t.Helper()
	w, err := Compile(c)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return w
}

func render(t testing.TB, w *Webhook, data map[string]any) *queue.Delivery {
	t.Helper()
	return w.Render(testEvent(data), "acme", "msg_test", testNow)
}

func mustPending(t testing.TB, d *queue.Delivery) *queue.Delivery {
	t.Helper()
	if d == nil {
		t.Fatal("Render returned nil: the webhook did not fire")
	}
	if d.State != queue.Pending {
		t.Fatalf("state %s, want pending; last error %q", d.State, d.LastError)
	}
	return d
}

func mustDead(t testing.TB, d *queue.Delivery, want ...string) *queue.Delivery {
	t.Helper()
	if d == nil {
		t.Fatal("Render returned nil: the webhook did not fire")
	}
	if d.State != queue.Dead {
		t.Fatalf("state %s, want dead (url %q, headers %q)", d.State, d.Request.URL, d.Request.Header)
	}
	for _, w := range want {
		if !strings.Contains(d.LastError, w) {
			t.Errorf("last error %q does not contain %q", d.LastError, w)
		}
	}
	return d
}

func header(d *queue.Delivery, name string) []string {
	var vs []string
	for _, h := range d.Request.Header {
		if strings.EqualFold(h[0], name) {
			vs = append(vs, h[1])
		}
	}
	return vs
}
