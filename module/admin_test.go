package callhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/internal/redact"
	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/embedded"
	"github.com/callhook/caddy-callhook/module/render"
)

func TestViewRequestScrubsSecret(t *testing.T) {
	d := &queue.Delivery{
		ID: "msg_1",
		Request: queue.Request{
			Method: "POST",
			URL:    "https://h/p?s=topsecret",
			Header: [][2]string{{"X-Echo", "topsecret"}, {"Authorization", "Bearer x"}},
			Body:   []byte(`{"s":"topsecret"}`),
		},
	}
	secrets := [][]byte{[]byte("newsecret"), []byte("topsecret")}
	for _, show := range []bool{false, true} {
		v := viewRequest(d, secrets, show)
		b, _ := json.Marshal(v)
		if strings.Contains(string(b), "topsecret") {
			t.Errorf("showSecrets=%v: the signing secret is shown: %s", show, b)
		}
		if got := v.Headers[1].Value; (got == redact.Mask) == show {
			t.Errorf("showSecrets=%v: Authorization = %q", show, got)
		}
	}
	if viewRequest(&queue.Delivery{Request: queue.Request{Method: "POST"}}, nil, false) != nil {
		t.Error("a delivery that was never rendered has no request to show")
	}
}

func TestViewDeliveryTruncatesResponses(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.FixedZone("EET", 2*3600))
	d := &queue.Delivery{
		ID: "msg_1", State: queue.Dead, CreatedAt: now, FinishedAt: now,
		Request: queue.Request{URL: "https://h/"},
		Attempts: []queue.Attempt{
			{Start: now, Duration: 1500 * time.Microsecond, Status: 500, Response: []byte(strings.Repeat("a", 2000))},
			{Start: now, Status: 0, Error: "connection refused", Response: []byte("\xff ok")},
			{Start: now, Status: 502, Response: []byte(strings.Repeat("b", delivery.DefaultMaxResponse))},
		},
	}
	v := viewDelivery(d, listResponseBytes)
	if v.CreatedAt != "2026-11-25T08:00:00.123Z" || v.NextAttempt != "" || !v.Retryable {
		t.Errorf("view %+v", v)
	}
	a := v.Attempts
	if len(a[0].Response) != listResponseBytes || !a[0].ResponseTruncated || a[0].DurationMS != 1.5 {
		t.Errorf("attempt 0: %d bytes, truncated %v, %vms", len(a[0].Response), a[0].ResponseTruncated, a[0].DurationMS)
	}
	if a[1].Response != "\uFFFD ok" || a[1].ResponseTruncated || a[1].Error != "connection refused" {
		t.Errorf("attempt 1: %+v", a[1])
	}
	full := viewDelivery(d, -1)
	if len(full.Attempts[0].Response) != 2000 || full.Attempts[0].ResponseTruncated || !full.Attempts[2].ResponseTruncated {
		t.Errorf("full view: %d bytes, truncated %v/%v", len(full.Attempts[0].Response), full.Attempts[0].ResponseTruncated, full.Attempts[2].ResponseTruncated)
	}
}

