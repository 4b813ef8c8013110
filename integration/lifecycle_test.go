package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestJSONConfig drives the same pipeline from Caddy JSON instead of a
// Caddyfile.
func TestJSONConfig(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := fmt.Sprintf(`{
	"admin": {"listen": "localhost:%d"},
	"apps": {
		"callhook": {
			"queue": {"backend": "embedded", "path": %q},
			"allow_destinations": ["127.0.0.1/32"]
		},
		"http": {
			"http_port": %d,
			"grace_period": 1,
			"servers": {
				"srv0": {
					"listen": ["127.0.0.1:%d"],
					"routes": [{
						"match": [{"path": ["/calls/*"]}],
						"handle": [{
							"handler": "callhook",
							"target": "json-target",
							"webhooks": [{
								"name": "crm",
								"on": ["after_call"],
								"url": "%s/crm/{param.id}",
								"method": "PUT",
								"format": "json",
								"params": [
									{"name": "id", "expr": "call.call_id"},
									{"name": "agent.name", "expr": "call.agent_name ?? 'nobody'"}
								],
								"headers": [{"name": "X-Target", "value": "{param.id}"}],
								"backoff_min": "10ms",
								"backoff_max": "50ms"
							}]
						}]
					}]
				}
			}
		}
	}
}`, adminPort, t.TempDir(), httpPort, httpPort, rc.URL)
	initServer(t, cfg, "json")
	status, ans := postJSON(t, "/calls/after_call", `{"call_id":"j-1"}`)
	if status != 202 || ans.Target != "json-target" {
		t.Fatalf("status %d, answer %+v", status, ans)
	}
	h := rc.waitHits(t, 1)[0]
	if h.Method != "PUT" || h.Path != "/crm/j-1" || h.Body != `{"id":"j-1","agent":{"name":"nobody"}}` || h.Header.Get("X-Target") != "j-1" {
		t.Errorf("got %s %s %s %v", h.Method, h.Path, h.Body, h.Header)
	}
}

// TestReloadKeepsQueuedWork: deliveries queued under one config still go out,
// with the settings they were rendered with, after reloads that change the
// webhooks; the queue and workers survive the reload.
func TestReloadKeepsQueuedWork(t *testing.T) {
	var up atomic.Bool
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	queueDir := t.TempDir()
	site := func(path, name string) string {
		return fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook %s {
				on after_call
				url %s%s
				param id call.call_id
				backoff 20ms 100ms
				max_attempts 50
			}
		}
	}`, name, rc.URL, path)
	}
	initServer(t, caddyfile(queueDir, `allow_destinations 127.0.0.1/32`, site("/v1", "old")), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	const events = 20
	for i := 0; i < events; i++ {
		if status, ans := postJSON(t, "/calls/after_call", fmt.Sprintf(`{"call_id":"reload-%d"}`, i)); status != 202 {
			t.Fatalf("status %d: %s", status, ans.Error)
		}
	}
	rc.waitHits(t, events) // every delivery has been tried and is now retrying
	for i := 0; i < 3; i++ {
		initServer(t, caddyfile(queueDir, `allow_destinations 127.0.0.1/32`, site(fmt.Sprintf("/v%d", i+2), fmt.Sprintf("new%d", i))), "caddyfile")
	}
	up.Store(true)
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < events && time.Now().Before(deadline) {
		for _, h := range rc.got() {
			if h.Path != "/v1" {
				t.Fatalf("queued delivery went to %s, want the URL it was rendered with (/v1)", h.Path)
			}
			var b map[string]string
			json.Unmarshal([]byte(h.Body), &b)
			seen[b["id"]] = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(seen) < events {
		t.Fatalf("after reloads %d of %d events were delivered", len(seen), events)
	}
	// the newest config works too
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"after-reload"}`); status != 202 {
		t.Fatal(status)
	}
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, h := range rc.got() {
			if h.Path == "/v4" {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the reloaded config's webhook never delivered")
}
