package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPauseAndResume: a webhook whose every attempt fails for
// disable_after is paused: listed paused by GET /callhook/webhooks, its
// metric at 1, its deliveries pending and not attempted, while another
// webhook to the same receiver still goes out; a resume of an unknown
// webhook is 404; a resume sends what waited.
func TestPauseAndResume(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/flaky" && failing.Load() {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(204)
	})
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook shop {
			webhook flaky {
				on after_call
				url %s/flaky
				param id call.call_id
				backoff 50ms 100ms
				disable_after 500ms
			}
			webhook steady {
				on after_call
				url %s/steady
				param id call.call_id
			}
		}
	}`, rc.URL, rc.URL))
	if st := webhookStates(t)["shop/flaky"]; st["state"] != "active" || st["disable_after"] != "500ms" {
		t.Fatalf("before: %v", st)
	}
	_, ans := postJSON(t, "/calls/after_call", `{"call_id":"z-1"}`)
	st := waitWebhookState(t, "shop/flaky", "paused")
	if !strings.Contains(fmt.Sprint(st["pause_reason"]), "every attempt failed") || st["failed"].(float64) < 2 {
		t.Errorf("paused state %v", st)
	}
	if m := scrapeMetrics(t); m[`callhook_webhook_paused{target="shop",webhook="flaky"}`] != 1 || m[`callhook_webhook_paused{target="shop",webhook="steady"}`] != 0 {
		t.Errorf("callhook_webhook_paused: flaky %v steady %v", m[`callhook_webhook_paused{target="shop",webhook="flaky"}`], m[`callhook_webhook_paused{target="shop",webhook="steady"}`])
	}
	// Paused: nothing more goes to flaky; steady still works.
	time.Sleep(200 * time.Millisecond)
	before := len(rc.got())
	postJSON(t, "/calls/after_call", `{"call_id":"z-2"}`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		steady := 0
		for _, h := range rc.got() {
			if h.Path == "/steady" {
				steady++
			}
		}
		if steady == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("steady's deliveries did not go out while flaky is paused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	for _, h := range rc.got()[before:] {
		if h.Path == "/flaky" {
			t.Fatalf("a paused webhook was attempted")
		}
	}
	if d := waitState(t, ans.id("flaky"), "pending"); d.State != "pending" {
		t.Fatal(d.State)
	}

	for _, path := range []string{"/callhook/webhooks/shop/nope/resume", "/callhook/webhooks/other/flaky/resume"} {
		status, raw, _ := adminCall(t, "POST", path)
		if status != 404 || !strings.Contains(string(raw), "the running config has no such webhook") || !strings.Contains(string(raw), "shop/flaky") {
			t.Errorf("POST %s: %d %s", path, status, raw)
		}
	}
	failing.Store(false)
	var resumed map[string]any
	adminJSON(t, "POST", "/callhook/webhooks/shop/flaky/resume", 200, &resumed)
	if resumed["state"] != "active" {
		t.Errorf("resume answer %v", resumed)
	}
	waitState(t, ans.id("flaky"), "delivered")
	if m := scrapeMetrics(t); m[`callhook_webhook_paused{target="shop",webhook="flaky"}`] != 0 {
		t.Error("callhook_webhook_paused stays 1 after the resume")
	}
	// Resuming an active webhook changes nothing.
	adminJSON(t, "POST", "/callhook/webhooks/shop/flaky/resume", 200, nil)
}

// TestConcurrencyAndRateLimit: concurrency caps one webhook's attempts in
// flight and rate_limit their starts per second, while another webhook of
// the same receiver is not held back by either.
func TestConcurrencyAndRateLimit(t *testing.T) {
	var mu sync.Mutex
	inflight, peak := map[string]int{}, map[string]int{}
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight[r.URL.Path]++
		peak[r.URL.Path] = max(peak[r.URL.Path], inflight[r.URL.Path])
		mu.Unlock()
		if r.URL.Path == "/capped" {
			time.Sleep(100 * time.Millisecond)
		}
		mu.Lock()
		inflight[r.URL.Path]--
		mu.Unlock()
		w.WriteHeader(204)
	})
	startCaddy(t, "allow_destinations 127.0.0.1/32\n\t\tworkers 16\n\t\tper_destination 16", fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook capped {
				on after_call
				url %s/capped
				param id call.call_id
				concurrency 2
			}
			webhook slow {
				on after_call
				url %s/slow
				param id call.call_id
				rate_limit 10/s
			}
			webhook free {
				on after_call
				url %s/free
				param id call.call_id
			}
		}
	}`, rc.URL, rc.URL, rc.URL))
	start := time.Now()
	const n = 20
	for i := range n {
		if status, _ := postJSON(t, "/calls/after_call", fmt.Sprintf(`{"call_id":"c-%d"}`, i)); status != 202 {
			t.Fatal(status)
		}
	}
	count := func(path string) (int, time.Time) {
		k, last := 0, time.Time{}
		for _, h := range rc.got() {
			if h.Path == path {
				k++
				last = h.At
			}
		}
		return k, last
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, _ := count("/capped")
		b, _ := count("/slow")
		c, _ := count("/free")
		if a == n && b == n && c == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered capped %d slow %d free %d of %d", a, b, c, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, freeLast := count("/free")
	_, slowLast := count("/slow")
	mu.Lock()
	defer mu.Unlock()
	if peak["/capped"] > 2 {
		t.Errorf("concurrency 2: %d attempts in flight at once", peak["/capped"])
	}
	// 20 at 10/s with a burst of 10: the last starts about 1s in.
	if d := slowLast.Sub(start); d < 800*time.Millisecond {
		t.Errorf("rate_limit 10/s: 20 deliveries went out within %s", d)
	}
	if d := freeLast.Sub(start); d > 800*time.Millisecond {
		t.Errorf("an unlimited webhook took %s: held back by the others' limits", d)
	}
}

