package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// adminDelivery is a delivery as the admin API shows it.
type adminDelivery struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	Target      string `json:"target"`
	Event       string `json:"event"`
	CallID      string `json:"call_id"`
	Webhook     string `json:"webhook"`
	CreatedAt   string `json:"created_at"`
	NextAttempt string `json:"next_attempt"`
	FinishedAt  string `json:"finished_at"`
	LastError   string `json:"last_error"`
	Retryable   bool   `json:"retryable"`
	Attempts    []struct {
		Start    string  `json:"start"`
		Duration float64 `json:"duration_ms"`
		Status   int     `json:"status"`
		Error    string  `json:"error"`
		Response string  `json:"response"`
	} `json:"attempts"`
	Request *struct {
		Method  string `json:"method"`
		URL     string `json:"url"`
		Headers []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"headers"`
		Body string `json:"body"`
	} `json:"request"`
	Policy *struct {
		MaxAttempts int  `json:"max_attempts"`
		Signed      bool `json:"signed"`
	} `json:"policy"`
}

func (d adminDelivery) header(name string) string {
	if d.Request == nil {
		return ""
	}
	for _, h := range d.Request.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

type adminStats struct {
	Queue     string `json:"queue"`
	Pending   int    `json:"pending"`
	Leased    int    `json:"leased"`
	Delivered int    `json:"delivered"`
	Dead      int    `json:"dead"`
	Workers   int    `json:"workers"`
	Retention string `json:"retention"`
}

// adminCall sends one request to Caddy's admin endpoint and returns the
// status and the raw answer. Every answer must be JSON.
func adminCall(t *testing.T, method, path string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://localhost:%d%s", adminPort, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json (body %s)", method, path, ct, raw)
	}
	return res.StatusCode, raw, res.Header
}

// adminJSON calls the admin API, wants status want, and decodes the answer.
func adminJSON(t *testing.T, method, path string, want int, v any) []byte {
	t.Helper()
	status, raw, _ := adminCall(t, method, path)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, raw)
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return raw
}

func listDeliveries(t *testing.T, query string) ([]adminDelivery, string) {
	t.Helper()
	var page struct {
		Deliveries []adminDelivery `json:"deliveries"`
		NextCursor *string         `json:"next_cursor"`
	}
	adminJSON(t, "GET", "/callhook/deliveries?"+query, 200, &page)
	if page.Deliveries == nil || page.NextCursor == nil {
		t.Fatalf("list %s: deliveries and next_cursor must always be present", query)
	}
	return page.Deliveries, *page.NextCursor
}

func waitStats(t *testing.T, ok func(adminStats) bool) adminStats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var st adminStats
	for {
		adminJSON(t, "GET", "/callhook/stats", 200, &st)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue never reached the expected counts: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitState(t *testing.T, id, state string) adminDelivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var d adminDelivery
		adminJSON(t, "GET", "/callhook/deliveries/"+id, 200, &d)
		if d.State == state {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery %s is %s, want %s", id, d.State, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdminAPI drives the admin API of a real Caddy: a receiver that
// refuses one webhook (dead deliveries) and accepts another, a webhook
// that fails to render for one event; then listing, paging, inspecting
// (with secrets redacted), retrying one and all dead, stats and errors.
func TestAdminAPI(t *testing.T) {
	good := newReceiver(t, nil)
	var badUp atomic.Bool
	bad := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if badUp.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"bad receiver says no"}`)
	})
	const (
		signingSecret = "sig-secret-Zq8vX2pR"
		authSecret    = "auth-secret-Kp3"
		tokenSecret   = "tok-secret-Lm4"
		querySecret   = "query-secret-Wn5"
	)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	callhook {
		target shop
		event after_call
		webhook good {
			on after_call
			url %[1]s/good/{param.call_id}
			header Authorization "Bearer %[3]s"
			header X-Request-Token %[4]s
			header X-Trace {param.call_id}
			param call_id call.call_id
			secret %[5]s
		}
		webhook bad {
			on after_call
			url "%[2]s/bad?token=%[6]s&keep=1"
			param call_id call.call_id
		}
		webhook broken {
			on after_call
			url %[1]s/broken
			param call_id call.call_id
			param doubled "call.duration * 2"
		}
	}`, good.URL, bad.URL, authSecret, tokenSecret, signingSecret, querySecret))

	// c-1 has no duration, so `broken` cannot render for it.
	ids := map[string]map[string]string{} // call_id -> webhook -> delivery id
	for i, body := range []string{`{"call_id":"c-1"}`, `{"call_id":"c-2","duration":10}`, `{"call_id":"c-3","duration":20}`} {
		status, ans := postJSON(t, "/", body)
		if status != 202 || len(ans.Deliveries) != 3 {
			t.Fatalf("event %d: status %d, %+v", i, status, ans)
		}
		call := fmt.Sprintf("c-%d", i+1)
		ids[call] = map[string]string{}
		for _, d := range ans.Deliveries {
			ids[call][d.Webhook] = d.ID
		}
	}
	st := waitStats(t, func(s adminStats) bool { return s.Delivered == 5 && s.Dead == 4 })
	if st.Pending != 0 || st.Leased != 0 || !strings.HasPrefix(st.Queue, "embedded:") || st.Workers != 64 || st.Retention != "168h0m0s" {
		t.Errorf("stats = %+v", st)
	}

	t.Run("list by state and webhook", func(t *testing.T) {
		ds, next := listDeliveries(t, "state=dead&webhook=bad")
		if len(ds) != 3 || next != "" {
			t.Fatalf("dead bad deliveries: %d, next %q", len(ds), next)
		}
		for i, d := range ds {
			if want := fmt.Sprintf("c-%d", 3-i); d.CallID != want { // newest first
				t.Errorf("dead[%d] is %s, want %s", i, d.CallID, want)
			}
			if i > 0 && d.CreatedAt > ds[i-1].CreatedAt {
				t.Errorf("not newest first: %s after %s", d.CreatedAt, ds[i-1].CreatedAt)
			}
			if d.State != "dead" || !d.Retryable || d.Request != nil || len(d.Attempts) != 1 {
				t.Fatalf("dead delivery %+v", d)
			}
			a := d.Attempts[0]
			if a.Status != 400 || !strings.Contains(a.Response, "bad receiver says no") || a.Start == "" || !strings.Contains(d.LastError, "400") {
				t.Errorf("attempt %+v, last_error %q", a, d.LastError)
			}
			if _, err := time.Parse(time.RFC3339, a.Start); err != nil {
				t.Errorf("attempt start %q is not RFC 3339: %v", a.Start, err)
			}
		}
		if ds, _ := listDeliveries(t, "state=delivered"); len(ds) != 5 {
			t.Errorf("delivered: %d, want 5", len(ds))
		}
		ds, _ = listDeliveries(t, "call_id=c-1")
		var hooks []string
		for _, d := range ds {
			hooks = append(hooks, d.Webhook+"="+d.State)
		}
		slices.Sort(hooks)
		if want := []string{"bad=dead", "broken=dead", "good=delivered"}; !slices.Equal(hooks, want) {
			t.Errorf("call_id c-1: %v, want %v", hooks, want)
		}
		if ds, _ := listDeliveries(t, "target=elsewhere"); len(ds) != 0 {
			t.Errorf("target elsewhere: %d deliveries", len(ds))
		}
	})

	t.Run("cursor paging", func(t *testing.T) {
		seen := map[string]bool{}
		cursor, pages := "", 0
		for {
			q := "event=after_call&target=shop&limit=2"
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			ds, next := listDeliveries(t, q)
			pages++
			if len(ds) > 2 {
				t.Fatalf("page of %d with limit 2", len(ds))
			}
			for _, d := range ds {
				if seen[d.ID] {
					t.Fatalf("delivery %s on two pages", d.ID)
				}
				seen[d.ID] = true
			}
			if next == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			cursor = next
		}
		if len(seen) != 9 {
			t.Errorf("paged through %d deliveries in %d pages, want 9", len(seen), pages)
		}
	})

	t.Run("get one redacts secrets", func(t *testing.T) {
		var d adminDelivery
		raw := adminJSON(t, "GET", "/callhook/deliveries/"+ids["c-1"]["good"], 200, &d)
		if d.Request == nil || d.Request.Method != "POST" || d.Request.URL != good.URL+"/good/c-1" || d.Request.Body != `{"call_id":"c-1"}` {
			t.Fatalf("request %+v", d.Request)
		}
		for name, want := range map[string]string{
			"Authorization":   "[redacted]",
			"X-Request-Token": "[redacted]",
			"X-Trace":         "c-1",
			"Content-Type":    "application/json",
		} {
			if got := d.header(name); got != want {
				t.Errorf("header %s = %q, want %q", name, got, want)
			}
		}
		if d.Policy == nil || !d.Policy.Signed || d.Policy.MaxAttempts != 12 {
			t.Errorf("policy %+v", d.Policy)
		}
		for _, secret := range []string{authSecret, tokenSecret, signingSecret, base64.StdEncoding.EncodeToString([]byte(signingSecret))} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("the answer contains the secret %q: %s", secret, raw)
			}
		}

		var b adminDelivery
		raw = adminJSON(t, "GET", "/callhook/deliveries/"+ids["c-1"]["bad"], 200, &b)
		if want := bad.URL + "/bad?token=[redacted]&keep=1"; b.Request == nil || b.Request.URL != want {
			t.Errorf("url %+v, want %s", b.Request, want)
		}
		if bytes.Contains(raw, []byte(querySecret)) {
			t.Errorf("the answer contains the query secret: %s", raw)
		}

		var nr adminDelivery
		adminJSON(t, "GET", "/callhook/deliveries/"+ids["c-1"]["broken"], 200, &nr)
		// Retryable: a retry renders it again with the running config.
		if nr.State != "dead" || !nr.Retryable || nr.Request != nil || !strings.Contains(nr.LastError, "param doubled") {
			t.Errorf("never-rendered delivery: %+v", nr)
		}
	})

	t.Run("retry one", func(t *testing.T) {
		badUp.Store(true)
		id := ids["c-1"]["bad"]
		var ans struct{ Retried int }
		adminJSON(t, "POST", "/callhook/deliveries/"+id+"/retry", 200, &ans)
		if ans.Retried != 1 {
			t.Fatalf("retried %d", ans.Retried)
		}
		hits := bad.waitHits(t, 4)
		if got := hits[3].Header.Get("webhook-id"); got != id {
			t.Errorf("the retried request has webhook-id %s, want %s", got, id)
		}
		d := waitState(t, id, "delivered")
		if len(d.Attempts) != 2 || d.Attempts[1].Status != 200 {
			t.Errorf("attempts after retry: %+v", d.Attempts)
		}
	})

	t.Run("retry all dead of a webhook", func(t *testing.T) {
		var ans struct{ Retried, Skipped int }
		adminJSON(t, "POST", "/callhook/dead/retry?webhook=bad", 200, &ans)
		if ans.Retried != 2 || ans.Skipped != 0 {
			t.Fatalf("retry ?webhook=bad: %+v, want 2 retried", ans)
		}
		bad.waitHits(t, 6)
		// only the never-rendered one is left, and it is not retried
		adminJSON(t, "POST", "/callhook/dead/retry", 200, &ans)
		if ans.Retried != 0 || ans.Skipped != 1 {
			t.Fatalf("retry all: %+v, want 0 retried and 1 skipped", ans)
		}
		waitStats(t, func(s adminStats) bool { return s.Delivered == 8 && s.Dead == 1 && s.Pending == 0 && s.Leased == 0 })
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			status       int
			mentions     string
		}{
			{"GET", "/callhook/deliveries?state=bogus", 400, "state"},
			{"GET", "/callhook/deliveries?limit=0", 400, "limit"},
			{"GET", "/callhook/deliveries?limit=1001", 400, "limit"},
			{"GET", "/callhook/deliveries?limit=ten", 400, "limit"},
			{"GET", "/callhook/deliveries?cursor=%21%21%21", 400, "cursor"},
			{"GET", "/callhook/deliveries?cursor=AAAA", 400, "cursor"},
			{"GET", "/callhook/deliveries?sate=dead", 400, `unknown query parameter "sate"`},
			{"GET", "/callhook/deliveries?event=hangup", 400, "event"},
			{"GET", "/callhook/deliveries?state=dead&state=pending", 400, "state"},
			{"POST", "/callhook/dead/retry?state=pending", 400, `unknown query parameter "state"`},
			{"GET", "/callhook/deliveries/msg_nope", 404, "no delivery msg_nope"},
			{"POST", "/callhook/deliveries/msg_nope/retry", 404, "no delivery msg_nope"},
			{"POST", "/callhook/deliveries/" + ids["c-2"]["good"] + "/retry", 409, "is delivered, not dead"},
			{"POST", "/callhook/deliveries/" + ids["c-1"]["broken"] + "/retry", 409, "still fails to render with the running config: webhook broken: param doubled"},
			{"DELETE", "/callhook/deliveries", 405, "DELETE"},
			{"POST", "/callhook/deliveries/" + ids["c-2"]["good"], 405, "POST"},
			{"GET", "/callhook/deliveries/" + ids["c-2"]["good"] + "/retry", 405, "GET"},
			{"GET", "/callhook/dead/retry", 405, "GET"},
			{"POST", "/callhook/stats", 405, "POST"},
			{"GET", "/callhook/nothing", 404, "no callhook admin endpoint"},
		} {
			status, raw, header := adminCall(t, tc.method, tc.path)
			var e struct{ Error string }
			if err := json.Unmarshal(raw, &e); err != nil || status != tc.status || !strings.Contains(e.Error, tc.mentions) {
				t.Errorf("%s %s: %d %s, want %d with an error mentioning %q", tc.method, tc.path, status, raw, tc.status, tc.mentions)
			}
			if status == 405 && header.Get("Allow") == "" {
				t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
			}
		}
	})

	// Without the global option the app is created by the handlers, so the
	// admin API finds the queue through the running engine.
	t.Run("handlers without the global option", func(t *testing.T) {
		initServer(t, fmt.Sprintf(`{
	admin localhost:%d
	default_bind 127.0.0.1
	http_port %d
	https_port %d
	grace_period 1ns
	skip_install_trust
}
http://localhost:%d {
	callhook {
		webhook w {
			on after_call
			url https://example.com/hook
			param id call.call_id
		}
	}
}`, adminPort, httpPort, httpsPort, httpPort), "caddyfile")
		var st adminStats
		adminJSON(t, "GET", "/callhook/stats", 200, &st)
		if !strings.HasPrefix(st.Queue, "embedded:") {
			t.Errorf("stats %+v", st)
		}
	})

	t.Run("not running", func(t *testing.T) {
		initServer(t, fmt.Sprintf(`{
	admin localhost:%d
	default_bind 127.0.0.1
	http_port %d
	https_port %d
	grace_period 1ns
	skip_install_trust
}
http://localhost:%d {
	respond "no callhook here"
}`, adminPort, httpPort, httpsPort, httpPort), "caddyfile")
		for _, path := range []string{"/callhook/stats", "/callhook/deliveries", "/callhook/deliveries/" + ids["c-1"]["good"]} {
			status, raw, _ := adminCall(t, "GET", path)
			if status != 503 || !bytes.Contains(raw, []byte("not running")) {
				t.Errorf("GET %s without callhook: %d %s, want 503", path, status, raw)
			}
		}
	})
}

// TestAdminRetention shows that delivered deliveries are kept for the
// app's retention and then pruned (the engine prunes when it starts and
// every 10 minutes), and that dead ones are kept.
func TestAdminRetention(t *testing.T) {
	rc := newReceiver(t, nil)
	refuse := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
	site := fmt.Sprintf(`
	callhook {
		event after_call
		webhook ok {
			on after_call
			url %s/ok
			param id call.call_id
		}
		webhook dead {
			on after_call
			url %s/dead
			param id call.call_id
		}
	}`, rc.URL, refuse.URL)
	queueDir, otherDir := t.TempDir(), t.TempDir()
	load := func(dir, globals string) {
		t.Helper()
		initServer(t, caddyfile(dir, "allow_destinations 127.0.0.1/32\n"+globals, site), "caddyfile")
		if t.Failed() {
			t.FailNow()
		}
	}
	load(queueDir, "")
	status, ans := postJSON(t, "/", `{"call_id":"keep-1"}`)
	if status != 202 {
		t.Fatalf("status %d: %+v", status, ans)
	}
	okID, deadID := ans.id("ok"), ans.id("dead")
	waitState(t, okID, "delivered")
	waitState(t, deadID, "dead")

	// A restart within the retention keeps the delivered one.
	load(otherDir, "")
	load(queueDir, "")
	waitState(t, okID, "delivered")

	// A restart with a retention it is older than prunes it.
	load(otherDir, "")
	load(queueDir, "retention 1ms")
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, raw, _ := adminCall(t, "GET", "/callhook/deliveries/"+okID)
		if status == 404 {
			if !bytes.Contains(raw, []byte("retention of 1ms")) {
				t.Errorf("404 answer does not explain the retention: %s", raw)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered delivery still there with retention 1ms: %d %s", status, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitState(t, deadID, "dead")
	st := waitStats(t, func(s adminStats) bool { return s.Delivered == 0 })
	if st.Dead != 1 || st.Retention != "1ms" {
		t.Errorf("stats after pruning: %+v", st)
	}
	// Close this queue before its directory is removed: the prune's
	// compaction may still be writing into it.
	load(otherDir, "")
}
