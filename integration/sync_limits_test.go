package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSyncLimits: a sync webhook's rate_limit, concurrency and
// disable_after apply. A call over a limit, or of a paused webhook, is not
// made (the caller gets the reply's fallback at once) and is recorded with
// the reason; failures count on the disable_after clock; resume lifts it.
func TestSyncLimits(t *testing.T) {
	var failing atomic.Bool
	release := make(chan struct{})
	crm := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		if failing.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Write([]byte(`{"ext":"205"}`))
	})
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook rated {
				on before_call
				sync
				url %[1]s/rated
				param caller call.caller
				rate_limit 1/m
			}
			webhook single {
				on call_forwarding
				sync
				url %[1]s/slow
				param caller call.caller
				concurrency 1
				timeout 5s
			}
			webhook breaker {
				on call_answered
				sync
				url %[1]s/breaker
				param caller call.caller
				disable_after 1s
			}
		}
	}`, crm.URL))

	call := func(event, id string) answer {
		t.Helper()
		res, raw, _ := postRaw(t, "/calls/"+event, "application/json", fmt.Sprintf(`{"call_id":%q,"caller":"+380501"}`, id))
		var a answer
		if err := json.Unmarshal([]byte(raw), &a); err != nil || res.StatusCode != 202 {
			t.Fatalf("%s: %d %s", event, res.StatusCode, raw)
		}
		return a
	}
	state := func(a answer, hook string) (string, string) {
		for _, d := range a.Deliveries {
			if d.Webhook == hook {
				return d.State, d.Error
			}
		}
		return "", ""
	}

	t.Run("rate_limit", func(t *testing.T) {
		if a := call("before_call", "r-1"); a.Sync["rated"] == nil {
			t.Fatalf("first call within the limit: %+v", a)
		}
		start := time.Now()
		a := call("before_call", "r-2")
		st, reason := state(a, "rated")
		if a.Sync["rated"] != nil || st != "dead" || !strings.Contains(reason, "sync call not made: its rate_limit is reached") {
			t.Errorf("second call in the minute: sync %+v, %s %q", a.Sync["rated"], st, reason)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("a call over the limit kept the caller waiting %v", took)
		}
		if n := len(crm.got()); n != 1 {
			t.Errorf("the CRM got %d calls, want 1", n)
		}
	})

	t.Run("concurrency", func(t *testing.T) {
		first := make(chan answer, 1)
		go func() { first <- call("call_forwarding", "c-1") }()
		deadline := time.Now().Add(5 * time.Second)
		for len(crm.got()) < 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		a := call("call_forwarding", "c-2")
		close(release)
		st, reason := state(a, "single")
		if a.Sync["single"] != nil || st != "dead" || !strings.Contains(reason, "concurrency limit is reached (1 calls in flight)") {
			t.Errorf("second call while one is in flight: sync %+v, %s %q", a.Sync["single"], st, reason)
		}
		if a := <-first; a.Sync["single"] == nil {
			t.Errorf("the call in flight: %+v", a)
		}
	})

	t.Run("disable_after and resume", func(t *testing.T) {
		failing.Store(true)
		call("call_answered", "b-1")
		time.Sleep(1100 * time.Millisecond)
		call("call_answered", "b-2") // every call failed for over 1s: paused
		before := len(crm.got())
		a := call("call_answered", "b-3")
		st, reason := state(a, "breaker")
		if st != "dead" || !strings.Contains(reason, "sync call not made: the webhook is paused") || len(crm.got()) != before {
			t.Errorf("call to a paused webhook: %s %q, CRM calls %d → %d", st, reason, before, len(crm.got()))
		}
		adminJSON(t, "POST", "/callhook/webhooks/default/breaker/resume", 200, nil)
		failing.Store(false)
		if a := call("call_answered", "b-4"); a.Sync["breaker"] == nil {
			t.Errorf("after resume: %+v", a)
		}
	})
}

// TestSyncCallsAreNotRetried: a failed sync call is recorded for the
// webhook's figures and marked as a sync call in the admin API, and retry
// is refused for it, one by one or in bulk, saying why: it would send a
// routing lookup for a call that is over.
func TestSyncCallsAreNotRetried(t *testing.T) {
	crm := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})
	notify := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest) // permanent: dead at once
	})
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook route {
				on before_call
				sync
				url %[1]s/route
				param caller call.caller
			}
			webhook notify {
				on before_call
				url %[2]s/notify
				param caller call.caller
			}
		}
	}`, crm.URL, notify.URL))
	_, raw, _ := postRaw(t, "/calls/before_call", "application/json", `{"call_id":"n-1","caller":"+380501"}`)
	var a answer
	json.Unmarshal([]byte(raw), &a)
	var syncID, notifyID string
	for _, d := range a.Deliveries {
		switch d.Webhook {
		case "route":
			syncID = d.ID
		case "notify":
			notifyID = d.ID
		}
	}
	if syncID == "" || notifyID == "" {
		t.Fatalf("answer %s", raw)
	}
	notify.waitHits(t, 1)
	waitStats(t, func(s adminStats) bool { return s.Dead == 2 })

	var d struct {
		State     string `json:"state"`
		Retryable bool   `json:"retryable"`
		SyncCall  bool   `json:"sync_call"`
	}
	adminJSON(t, "GET", "/callhook/deliveries/"+syncID, 200, &d)
	if d.State != "dead" || d.Retryable || !d.SyncCall {
		t.Errorf("failed sync call as listed: %+v", d)
	}
	raw = string(adminJSON(t, "POST", "/callhook/deliveries/"+syncID+"/retry", 409, nil))
	if !strings.Contains(raw, "is a call of sync webhook route") || !strings.Contains(raw, "not retried") {
		t.Errorf("retry of a sync call: %s", raw)
	}
	var preview struct {
		Dead, Retryable int
		SyncCalls       int `json:"sync_calls"`
	}
	adminJSON(t, "GET", "/callhook/dead", 200, &preview)
	if preview.Dead != 2 || preview.Retryable != 1 || preview.SyncCalls != 1 {
		t.Errorf("dead preview %+v", preview)
	}
	var bulk struct {
		Retried   int `json:"retried"`
		SyncCalls int `json:"skipped_sync_calls"`
	}
	adminJSON(t, "POST", "/callhook/dead/retry", 200, &bulk)
	if bulk.Retried != 1 || bulk.SyncCalls != 1 {
		t.Errorf("retry of every dead delivery: %+v", bulk)
	}
	var replayed answer
	adminJSON(t, "POST", "/callhook/events/"+a.EventID+"/replay", 202, &replayed)
	if len(replayed.Deliveries) != 1 || replayed.Deliveries[0].Webhook != "notify" {
		t.Errorf("a replay queues the async webhooks only: %+v", replayed.Deliveries)
	}
	notify.waitHits(t, 3)
	if n := len(crm.got()); n != 1 {
		t.Errorf("the CRM got %d routing lookups, want the 1 of the call", n)
	}
	var hooks struct {
		Webhooks []struct {
			Webhook          string
			Attempts, Failed int64
		}
	}
	adminJSON(t, "GET", "/callhook/webhooks", 200, &hooks)
	for _, h := range hooks.Webhooks {
		if h.Webhook == "route" && (h.Attempts != 1 || h.Failed != 1) {
			t.Errorf("figures of the sync webhook: %+v", h)
		}
	}
}
