package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// recoverySite is a handler with a webhook whose param is given by expr.
func recoverySite(url, expr, extra string) string {
	return fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook crm {
				on after_call
				url %s/crm
				param id call.call_id
				param phone %s
				backoff 20ms 100ms
			}
			%s
		}
	}`, url, expr, extra)
}

// TestRetryRendersAgain: a webhook that failed to render (e164 of an empty
// caller) stores a dead delivery; after the expression is fixed and the
// config reloaded, retrying it by hand renders it again from the stored
// event with the running config, keeps created_at and sets retried_at; the
// event sent again is still a repeat (dedup), which is why the retry
// matters. Before the fix, the retry says the webhook still fails.
func TestRetryRendersAgain(t *testing.T) {
	rc := newReceiver(t, nil)
	dir := t.TempDir()
	globals := `allow_destinations 127.0.0.1/32`
	tester := startCaddyDir(t, dir, globals, recoverySite(rc.URL, `"e164(call.caller, 'UA')"`, ""))
	_ = tester
	status, ans := postJSON(t, "/calls/after_call", `{"call_id":"r-1","caller":""}`)
	if status != 202 || ans.EventID == "" {
		t.Fatalf("status %d, answer %+v", status, ans)
	}
	id := ans.id("crm")
	dead := waitState(t, id, "dead")
	if !dead.Retryable || dead.Request != nil {
		t.Fatalf("dead on arrival: %+v", dead)
	}

	// Still broken: the retry says why, and nothing changes.
	status, raw, _ := adminCall(t, "POST", "/callhook/deliveries/"+id+"/retry")
	if status != 409 || !strings.Contains(string(raw), "still fails to render with the running config") {
		t.Fatalf("retry before the fix: %d %s", status, raw)
	}

	// Fixed and reloaded: the repeat is still a repeat, the retry works.
	reload(t, dir, globals, recoverySite(rc.URL, `"call.caller ?? 'none'"`, ""))
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"r-1","caller":""}`); status != 200 {
		t.Fatalf("repeat: status %d, want 200", status)
	}
	var res struct {
		Retried  int           `json:"retried"`
		Delivery adminDelivery `json:"delivery"`
	}
	adminJSON(t, "POST", "/callhook/deliveries/"+id+"/retry", 200, &res)
	h := rc.waitHits(t, 1)[0]
	if h.Body != `{"id":"r-1","phone":""}` || h.Header.Get("webhook-id") != id {
		t.Errorf("re-rendered delivery sent %s (webhook-id %s)", h.Body, h.Header.Get("webhook-id"))
	}
	d := waitState(t, id, "delivered")
	if d.CreatedAt != dead.CreatedAt || d.LastError != "" {
		t.Errorf("created_at %s -> %s, last_error %q", dead.CreatedAt, d.CreatedAt, d.LastError)
	}
	var full map[string]any
	adminJSON(t, "GET", "/callhook/deliveries/"+id, 200, &full)
	if full["retried_at"] == nil && res.Delivery.ID != id {
		t.Errorf("retry answer %+v", res)
	}

	// Retrying a delivered one: 409; an unknown one: 404.
	if status, raw, _ := adminCall(t, "POST", "/callhook/deliveries/"+id+"/retry"); status != 409 || !strings.Contains(string(raw), "delivered, not dead") {
		t.Errorf("retry of a delivered one: %d %s", status, raw)
	}
	if status, _, _ := adminCall(t, "POST", "/callhook/deliveries/msg_nope/retry"); status != 404 {
		t.Errorf("retry of an unknown one: %d", status)
	}
}

// TestReplayAndDelete: a stored event replayed with the running config
// queues fresh deliveries (dedup bypassed), with the webhooks of the
// config now running, not those of the config that took the event; an
// unknown event is 404; DELETE removes a dead delivery only.
func TestReplayAndDelete(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/gone") {
			w.WriteHeader(410)
			return
		}
		w.WriteHeader(204)
	})
	dir := t.TempDir()
	globals := `allow_destinations 127.0.0.1/32`
	second := fmt.Sprintf(`webhook old {
				on after_call
				url %s/gone
				param id call.call_id
			}`, rc.URL)
	startCaddyDir(t, dir, globals, recoverySite(rc.URL, "call.caller", second))
	status, ans := postJSON(t, "/calls/after_call", `{"call_id":"p-1","caller":"+380441234567"}`)
	if status != 202 {
		t.Fatal(status)
	}
	rc.waitHits(t, 2)
	waitState(t, ans.id("old"), "dead")

	// The config drops webhook old and changes crm's params.
	reload(t, dir, globals, recoverySite(rc.URL, `"'replayed'"`, ""))
	var rep struct {
		EventID    string `json:"event_id"`
		ReplayOf   string `json:"replay_of"`
		Deliveries []struct {
			ID      string `json:"id"`
			Webhook string `json:"webhook"`
			State   string `json:"state"`
		} `json:"deliveries"`
	}
	adminJSON(t, "POST", "/callhook/events/"+ans.EventID+"/replay", 202, &rep)
	if rep.ReplayOf != ans.EventID || rep.EventID == "" || rep.EventID == ans.EventID || len(rep.Deliveries) != 1 || rep.Deliveries[0].Webhook != "crm" {
		t.Fatalf("replay answer %+v: want one fresh crm delivery under a new event", rep)
	}
	h := rc.waitHits(t, 3)[2]
	if h.Path != "/crm" || h.Body != `{"id":"p-1","phone":"replayed"}` {
		t.Errorf("replayed: %s %s", h.Path, h.Body)
	}
	// Replaying again queues again: dedup does not apply.
	adminJSON(t, "POST", "/callhook/events/"+ans.EventID+"/replay", 202, nil)
	rc.waitHits(t, 4)

	for _, tc := range []struct {
		method, path string
		status       int
		mentions     string
	}{
		{"POST", "/callhook/events/evt_nope/replay", 404, "no event evt_nope"},
		{"GET", "/callhook/events/" + ans.EventID + "/replay", 405, "use POST"},
		{"DELETE", "/callhook/deliveries/" + ans.id("crm"), 409, "only dead deliveries can be deleted"},
		{"DELETE", "/callhook/deliveries/" + ans.id("old"), 200, `"deleted":1`},
		{"DELETE", "/callhook/deliveries/" + ans.id("old"), 404, "no delivery"},
	} {
		status, raw, _ := adminCall(t, tc.method, tc.path)
		if status != tc.status || !strings.Contains(string(raw), tc.mentions) {
			t.Errorf("%s %s: %d %s; want %d mentioning %q", tc.method, tc.path, status, raw, tc.status, tc.mentions)
		}
	}
}

// webhookStates reads GET /callhook/webhooks.
func webhookStates(t *testing.T) map[string]map[string]any {
	t.Helper()
	var out struct {
		Webhooks []map[string]any `json:"webhooks"`
	}
	adminJSON(t, "GET", "/callhook/webhooks", 200, &out)
	m := map[string]map[string]any{}
	for _, w := range out.Webhooks {
		m[fmt.Sprint(w["target"], "/", w["webhook"])] = w
	}
	return m
}

func waitWebhookState(t *testing.T, key, state string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w := webhookStates(t)[key]
		if w != nil && w["state"] == state {
			return w
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(w)
			t.Fatalf("webhook %s: %s, want state %s", key, b, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