func TestParseFilter(t *testing.T) {
	for i, tc := range []struct {
		query   string
		paging  bool
		want    queue.Filter
		wantErr string
	}{
		{query: "", paging: true, want: queue.Filter{Limit: defaultAdminLimit}},
		{query: "state=dead&webhook=crm&event=after_call&call_id=c-1&target=shop&limit=5&cursor=AAAAAAAAAAA", paging: true,
			want: queue.Filter{State: queue.Dead, Webhook: "crm", Event: "after_call", CallID: "c-1", Target: "shop", Limit: 5, Cursor: "AAAAAAAAAAA"}},
		{query: "limit=1000", paging: true, want: queue.Filter{Limit: 1000}},
		{query: "state=gone", paging: true, wantErr: "state"},
		{query: "limit=0", paging: true, wantErr: "limit"},
		{query: "limit=1001", paging: true, wantErr: "limit"},
		{query: "limit=-1", paging: true, wantErr: "limit"},
		{query: "cursor=not+base64!", paging: true, wantErr: "cursor"},
		{query: "event=hangup", paging: true, wantErr: "event"},
		{query: "webhook=a&webhook=b", paging: true, wantErr: "webhook is given 2 times"},
		{query: "sate=dead", paging: true, wantErr: `unknown query parameter "sate"`},
		{query: "webhook=crm", paging: false, want: queue.Filter{Webhook: "crm", Limit: defaultAdminLimit}},
		{query: "limit=5", paging: false, wantErr: `unknown query parameter "limit"`},
		{query: "state=dead", paging: false, wantErr: `unknown query parameter "state"`},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseFilter(q, tc.paging)
		if tc.wantErr != "" {
			var ae caddy.APIError
			if !errors.As(err, &ae) || ae.HTTPStatus != http.StatusBadRequest || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("test %d (%s): error %v, want a 400 mentioning %q", i, tc.query, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("test %d (%s): %+v, %v; want %+v", i, tc.query, got, err, tc.want)
		}
	}
}

// testAdmin is an admin API over a real embedded queue whose pool is never
// started, so nothing changes a delivery's state behind the test's back.
func testAdmin(t *testing.T) (*adminAPI, *engine) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "queue")
	q, err := embedded.Open(embedded.Options{Dir: file, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	e := &engine{
		q:        q,
		pool:     delivery.NewPool(delivery.PoolOptions{Queue: q}),
		logger:   zap.NewNop(),
		limiter:  delivery.NewLimiter(),
		keys:     delivery.NewKeyring(),
		settings: settings{workers: 8, perDestination: 2, retention: time.Hour, drain: time.Second},
	}
	app := &App{backend: &EmbeddedQueue{file: file}}
	app.engine.Store(e)
	return newAdminAPI(&adminService{app: app, logger: zap.NewNop()}), e
}

func enqueueTest(t *testing.T, e *engine, ds ...*queue.Delivery) {
	t.Helper()
	env := &queue.Envelope{Event: queue.Event{ID: render.NewID(), ReceivedAt: time.Now()}, Deliveries: ds}
	if _, err := e.q.Enqueue(context.Background(), env); err != nil {
		t.Fatal(err)
	}
}

func call(a *adminAPI, method, path string) (int, string) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, nil)
	err := a.serve(rec, req)
	if err == nil {
		return rec.Code, rec.Body.String()
	}
	var ae caddy.APIError
	if !errors.As(err, &ae) {
		return 500, err.Error()
	}
	return ae.HTTPStatus, ae.Err.Error()
}

func TestAdminRetryConflicts(t *testing.T) {
	a, e := testAdmin(t)
	now := time.Now()
	enqueueTest(t, e,
		&queue.Delivery{ID: "msg_dead", Webhook: "w", State: queue.Dead, Request: queue.Request{Method: "POST", URL: "https://h/"}, LastError: "boom"},
		&queue.Delivery{ID: "msg_unrendered", Webhook: "w", State: queue.Dead, Request: queue.Request{Method: "POST"}, LastError: "webhook w: param p: nil"},
		&queue.Delivery{ID: "msg_pending", Webhook: "w", State: queue.Pending, NextAttempt: now.Add(time.Hour), Request: queue.Request{Method: "POST", URL: "https://h/"}},
	)
	for i, tc := range []struct {
		method, path string
		status       int
		mentions     string
	}{
		{"POST", "/callhook/deliveries/msg_pending/retry", 409, "is pending, not dead: its next attempt is due at"},
		{"POST", "/callhook/deliveries/msg_unrendered/retry", 409, "cannot be rendered again: the running config has no webhook w"},
		{"POST", "/callhook/deliveries/msg_gone/retry", 404, "retention of 1h0m0s"},
		{"GET", "/callhook/deliveries/msg_unrendered", 200, `"retryable":true`},
		{"DELETE", "/callhook/deliveries/msg_pending", 409, "only dead deliveries can be deleted"},
		{"DELETE", "/callhook/deliveries/msg_gone", 404, "no delivery msg_gone"},
		{"POST", "/callhook/events/evt_gone/replay", 404, "no event evt_gone"},
		{"POST", "/callhook/webhooks/default/nope/resume", 404, "no webhook nope in target default"},
		{"GET", "/callhook/webhooks", 200, `{"webhooks":[]}`},
		{"GET", "/callhook/stats", 200, `"pending":1,"leased":0,"delivered":0,"dead":2`},
		{"POST", "/callhook/deliveries/", 405, "use GET"},
		{"GET", "/callhook/", 404, "no callhook admin endpoint"},
	} {
		status, body := call(a, tc.method, tc.path)
		if status != tc.status || !strings.Contains(body, tc.mentions) {
			t.Errorf("test %d: %s %s: %d %s; want %d mentioning %q", i, tc.method, tc.path, status, body, tc.status, tc.mentions)
		}
	}

	// Two operators retry the same dead delivery at once: one wins, the
	// other is told it is no longer dead.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = call(a, "POST", "/callhook/deliveries/msg_dead/retry")
		}()
	}
	wg.Wait()
	if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
		t.Errorf("concurrent retries answered %v, want one 200 and one 409", codes)
	}
}