// TestOrdered: an ordered webhook sends one call's events in the order
// they were accepted even when the first one's attempts fail for a while;
// another call is not held back by it.
func TestOrdered(t *testing.T) {
	var fails atomic.Int32
	fails.Store(3)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.RawQuery, "e=before_call") && strings.Contains(r.URL.RawQuery, "id=o-1") && fails.Add(-1) >= 0 {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(204)
	})
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook crm {
				on before_call call_answered after_call
				url %s/crm?e={param.e}&id={param.id}
				method GET
				format form
				param id call.call_id
				param e event
				backoff 50ms 100ms
				ordered
			}
		}
	}`, rc.URL))
	for _, ev := range []string{"before_call", "call_answered", "after_call"} {
		postJSON(t, "/calls/"+ev, `{"call_id":"o-1"}`)
	}
	postJSON(t, "/calls/after_call", `{"call_id":"o-2"}`)
	hits := rc.waitHits(t, 7)
	// Every attempt of an earlier event (retries too) before any of a later one.
	rank := map[string]int{"before_call": 0, "call_answered": 1, "after_call": 2}
	var seq []string
	last, other := -1, -1
	for i, h := range hits {
		if strings.Contains(h.Query, "id=o-2") {
			other = i
			continue
		}
		ev := strings.TrimPrefix(strings.Split(h.Query, "&")[0], "e=")
		seq = append(seq, ev)
		if rank[ev] < last {
			t.Fatalf("o-1's attempts arrived as %v: an earlier event after a later one", seq)
		}
		last = rank[ev]
	}
	if last != 2 {
		t.Fatalf("o-1's attempts: %v", seq)
	}
	if other < 0 || other > 3 {
		t.Errorf("o-2 was delivered at hit %d: held back behind another call's retries", other)
	}
}

// TestJSONDeliveryOptions: issue 9's options from Caddy JSON.
func TestJSONDeliveryOptions(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := fmt.Sprintf(`{
	"admin": {"listen": "localhost:%d"},
	"apps": {
		"callhook": {
			"queue": {"backend": "embedded", "path": %q},
			"allow_destinations": ["127.0.0.1/32"],
			"secret_key": "json-test-secret-key-0123456789"
		},
		"http": {
			"http_port": %d,
			"grace_period": 1,
			"servers": {"srv0": {"listen": ["127.0.0.1:%d"], "routes": [{
				"match": [{"path": ["/calls/*"]}],
				"handle": [{
					"handler": "callhook",
					"target": "j",
					"webhooks": [{
						"name": "crm",
						"on": ["after_call"],
						"url": "%s/crm",
						"params": [{"name": "id", "expr": "call.call_id"}],
						"secret": "new-json-secret",
						"rotated_secrets": ["old-json-secret"],
						"ordered": true,
						"rate_limit": "50/s",
						"concurrency": 3,
						"disable_after": "2h"
					}]
				}]
			}]}}
		}
	}
}`, adminPort, t.TempDir(), httpPort, httpPort, rc.URL)
	initServer(t, cfg, "json")
	if status, ans := postJSON(t, "/calls/after_call", `{"call_id":"js-1"}`); status != 202 {
		t.Fatalf("status %d: %+v", status, ans)
	}
	h := rc.waitHits(t, 1)[0]
	id, ts := h.Header.Get("webhook-id"), h.Header.Get("webhook-timestamp")
	if want := sig("new-json-secret", id, ts, h.Body) + " " + sig("old-json-secret", id, ts, h.Body); h.Header.Get("webhook-signature") != want {
		t.Errorf("webhook-signature %q, want %q", h.Header.Get("webhook-signature"), want)
	}
	var st map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st = webhookStates(t)["j/crm"]; st["delivered"] == 1.0 {
			break
		}
	}
	if st["ordered"] != true || st["rate_limit"] != "50/s" || st["concurrency"] != 3.0 || st["disable_after"] != "2h0m0s" || st["delivered"] != 1.0 {
		t.Errorf("GET /callhook/webhooks: %v", st)
	}
}
