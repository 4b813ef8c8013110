package integration

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const afterCall = `{
	"call_id": "c-100",
	"caller": "+380 44 123-45-67",
	"callee": "2001",
	"duration": "42",
	"start_time": "2026-03-04 10:11:12",
	"disposition": "ANSWERED",
	"utm_source": "google",
	"agent_id": 7,
	"tags": ["vip", "new"],
	"crm": {"name": "Olena & Co"}
}`

// TestFormatsMethodsAndHeaders sends one event to webhooks in every format
// and method, and checks byte for byte what the receivers got.
func TestFormatsMethodsAndHeaders(t *testing.T) {
	jsonR := newReceiver(t, nil)
	formGet := newReceiver(t, nil)
	formPost := newReceiver(t, nil)
	xmlR := newReceiver(t, nil)
	rpcR := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"jsonrpc":"2.0","result":true,"id":"x"}`))
	})
	del := newReceiver(t, nil)
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			target acme
			timezone Europe/Kyiv
			webhook crm_json {
				on after_call
				url %s/api/calls/{param.call_id}?src={param.source}
				header Authorization "Bearer crm-token"
				header X-Call {param.call_id}
				secret %s
				param call_id  call.call_id
				param caller   "e164(call.caller, 'UA')"
				param duration call.duration
				param started  call.start_time
				param source   "call.utm_source ?? 'direct'"
				param answered "call.disposition == 'answered'"
				param agent.id call.agent_id
				param agent.name "data.crm.name ?? ''"
				param tags     call.tags
				param record   call.recording_url
				date_format "2006-01-02 15:04:05"
			}
			webhook legacy_get {
				on after_call
				url %s/hook.php?v=1
				method GET
				format form
				date_format unix
				param phone   "digits(call.caller)"
				param contact[name] "data.crm.name ?? ''"
				param tags    call.tags
				param started call.start_time
				param none    call.note
			}
			webhook form_post {
				on after_call
				url %s/form
				format form
				param a "'x y&z'"
				param b true
			}
			webhook billing_xml {
				on after_call
				url %s/calls
				method PUT
				format xml
				xml_root call
				param id       call.call_id
				param agent.id call.agent_id
				param note     "'<b>&</b>'"
				param tags     call.tags
			}
			webhook erp_rpc {
				on after_call
				url %s/rpc
				format jsonrpc
				rpc_method calls.register
				param phone call.caller
			}
			webhook cleanup {
				on after_call
				url %s/calls/{param.id}
				method DELETE
				format form
				param id "call.call_id + '/x y'"
			}
		}
	}`, jsonR.URL, secret, formGet.URL, formPost.URL, xmlR.URL, rpcR.URL, del.URL))

	status, ans := postJSON(t, "/calls/after_call", afterCall)
	if status != http.StatusAccepted {
		t.Fatalf("status = %d (%s), want 202", status, ans.Error)
	}
	if ans.Event != "after_call" || ans.Target != "acme" || len(ans.Deliveries) != 6 {
		t.Fatalf("answer = %+v", ans)
	}

	h := jsonR.waitHits(t, 1)[0]
	if h.Method != "POST" || h.Path != "/api/calls/c-100" || h.Query != "src=google" {
		t.Errorf("json: %s %s?%s", h.Method, h.Path, h.Query)
	}
	wantJSON := `{"call_id":"c-100","caller":"+380441234567","duration":42,"started":"2026-03-04 10:11:12","source":"google","answered":true,"agent":{"id":"7","name":"Olena & Co"},"tags":["vip","new"],"record":null}`
	if h.Body != wantJSON {
		t.Errorf("json body:\n got %s\nwant %s", h.Body, wantJSON)
	}
	for k, v := range map[string]string{
		"Content-Type":  "application/json",
		"Authorization": "Bearer crm-token",
		"X-Call":        "c-100",
		"User-Agent":    "callhook/0.1.0",
		"webhook-id":    ans.id("crm_json"),
	} {
		if got := h.Header.Get(k); got != v {
			t.Errorf("json header %s = %q, want %q", k, got, v)
		}
	}
	if ts := h.Header.Get("webhook-timestamp"); ts == "" {
		t.Error("no webhook-timestamp")
	}
	key, _ := decodeWhsec(secret)
	verifySignature(t, key, h)

	h = formGet.waitHits(t, 1)[0]
	// 2026-03-04 10:11:12 in Kyiv (the handler's timezone) is 08:11:12 UTC
	wantQuery := "v=1&phone=380441234567&contact%5Bname%5D=Olena+%26+Co&tags=vip&tags=new&started=1772611872&none="
	if h.Method != "GET" || h.Path != "/hook.php" || h.Query != wantQuery || h.Body != "" {
		t.Errorf("form GET: %s %s?%s body %q\nwant query %s", h.Method, h.Path, h.Query, h.Body, wantQuery)
	}
	if h.Header.Get("webhook-signature") != "" {
		t.Error("unsigned webhook got a signature")
	}

	h = formPost.waitHits(t, 1)[0]
	if h.Body != "a=x+y%26z&b=true" || h.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("form POST body %q, content type %q", h.Body, h.Header.Get("Content-Type"))
	}

	h = xmlR.waitHits(t, 1)[0]
	if h.Method != "PUT" || h.Header.Get("Content-Type") != "application/xml; charset=utf-8" {
		t.Errorf("xml: %s, %q", h.Method, h.Header.Get("Content-Type"))
	}
	var doc struct {
		XMLName xml.Name `xml:"call"`
		ID      string   `xml:"id"`
		AgentID string   `xml:"agent>id"`
		Note    string   `xml:"note"`
		Tags    []string `xml:"tags"`
	}
	if err := xml.Unmarshal([]byte(h.Body), &doc); err != nil {
		t.Fatalf("xml body %q: %v", h.Body, err)
	}
	if !strings.HasPrefix(h.Body, `<?xml version="1.0" encoding="UTF-8"?>`) || doc.ID != "c-100" || doc.AgentID != "7" || doc.Note != "<b>&</b>" || strings.Join(doc.Tags, ",") != "vip,new" {
		t.Errorf("xml body %q decoded as %+v", h.Body, doc)
	}
	if strings.Index(h.Body, "<id>c-100") > strings.Index(h.Body, "<agent>") {
		t.Errorf("xml params out of declaration order: %s", h.Body)
	}

	h = rpcR.waitHits(t, 1)[0]
	wantRPC := fmt.Sprintf(`{"jsonrpc":"2.0","method":"calls.register","params":{"phone":"+380 44 123-45-67"},"id":%q}`, ans.id("erp_rpc"))
	if h.Body != wantRPC {
		t.Errorf("jsonrpc body:\n got %s\nwant %s", h.Body, wantRPC)
	}

	h = del.waitHits(t, 1)[0]
	if h.Method != "DELETE" || h.Path != "/calls/c-100/x y" || h.Query != "id=c-100%2Fx+y" || h.Body != "" {
		t.Errorf("DELETE: %s path %q query %q body %q", h.Method, h.Path, h.Query, h.Body)
	}
}