func TestAdminRetryDeadAll(t *testing.T) {
	a, e := testAdmin(t)
	base := time.Now().Add(-time.Hour)
	var ds []*queue.Delivery
	for i := range 2500 {
		webhook := "a"
		if i%5 == 0 {
			webhook = "b"
		}
		ds = append(ds, &queue.Delivery{
			ID: fmt.Sprintf("msg_%05d", i), Webhook: webhook, State: queue.Dead, CreatedAt: base.Add(time.Duration(i) * time.Millisecond),
			Request: queue.Request{Method: "POST", URL: "https://h/"},
		})
	}
	ds = append(ds, &queue.Delivery{ID: "msg_unrendered", Webhook: "a", State: queue.Dead, Request: queue.Request{Method: "POST"}})
	enqueueTest(t, e, ds...)

	// Meanwhile someone retries single ones: the bulk retry must not fail
	// on them, nor count them twice.
	done := make(chan int)
	go func() {
		n := 0
		for i := 1; i < 2500; i += 97 {
			if code, _ := call(a, "POST", fmt.Sprintf("/callhook/deliveries/msg_%05d/retry", i)); code == 200 {
				n++
			}
		}
		done <- n
	}()
	status, body := call(a, "POST", "/callhook/dead/retry?webhook=b")
	var b retryAnswer
	if status != 200 || json.Unmarshal([]byte(body), &b) != nil || b.Retried == 0 || b.Retried > 500 || b.Skipped != 0 {
		t.Fatalf("retry webhook b: %d %s, want up to 500 retried", status, body)
	}
	if left, err := e.q.List(context.Background(), queue.Filter{State: queue.Dead, Webhook: "b"}); err != nil || len(left.Deliveries) != 0 {
		t.Errorf("after retrying webhook b, %d of its deliveries are still dead (%v)", len(left.Deliveries), err)
	}
	status, body = call(a, "POST", "/callhook/dead/retry")
	var all retryAnswer
	if status != 200 || json.Unmarshal([]byte(body), &all) != nil || all.Skipped != 1 {
		t.Fatalf("retry all: %d %s", status, body)
	}
	single := <-done
	if total := b.Retried + all.Retried + single; total != 2500 {
		t.Errorf("retried %d (webhook b) + %d (all) + %d (one by one) = %d, want 2500", b.Retried, all.Retried, single, total)
	}
	st, err := e.q.Stats(context.Background())
	if err != nil || st.Dead != 1 || st.Pending != 2500 {
		t.Errorf("stats %+v, %v; want only the unrendered one dead", st, err)
	}
}

func TestAdminClosedQueue(t *testing.T) {
	a, e := testAdmin(t)
	e.q.Close()
	for _, path := range []string{"/callhook/stats", "/callhook/deliveries", "/callhook/deliveries/msg_1"} {
		if status, body := call(a, "GET", path); status != 503 || !strings.Contains(body, "closed") {
			t.Errorf("GET %s on a closed queue: %d %s, want 503", path, status, body)
		}
	}
	if status, body := call(newAdminAPI(&adminService{logger: zap.NewNop()}), "GET", "/callhook/stats"); status != 503 || !strings.Contains(body, "not running") {
		t.Errorf("no app: %d %s", status, body)
	}
}

