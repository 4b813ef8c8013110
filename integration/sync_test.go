package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// post sends an event and returns the raw answer.
func postRaw(t *testing.T, path, ct, body string) (*http.Response, string, time.Duration) {
	t.Helper()
	start := time.Now()
	res, err := http.Post(caddyBase+path, ct, strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b), time.Since(start)
}

// TestSyncReply: a sync webhook is called while the PBX waits and its
// answer routes the call through the reply; timeouts, errors and `when`
// fall back through `??`; repeats are answered too; async webhooks of the
// event are queued as always (SPEC §9).
func TestSyncReply(t *testing.T) {
	crm := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Crm-Node", "n1")
		if n := len(r.URL.Query()["caller"]); n != 1 {
			// a qs or Rails receiver would read a list: the URL's query
			// carries caller, so GET form must not append it again
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"caller %d times in %s"}`, n, r.URL.RawQuery)
			return
		}
		switch r.URL.Query().Get("caller") {
		case "slow":
			time.Sleep(1500 * time.Millisecond)
		case "broken":
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, `{"manager_ext":"205","name":"Olena","caller":%q}`, r.URL.Query().Get("caller"))
	})
	crm2 := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`plain words`))
	})
	notify := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook crm_route {
				on call_forwarding before_call
				sync
				url %[1]s/route?caller={param.caller}
				method GET
				format form
				param caller call.caller
				timeout 500ms
			}
			webhook crm_text {
				on before_call
				sync
				when "call.caller != 'skip'"
				url %[2]s/text
				param caller call.caller
			}
			webhook notify {
				on call_forwarding before_call
				url %[3]s/notify
				param caller call.caller
			}
			reply call_forwarding {
				header X-Route crm
				header X-Ext {param.redirect}
				param redirect "sync.crm_route?.json?.manager_ext ?? '100'"
				param name "sync.crm_route?.json?.name ?? ''"
				param node "sync.crm_route?.headers?.['x-crm-node'] ?? ''"
				param status "sync.crm_route?.status ?? 0"
			}
		}
	}
	handle /twiml/* {
		callhook {
			target twiml
			webhook crm {
				on before_call
				sync
				url %[1]s/route?caller={param.caller}
				method GET
				format form
				param caller call.caller
			}
			reply before_call {
				format xml
				xml_root Response
				param Dial "sync.crm?.json?.manager_ext ?? '100'"
			}
		}
	}
	handle /text/* {
		callhook {
			target text
			webhook crm {
				on before_call
				sync
				url %[1]s/route?caller={param.caller}
				method GET
				format form
				param caller call.caller
			}
			reply before_call {
				status 201
				format text
				param redirect "sync.crm?.json?.manager_ext ?? '100'"
			}
		}
	}`, crm.URL, crm2.URL, notify.URL))

	replyOf := func(path, body string) (*http.Response, map[string]any, time.Duration) {
		t.Helper()
		res, raw, took := postRaw(t, path, "application/json", body)
		var m map[string]any
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatalf("%s: answer %d is not JSON: %q", path, res.StatusCode, raw)
		}
		return res, m, took
	}

	t.Run("reply from the CRM", func(t *testing.T) {
		res, m, _ := replyOf("/calls/call_forwarding", `{"call_id":"s-1","caller":"+380501"}`)
		if res.StatusCode != 200 || m["redirect"] != "205" || m["name"] != "Olena" || m["node"] != "n1" || m["status"] != 200.0 {
			t.Fatalf("status %d, reply %v", res.StatusCode, m)
		}
		if res.Header.Get("X-Route") != "crm" || res.Header.Get("X-Ext") != "205" || res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("reply headers %v", res.Header)
		}
		notify.waitHits(t, 1) // the async webhook is queued as always
	})
	t.Run("repeat is answered too", func(t *testing.T) {
		before := len(crm.got())
		res, m, _ := replyOf("/calls/call_forwarding", `{"call_id":"s-1","caller":"+380501"}`)
		if res.StatusCode != 200 || m["redirect"] != "205" {
			t.Fatalf("status %d, reply %v", res.StatusCode, m)
		}
		if len(crm.got()) != before+1 {
			t.Errorf("the sync webhook was not called for the repeat")
		}
	})
	t.Run("timeout falls back", func(t *testing.T) {
		res, m, took := replyOf("/calls/call_forwarding", `{"call_id":"s-2","caller":"slow"}`)
		if res.StatusCode != 200 || m["redirect"] != "100" || m["status"] != 0.0 {
			t.Fatalf("status %d, reply %v", res.StatusCode, m)
		}
		if took > 1200*time.Millisecond {
			t.Errorf("answered after %v; the sync timeout is 500ms", took)
		}
	})
	t.Run("error status falls back", func(t *testing.T) {
		_, m, _ := replyOf("/calls/call_forwarding", `{"call_id":"s-3","caller":"broken"}`)
		if m["redirect"] != "100" {
			t.Fatalf("reply %v", m)
		}
	})
	t.Run("no reply: the JSON answer has a sync member", func(t *testing.T) {
		res, raw, _ := postRaw(t, "/calls/before_call", "application/json", `{"call_id":"s-4","caller":"+380502"}`)
		var a answer
		json.Unmarshal([]byte(raw), &a)
		if res.StatusCode != 202 || a.Sync == nil {
			t.Fatalf("status %d, answer %s", res.StatusCode, raw)
		}
		route, text := a.Sync["crm_route"], a.Sync["crm_text"]
		if route == nil || route.Status != 200 || route.JSON.(map[string]any)["manager_ext"] != "205" {
			t.Errorf("sync.crm_route = %+v in %s", route, raw)
		}
		if text == nil || text.Status != 200 || text.JSON != nil {
			t.Errorf("sync.crm_text = %+v (a non-JSON body has json null)", text)
		}
		states := map[string]string{}
		for _, d := range a.Deliveries {
			states[d.Webhook] = d.State
		}
		if states["crm_route"] != "delivered" || states["crm_text"] != "delivered" || states["notify"] != "pending" {
			t.Errorf("delivery states %v", states)
		}
		// a sync call is recorded as a delivered delivery with one attempt
		var d adminDelivery
		adminJSON(t, "GET", "/callhook/deliveries/"+a.id("crm_route"), 200, &d)
		if d.State != "delivered" || len(d.Attempts) != 1 || d.Attempts[0].Status != 200 {
			t.Errorf("recorded sync call: %+v", d)
		}
	})
	t.Run("when false and failures give null", func(t *testing.T) {
		_, raw, _ := postRaw(t, "/calls/before_call", "application/json", `{"call_id":"s-5","caller":"skip"}`)
		var a answer
		json.Unmarshal([]byte(raw), &a)
		if _, ok := a.Sync["crm_text"]; !ok || a.Sync["crm_text"] != nil {
			t.Errorf("skipped by when: sync = %s", raw)
		}
		_, raw, _ = postRaw(t, "/calls/before_call", "application/json", `{"call_id":"s-6","caller":"broken"}`)
		a = answer{}
		json.Unmarshal([]byte(raw), &a)
		if a.Sync["crm_route"] != nil {
			t.Errorf("500 from the CRM: sync = %s", raw)
		}
		for _, d := range a.Deliveries {
			if d.Webhook == "crm_route" && (d.State != "dead" || !strings.Contains(d.Error, "http 500")) {
				t.Errorf("failed sync call: %+v", d)
			}
		}
	})
	t.Run("TwiML", func(t *testing.T) {
		res, raw, _ := postRaw(t, "/twiml/before_call", "application/x-www-form-urlencoded", "call_id=s-7&caller=%2B380503")
		want := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Response><Dial>205</Dial></Response>`
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/xml") || !strings.Contains(raw, "<Response><Dial>205</Dial></Response>") {
			t.Errorf("%d %s %q, want %q", res.StatusCode, res.Header.Get("Content-Type"), raw, want)
		}
	})
	t.Run("text", func(t *testing.T) {
		res, raw, _ := postRaw(t, "/text/before_call", "application/json", `{"call_id":"s-8","caller":"+380504"}`)
		if res.StatusCode != 201 || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" || raw != "205" {
			t.Errorf("%d %s %q", res.StatusCode, res.Header.Get("Content-Type"), raw)
		}
	})
	t.Run("errors are answered as usual", func(t *testing.T) {
		res, raw, _ := postRaw(t, "/calls/call_forwarding", "application/json", `{"caller":"x"}`)
		if res.StatusCode != 400 || !strings.Contains(raw, "missing call_id") {
			t.Errorf("%d %s", res.StatusCode, raw)
		}
	})
}

// startJSON loads a Caddy JSON config with one callhook handler on
// /calls/*; app is the callhook app's extra members (after the queue).
func startJSON(t *testing.T, app, handler string) {
	t.Helper()
	if app != "" {
		app = ", " + app
	}
	cfg := fmt.Sprintf(`{
	"admin": {"listen": "localhost:%d"},
	"apps": {
		"callhook": {"queue": {"backend": "embedded", "path": %q}%s},
		"http": {
			"http_port": %d,
			"grace_period": 1,
			"servers": {"srv0": {
				"listen": ["127.0.0.1:%d"],
				"routes": [{"match": [{"path": ["/calls/*"]}], "handle": [%s]}]
			}}
		}
	}
}`, adminPort, t.TempDir(), app, httpPort, httpPort, handler)
	initServer(t, cfg, "json")
}

// TestSyncReplyJSON: the same from Caddy JSON.
func TestSyncReplyJSON(t *testing.T) {
	crm := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"to":"+380441112233"}`))
	})
	startJSON(t, `"allow_destinations": ["127.0.0.1/32"]`, fmt.Sprintf(`{
		"handler": "callhook",
		"webhooks": [{"name": "crm", "on": ["before_call"], "sync": true, "timeout": "1s",
			"url": "%s/r", "params": [{"name": "caller", "expr": "call.caller"}]}],
		"replies": [{"event": "before_call", "format": "form", "headers": [{"name": "X-A", "value": "b"}],
			"params": [{"name": "redirect", "expr": "sync.crm?.json?.to ?? ''"}]}]
	}`, crm.URL))
	res, raw, _ := postRaw(t, "/calls/before_call", "application/json", `{"call_id":"j-1","caller":"+1"}`)
	if res.StatusCode != 200 || raw != "redirect=%2B380441112233" || res.Header.Get("X-A") != "b" ||
		res.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Fatalf("%d %v %q", res.StatusCode, res.Header, raw)
	}
	if h := crm.got(); len(h) != 1 || !strings.Contains(h[0].Body, `"caller":"+1"`) {
		t.Errorf("crm got %+v", h)
	}
}