// TestIngestErrors checks every error answer and that nothing is queued on
// error: the receiver sees only the one valid event sent last.
func TestIngestErrors(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			token secret-token
			max_body 1KiB
			webhook w {
				on after_call before_call
				url %s/hook
				param id call.call_id
			}
		}
	}`, rc.URL))
	auth := []string{"Authorization", "Bearer secret-token"}
	tests := []struct {
		name, method, path, ct, body string
		header                       []string
		status                       int
		errContains                  string
	}{
		{"no token", "POST", "/calls/after_call", "application/json", `{"call_id":"1"}`, nil, 401, "token"},
		{"wrong token", "POST", "/calls/after_call", "application/json", `{"call_id":"1"}`, []string{"Authorization", "Bearer nope"}, 401, "token"},
		{"wrong query token", "GET", "/calls/after_call?call_id=1&token=nope", "", "", nil, 401, "token"},
		{"malformed json", "POST", "/calls/after_call", "application/json", `{"call_id":`, auth, 400, ""},
		{"json array", "POST", "/calls/after_call", "application/json", `[1]`, auth, 400, "object"},
		{"missing call_id", "POST", "/calls/after_call", "application/json", `{"caller":"1"}`, auth, 400, "call_id"},
		{"too big", "POST", "/calls/after_call", "application/json", `{"call_id":"1","note":"` + strings.Repeat("x", 2000) + `"}`, auth, 413, "max_body"},
		{"content type", "POST", "/calls/after_call", "text/plain", `call_id=1`, auth, 415, "text/plain"},
		{"unknown event", "POST", "/calls/hangup", "application/json", `{"call_id":"1"}`, auth, 422, "hangup"},
		{"wrong type", "POST", "/calls/after_call", "application/json", `{"call_id":"1","duration":"long"}`, auth, 422, "duration"},
		{"bad time", "POST", "/calls/after_call", "application/json", `{"call_id":"1","start_time":"yesterday"}`, auth, 422, "start_time"},
		{"bad enum", "POST", "/calls/after_call", "application/json", `{"call_id":"1","disposition":"maybe"}`, auth, 422, "disposition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ans, hdr := send(t, tt.method, tt.path, tt.ct, tt.body, tt.header...)
			if status != tt.status {
				t.Fatalf("status = %d (%q), want %d", status, ans.Error, tt.status)
			}
			if ans.Error == "" || !strings.Contains(ans.Error, tt.errContains) {
				t.Errorf("error = %q, want it to mention %q", ans.Error, tt.errContains)
			}
			if status == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	// form and GET query with the query token are accepted
	status, _, _ := send(t, "POST", "/calls/before_call", "application/x-www-form-urlencoded", "call_id=form-1", auth...)
	if status != 202 {
		t.Fatalf("form: status %d", status)
	}
	status, _, _ = send(t, "GET", "/calls/after_call?call_id=get-1&token=secret-token", "", "")
	if status != 202 {
		t.Fatalf("GET: status %d", status)
	}
	hits := rc.waitHits(t, 2)
	time.Sleep(300 * time.Millisecond) // let any wrongly queued error event show up
	hits = rc.got()
	if len(hits) != 2 {
		t.Fatalf("receiver got %d requests, want exactly the 2 valid events: %+v", len(hits), hits)
	}
	ids := map[string]bool{}
	for _, h := range hits {
		var b map[string]string
		json.Unmarshal([]byte(h.Body), &b)
		ids[b["id"]] = true
	}
	if !ids["form-1"] || !ids["get-1"] {
		t.Errorf("delivered ids = %v", ids)
	}
}

// TestDedup: the same target + event + call_id with the same fields and
// values again is answered 200 with the original delivery IDs and not
// queued twice; the same call with other data is a new event (SPEC §3).
func TestDedup(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook a {
				on after_call call_answered call_forwarding
				url %s/a
				param id call.call_id
			}
			webhook b {
				on after_call
				url %s/b
				param id call.call_id
			}
		}
	}`, rc.URL, rc.URL))
	status, first := postJSON(t, "/calls/after_call", `{"call_id":"dup-1","duration":5}`)
	if status != 202 || len(first.Deliveries) != 2 || first.EventID == "" {
		t.Fatalf("first: %d %+v", status, first)
	}
	// the same fields and values, in another order and encoding
	status, again := send3(t, "POST", "/calls/after_call", "application/x-www-form-urlencoded", "duration=5&call_id=dup-1")
	if status != 200 {
		t.Fatalf("repeat: status %d, want 200", status)
	}
	if fmt.Sprint(again.ids()) != fmt.Sprint(first.ids()) {
		t.Errorf("repeat deliveries %+v, want the original %+v", again.Deliveries, first.Deliveries)
	}
	for _, d := range again.Deliveries {
		if d.State == "" {
			t.Errorf("repeat answer has no state for %s", d.Webhook)
		}
	}
	// the same call with other data (a corrected after_call) is new
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"dup-1","duration":6}`); status != 202 {
		t.Errorf("changed data: status %d, want 202", status)
	}
	// a second forwarding of one call to another number is new
	if status, _ := postJSON(t, "/calls/call_forwarding", `{"call_id":"dup-1","forward_number":"+380441"}`); status != 202 {
		t.Errorf("first forwarding: status %d, want 202", status)
	}
	if status, _ := postJSON(t, "/calls/call_forwarding", `{"call_id":"dup-1","forward_number":"+380442"}`); status != 202 {
		t.Errorf("second forwarding: status %d, want 202", status)
	}
	// another event of the same call is not a duplicate
	if status, _ := postJSON(t, "/calls/call_answered", `{"call_id":"dup-1","duration":5}`); status != 202 {
		t.Errorf("other event: status %d, want 202", status)
	}
	const want = 2 + 2 + 1 + 1 + 1
	rc.waitHits(t, want)
	time.Sleep(300 * time.Millisecond)
	if n := len(rc.got()); n != want {
		t.Errorf("receiver got %d requests, want %d", n, want)
	}
}

func send3(t *testing.T, method, path, ct, body string) (int, answer) {
	t.Helper()
	status, a, _ := send(t, method, path, ct, body)
	return status, a
}

// TestDedupSettings: `dedup <expr>` replaces the key, `dedup off` turns
// repeats off, `dedup_window` bounds how long an event is remembered; the
// same from Caddy JSON.
func TestDedupSettings(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /per_call/* {
		callhook {
			target per_call
			dedup call.call_id
			webhook a {
				on after_call
				url %[1]s/a
			}
		}
	}
	handle /off/* {
		callhook {
			target off
			dedup off
			webhook a {
				on after_call
				url %[1]s/a
			}
		}
	}
	handle /short/* {
		callhook {
			target short
			dedup_window 1s
			webhook a {
				on after_call
				url %[1]s/a
			}
		}
	}
	handle /nilkey/* {
		callhook {
			target nilkey
			dedup data.uuid
			webhook a {
				on after_call
				url %[1]s/a
			}
		}
	}`, rc.URL))
	post := func(path, body string) int {
		t.Helper()
		status, _ := postJSON(t, path, body)
		return status
	}
	if s1, s2 := post("/per_call/after_call", `{"call_id":"k1","duration":1}`), post("/per_call/after_call", `{"call_id":"k1","duration":2}`); s1 != 202 || s2 != 200 {
		t.Errorf("dedup call.call_id: %d then %d, want 202 then 200", s1, s2)
	}
	if s1, s2 := post("/off/after_call", `{"call_id":"k1"}`), post("/off/after_call", `{"call_id":"k1"}`); s1 != 202 || s2 != 202 {
		t.Errorf("dedup off: %d then %d, want 202 twice", s1, s2)
	}
	if s1, s2 := post("/nilkey/after_call", `{"call_id":"k1"}`), post("/nilkey/after_call", `{"call_id":"k1"}`); s1 != 202 || s2 != 202 {
		t.Errorf("dedup expression yielding nil: %d then %d, want 202 twice", s1, s2)
	}
	if s1, s2 := post("/nilkey/after_call", `{"call_id":"k1","uuid":"u"}`), post("/nilkey/after_call", `{"call_id":"k2","uuid":"u"}`); s1 != 202 || s2 != 200 {
		t.Errorf("dedup data.uuid: %d then %d, want 202 then 200", s1, s2)
	}
	if s1, s2 := post("/short/after_call", `{"call_id":"k1"}`), post("/short/after_call", `{"call_id":"k1"}`); s1 != 202 || s2 != 200 {
		t.Errorf("dedup_window 1s: %d then %d, want 202 then 200", s1, s2)
	}
	time.Sleep(1100 * time.Millisecond)
	if s := post("/short/after_call", `{"call_id":"k1"}`); s != 202 {
		t.Errorf("dedup_window 1s, after 1.1s: %d, want 202", s)
	}
}

