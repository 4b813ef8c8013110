package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var canonicalEvents = []string{
	"before_call", "call_answered", "call_forwarding", "after_call",
	"after_call_rating", "before_outgoing_call", "after_outgoing_call",
}

// TestAllEvents posts every canonical event, each through a different
// intake path (JSON, form, GET query, the body's `event` field), and checks
// that each reaches the webhook declared for it.
func TestAllEvents(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook every {
				on %s
				url %s/{param.event}
				param event event
				param id    call.call_id
			}
		}
	}
	handle /inbox {
		callhook {
			webhook every {
				on %s
				url %s/{param.event}
				param event event
				param id    call.call_id
			}
		}
	}`, strings.Join(canonicalEvents, " "), rc.URL, strings.Join(canonicalEvents, " "), rc.URL))
	for i, ev := range canonicalEvents {
		id := fmt.Sprintf("ev-%d", i)
		var status int
		var ans answer
		switch i % 4 {
		case 0:
			status, ans, _ = send(t, "POST", "/calls/"+ev, "application/json", `{"call_id":"`+id+`"}`)
		case 1:
			status, ans, _ = send(t, "POST", "/calls/"+ev, "application/x-www-form-urlencoded", "call_id="+id)
		case 2:
			status, ans, _ = send(t, "GET", "/calls/"+ev+"?call_id="+id, "", "")
		case 3:
			status, ans, _ = send(t, "POST", "/inbox", "application/json", `{"event":"`+ev+`","call_id":"`+id+`"}`)
		}
		if status != http.StatusAccepted || ans.Event != ev || len(ans.Deliveries) != 1 {
			t.Fatalf("%s: status %d, answer %+v", ev, status, ans)
		}
	}
	hits := rc.waitHits(t, len(canonicalEvents))
	got := map[string]string{}
	for _, h := range hits {
		var b map[string]string
		json.Unmarshal([]byte(h.Body), &b)
		got[strings.TrimPrefix(h.Path, "/")] = b["id"]
	}
	for i, ev := range canonicalEvents {
		if got[ev] != fmt.Sprintf("ev-%d", i) {
			t.Errorf("event %s: delivered %q", ev, got[ev])
		}
	}
}

// TestPassthrough: with `passthrough`, a stored event goes on to the next
// handler with its body intact; errors are still answered by callhook.
func TestPassthrough(t *testing.T) {
	rc := newReceiver(t, nil)
	app := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"error":"","event":"from-app"}`))
	})
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /pbx/* {
		callhook {
			passthrough
			webhook w {
				on after_call
				url %s/hook
				param id call.call_id
			}
		}
		reverse_proxy %s
	}`, rc.URL, strings.TrimPrefix(app.URL, "http://")))
	body := `{"call_id":"p-1","note":"keep me"}`
	status, ans := postJSON(t, "/pbx/after_call", body)
	if status != 200 || ans.Event != "from-app" {
		t.Fatalf("status %d, answer %+v: want the app's answer", status, ans)
	}
	if h := app.waitHits(t, 1)[0]; h.Body != body {
		t.Errorf("app got body %q, want %q", h.Body, body)
	}
	rc.waitHits(t, 1)
	// a bad event is answered by callhook and never reaches the app
	if status, ans := postJSON(t, "/pbx/after_call", `{"note":"no id"}`); status != 400 || !strings.Contains(ans.Error, "call_id") {
		t.Errorf("bad event: status %d, %q", status, ans.Error)
	}
	if n := len(app.got()); n != 1 {
		t.Errorf("app got %d requests, want 1", n)
	}
}

// TestQueueFull: at max_pending, ingest answers 503 with Retry-After and
// queues nothing of the event (all or none); once the receiver is back and
// the queue drains, events are accepted again.
func TestQueueFull(t *testing.T) {
	var up = make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		select {
		case <-up:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	tester := newTesterWithQueue(t, `max_pending 5`, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook a {
				on after_call
				url %s/a
				param id call.call_id
				backoff 20ms 50ms
			}
			webhook b {
				on after_call
				url %s/b
				param id call.call_id
				backoff 20ms 50ms
			}
		}
	}`, rc.URL, rc.URL))
	_ = tester
	accepted := 0
	var full answer
	var hdr http.Header
	for i := 0; i < 10; i++ {
		status, ans, h := send(t, "POST", "/calls/after_call", "application/json", fmt.Sprintf(`{"call_id":"full-%d"}`, i))
		if status == http.StatusAccepted {
			accepted++
			continue
		}
		if status != http.StatusServiceUnavailable {
			t.Fatalf("status %d: %s", status, ans.Error)
		}
		full, hdr = ans, h
		break
	}
	if accepted != 2 {
		t.Fatalf("accepted %d events of 2 deliveries each under max_pending 5, want 2", accepted)
	}
	if hdr.Get("Retry-After") == "" || !strings.Contains(full.Error, "full") {
		t.Errorf("503 without Retry-After or a clear error: %q %v", full.Error, hdr)
	}
	close(up)
	// the queue drains by itself; then events are accepted again
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, _, _ := send(t, "POST", "/calls/after_call", "application/json", `{"call_id":"after-full"}`)
		if status == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d after the receiver came back", status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// 2 accepted events + the one after recovery, 2 deliveries each, nothing of the refused event
	deadline = time.Now().Add(30 * time.Second)
	for {
		ids := map[string]bool{}
		for _, h := range rc.got() {
			ids[h.Header.Get("webhook-id")] = true
		}
		if len(ids) == 6 {
			break
		}
		if len(ids) > 6 || time.Now().After(deadline) {
			t.Fatalf("receiver saw %d distinct deliveries, want 6", len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