// TestAdminDeleteAndPreview: DELETE of one dead delivery, the preview of a
// bulk action and DELETE of all matching, with their conflicts.
func TestAdminDeleteAndPreview(t *testing.T) {
	a, e := testAdmin(t)
	enqueueTest(t, e,
		&queue.Delivery{ID: "msg_d1", Webhook: "a", State: queue.Dead, Request: queue.Request{Method: "POST", URL: "https://h/"}},
		&queue.Delivery{ID: "msg_d2", Webhook: "a", State: queue.Dead, Request: queue.Request{Method: "POST"}},
		&queue.Delivery{ID: "msg_d3", Webhook: "b", State: queue.Dead, Request: queue.Request{Method: "POST", URL: "https://h/"}},
		&queue.Delivery{ID: "msg_p", Webhook: "a", State: queue.Pending, NextAttempt: time.Now().Add(time.Hour), Request: queue.Request{Method: "POST", URL: "https://h/"}},
	)
	for i, tc := range []struct {
		method, path string
		status       int
		mentions     string
	}{
		{"GET", "/callhook/dead?webhook=a", 200, `{"dead":2,"retryable":2,"never_rendered":1}`},
		{"GET", "/callhook/dead?state=dead", 400, `unknown query parameter "state"`},
		{"DELETE", "/callhook/deliveries/msg_p", 409, "is pending, not dead"},
		{"DELETE", "/callhook/deliveries/msg_gone", 404, "no delivery msg_gone"},
		{"DELETE", "/callhook/deliveries/msg_d3", 200, `{"deleted":1}`},
		{"DELETE", "/callhook/deliveries/msg_d3", 404, "no delivery msg_d3"},
		{"DELETE", "/callhook/dead?webhook=a", 200, `{"deleted":2}`},
		{"GET", "/callhook/dead", 200, `{"dead":0,"retryable":0,"never_rendered":0}`},
		{"PUT", "/callhook/dead", 405, "use GET or DELETE"},
		{"GET", "/callhook/deliveries/msg_p/", 200, `"id":"msg_p"`},
		{"GET", "/callhook/deliveries/a/b", 404, "no callhook admin endpoint"},
		{"GET", "/callhook/events/evt_none", 404, "no event evt_none"},
		{"POST", "/callhook/webhooks/t/w/resume", 404, "no webhook w in target t"},
		{"GET", "/callhook/webhooks", 200, `{"webhooks":[]}`},
	} {
		status, body := call(a, tc.method, tc.path)
		if status != tc.status || !strings.Contains(body, tc.mentions) {
			t.Errorf("test %d: %s %s: %d %s; want %d mentioning %q", i, tc.method, tc.path, status, body, tc.status, tc.mentions)
		}
	}
	if d, err := e.q.Get(context.Background(), "msg_p"); err != nil || d.State != queue.Pending {
		t.Errorf("the pending delivery was touched: %v %v", d, err)
	}
}

// TestAdminResume: a stored pause is listed and lifted.
func TestAdminResume(t *testing.T) {
	a, e := testAdmin(t)
	ctx := context.Background()
	if err := e.q.SetPause(ctx, "shop", "crm", &queue.Pause{Target: "shop", Webhook: "crm", Since: time.Now(), Reason: "failing: redirect to https://h/?token=s3cr3t"}); err != nil {
		t.Fatal(err)
	}
	status, body := call(a, "GET", "/callhook/webhooks")
	if status != 200 || !strings.Contains(body, `"state":"paused"`) || strings.Contains(body, "s3cr3t") {
		t.Fatalf("webhooks: %d %s", status, body)
	}
	if status, body := call(a, "POST", "/callhook/webhooks/shop/crm/resume"); status != 200 || !strings.Contains(body, `"state":"active"`) {
		t.Errorf("resume: %d %s", status, body)
	}
	if ps, _ := e.q.Pauses(ctx); len(ps) != 0 {
		t.Errorf("pauses after resume: %v", ps)
	}
}