// TestRetryClasses covers retried, permanent and redirected outcomes.
func TestRetryClasses(t *testing.T) {
	flaky := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	limited := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	gone := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
	target := newReceiver(t, nil)
	redirect := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/moved", http.StatusFound)
	})
	rpcPermanent := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"jsonrpc":"2.0","error":{"code":-32601,"message":"no such method"},"id":"x"}`))
	})
	rpcRetry := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Write([]byte(`{"jsonrpc":"2.0","error":{"code":-32001,"message":"crm is read-only"},"id":"x"}`))
			return
		}
		w.Write([]byte(`{"jsonrpc":"2.0","result":1,"id":"x"}`))
	})
	hook := func(name, url, format string) string {
		return fmt.Sprintf(`
			webhook %s {
				on after_call
				url %s
				format %s
				param id call.call_id
				backoff 10ms 50ms
				max_attempts 5
			}`, name, url, format)
	}
	startCaddy(t, `allow_destinations 127.0.0.1/32`, `
	handle /calls/* {
		callhook {`+
		hook("flaky", flaky.URL, "json")+
		hook("limited", limited.URL, "json")+
		hook("gone", gone.URL, "json")+
		hook("redirect", redirect.URL, "json")+
		hook("rpc_permanent", rpcPermanent.URL, "jsonrpc")+
		hook("rpc_retry", rpcRetry.URL, "jsonrpc")+`
		}
	}`)
	if status, ans := postJSON(t, "/calls/after_call", `{"call_id":"r-1"}`); status != 202 {
		t.Fatalf("status %d: %s", status, ans.Error)
	}
	flakyHits := flaky.waitHits(t, 3)
	if flakyHits[0].Header.Get("webhook-id") != flakyHits[2].Header.Get("webhook-id") {
		t.Error("webhook-id changed between retries")
	}
	lim := limited.waitHits(t, 2)
	if gap := lim[1].At.Sub(lim[0].At); gap < 900*time.Millisecond {
		// Retry-After: 1 must hold the retry back although the backoff is 10ms
		t.Errorf("retry after %v, want at least the 1s of Retry-After", gap)
	}
	rpcRetry.waitHits(t, 2)
	redirect.waitHits(t, 1)
	gone.waitHits(t, 1)
	rpcPermanent.waitHits(t, 1)
	time.Sleep(500 * time.Millisecond) // room for wrong retries (backoff is 10-50ms)
	for name, rc := range map[string]*receiver{"gone": gone, "redirect": redirect, "rpc_permanent": rpcPermanent} {
		if n := len(rc.got()); n != 1 {
			t.Errorf("%s got %d attempts, want 1 (permanent failure)", name, n)
		}
	}
	if n := len(target.got()); n != 0 {
		t.Errorf("redirect was followed: target got %d requests", n)
	}
	if n := len(flaky.got()); n != 3 {
		t.Errorf("flaky got %d attempts, want 3 (2 failures, then success)", n)
	}
}

// TestSSRFGuard: a webhook to an address outside allow_destinations is never
// dialled, while its sibling to an allowed address is delivered.
func TestSSRFGuard(t *testing.T) {
	allowed := newReceiver(t, nil)
	blocked := newReceiverOn(t, "127.0.0.2:0", nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook blocked {
				on after_call
				# a literal 127.0.0.2 fails at load; a host from a param
				# reaches the dial-time guard
				url http://{param.host}:%s/x
				param id call.call_id
				param host "'127.0.0.2'"
				backoff 10ms 20ms
			}
			webhook allowed {
				on after_call
				url %s/x
				param id call.call_id
			}
		}
	}`, blocked.URL[strings.LastIndexByte(blocked.URL, ':')+1:], allowed.URL))
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"ssrf-1"}`); status != 202 {
		t.Fatalf("status %d", status)
	}
	allowed.waitHits(t, 1)
	time.Sleep(500 * time.Millisecond)
	if n := len(blocked.got()); n != 0 {
		t.Fatalf("SSRF guard let %d requests through to 127.0.0.2", n)
	}
}

// TestWhenAndRenderErrors: `when` false skips a webhook; a param that fails
// to evaluate gives a dead delivery (listed in the answer, never sent) and
// does not affect the event's other webhooks.
func TestWhenAndRenderErrors(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook only_long {
				on after_call
				url %s/long
				when "(call.duration ?? 0) > 60"
				param id call.call_id
			}
			webhook broken {
				on after_call
				url %s/broken
				param doubled "call.duration * 2"
			}
			webhook fine {
				on after_call
				url %s/fine
				param id call.call_id
			}
		}
	}`, rc.URL, rc.URL, rc.URL))
	status, ans := postJSON(t, "/calls/after_call", `{"call_id":"w-1"}`)
	if status != 202 {
		t.Fatalf("status %d: %s", status, ans.Error)
	}
	if ans.id("only_long") != "" || ans.id("broken") == "" || ans.id("fine") == "" {
		t.Fatalf("deliveries = %+v, want broken (dead) and fine, not only_long", ans.Deliveries)
	}
	rc.waitHits(t, 1)
	time.Sleep(300 * time.Millisecond)
	for _, h := range rc.got() {
		if h.Path != "/fine" {
			t.Errorf("unexpected delivery to %s", h.Path)
		}
	}
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"w-2","duration":61}`); status != 202 {
		t.Fatal(status)
	}
	hits := rc.waitHits(t, 4)
	paths := map[string]int{}
	for _, h := range hits {
		paths[h.Path]++
	}
	if paths["/long"] != 1 || paths["/fine"] != 2 || paths["/broken"] != 1 {
		t.Errorf("paths = %v", paths)
	}
}

func decodeWhsec(s string) ([]byte, error) {
	return base64Decode(strings.TrimPrefix(s, "whsec_"))
}
