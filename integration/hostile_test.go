package integration

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// hostileDelivery reads one delivery from the admin API.
func hostileDelivery(t *testing.T, id string) (state, lastError, nextAttempt string, attempts int) {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://localhost:%d/callhook/deliveries/%s", adminPort, id))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var v struct {
		State       string `json:"state"`
		LastError   string `json:"last_error"`
		NextAttempt string `json:"next_attempt"`
		Attempts    []any  `json:"attempts"`
	}
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || json.Unmarshal(raw, &v) != nil {
		t.Fatalf("admin GET delivery %s: %d %s", id, res.StatusCode, raw)
	}
	return v.State, v.LastError, v.NextAttempt, len(v.Attempts)
}

// TestHostileIngest: bodies that are too big, too deep or too wide get a
// 4xx and queue nothing; a wide body within max_body is accepted; invalid
// UTF-8 reaches the receivers as well-formed JSON, XML and form bodies.
func TestHostileIngest(t *testing.T) {
	jsonR := newReceiver(t, nil)
	xmlR := newReceiver(t, nil)
	formR := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /small/* {
		callhook small {
			max_body 64KiB
			webhook never {
				on after_call
				url %s/never
				param id call.call_id
			}
		}
	}
	handle /calls/* {
		callhook {
			max_body 4MiB
			webhook j {
				on after_call
				url %s/j
				param id call.call_id
				param caller call.caller
				param note "data.note ?? ''"
				param n "len(data)"
			}
			webhook x {
				on after_call
				url %s/x
				format xml
				param id call.call_id
				param caller call.caller
				param note "data.note ?? ''"
			}
			webhook f {
				on after_call
				url %s/f
				format form
				param id call.call_id
				param note "data.note ?? ''"
			}
		}
	}`, jsonR.URL, jsonR.URL, xmlR.URL, formR.URL))

	wide := func(n int, form bool) string {
		var b strings.Builder
		if form {
			b.WriteString("call_id=wide")
			for i := range n {
				fmt.Fprintf(&b, "&k%d=%d", i, i)
			}
			return b.String()
		}
		b.WriteString(`{"call_id":"wide"`)
		for i := range n {
			fmt.Fprintf(&b, `,"k%d":%d`, i, i)
		}
		return b.String() + "}"
	}
	errs := []struct {
		name, path, ct, body string
		chunked              bool
		status               int
		mention              string
	}{
		{"oversized", "/small/after_call", "application/json", `{"call_id":"big","note":"` + strings.Repeat("x", 1<<20) + `"}`, false, 413, "max_body"},
		{"oversized chunked", "/small/after_call", "application/json", `{"call_id":"big","note":"` + strings.Repeat("x", 1<<20) + `"}`, true, 413, "max_body"},
		{"nested 100k", "/calls/after_call", "application/json", `{"call_id":"deep","x":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + "}", false, 400, "malformed JSON body"},
		{"nested 100k unclosed", "/calls/after_call", "application/json", `{"call_id":"deep","x":` + strings.Repeat(`{"a":`, 100_000), false, 400, "malformed JSON body"},
		{"100k form fields", "/calls/after_call", "application/x-www-form-urlencoded", wide(100_000, true), false, 400, "at most 10000"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req, _ := http.NewRequest("POST", caddyBase+tt.path, body)
			req.Header.Set("Content-Type", tt.ct)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			a := decodeAnswer(t, res)
			if res.StatusCode != tt.status || !strings.Contains(a.Error, tt.mention) {
				t.Fatalf("status %d error %q, want %d mentioning %q", res.StatusCode, a.Error, tt.status, tt.mention)
			}
		})
	}

	// 100k fields in JSON, inside max_body: accepted, as any body is
	start := time.Now()
	status, ans := postJSON(t, "/calls/after_call", wide(100_000, false))
	if status != 202 || len(ans.Deliveries) != 3 {
		t.Fatalf("wide body: status %d %+v", status, ans)
	}
	t.Logf("100k JSON fields: answered %d in %v", status, time.Since(start))
	if h := jsonR.waitHits(t, 1)[0]; !strings.Contains(h.Body, `"n":100001`) {
		t.Errorf("json body %.200s", h.Body)
	}

	// invalid UTF-8 in the JSON body (decoded as U+FFFD) and in a form body
	// (kept as bytes), through every format
	status, _ = postJSON(t, "/calls/after_call", "{\"call_id\":\"utf-\xff\",\"caller\":\"+380\xfe\",\"note\":\"a\xc3b\"}")
	if status != 202 {
		t.Fatalf("invalid UTF-8 JSON: status %d", status)
	}
	status, _, _ = send(t, "POST", "/calls/after_call", "application/x-www-form-urlencoded", "call_id=utf-form&caller=%FE&note=a%C3%28b")
	if status != 202 {
		t.Fatalf("invalid UTF-8 form: status %d", status)
	}
	for _, h := range jsonR.waitHits(t, 3)[1:] {
		if !json.Valid([]byte(h.Body)) || !utf8.ValidString(h.Body) {
			t.Errorf("json receiver got %q", h.Body)
		}
	}
	for _, h := range xmlR.waitHits(t, 3)[1:] {
		dec := xml.NewDecoder(strings.NewReader(h.Body))
		for {
			if _, err := dec.Token(); err != nil {
				if err != io.EOF {
					t.Errorf("xml receiver got %q: %v", h.Body, err)
				}
				break
			}
		}
	}
	notes := map[string]string{}
	for _, h := range formR.waitHits(t, 3)[1:] {
		v, err := url.ParseQuery(h.Body)
		if err != nil {
			t.Errorf("form receiver got %q: %v", h.Body, err)
		}
		notes[v.Get("id")] = v.Get("note")
	}
	if notes["utf-form"] != "a\xc3(b" || notes["utf-\uFFFD"] != "a\uFFFDb" {
		t.Errorf("form notes %q", notes)
	}
	for _, h := range jsonR.got() {
		if h.Path == "/never" {
			t.Errorf("an event answered with an error was delivered: %q", h.Body)
		}
	}
}

// TestHostileExpressionsAndHeaders: webhooks whose expressions loop, panic
// or render a header with a line break get dead deliveries with the
// reason; the event is answered 202 and its other webhook is delivered.
func TestHostileExpressionsAndHeaders(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook loops {
				on after_call
				url %[1]s/loops
				when "let r = 1..1000; all(r, {all(r, {all(r, {true})})})"
			}
			webhook loops_on_data {
				on after_call
				url %[1]s/loops_on_data
				param dups "count(data.items ?? [], {let i = #; count(data.items, {# == i}) > 1})"
			}
			webhook panics {
				on after_call
				url %[1]s/panics
				param d "digits(data.items)"
			}
			webhook crlf {
				on after_call
				url %[1]s/crlf
				header X-Note {param.note}
				param note "data.note ?? ''"
			}
			webhook dots {
				on after_call
				url %[1]s/calls/{param.id}/notes
				param id "data.ref ?? call.call_id"
			}
			webhook fine {
				on after_call
				url %[1]s/fine
				param id call.call_id
			}
		}
	}`, rc.URL))
	items := make([]string, 5000)
	for i := range items {
		items[i] = fmt.Sprint(i)
	}
	body := fmt.Sprintf(`{"call_id":"hostile-1","note":"hi\r\nX-Injected: 1","ref":"..","items":[%s]}`, strings.Join(items, ","))
	start := time.Now()
	status, ans := postJSON(t, "/calls/after_call", body)
	if status != 202 {
		t.Fatalf("status %d: %s", status, ans.Error)
	}
	t.Logf("answered in %v", time.Since(start))
	dead := map[string]string{
		"loops":         "webhook loops: when: the expression allocates or loops over more than 1000000 values for one event",
		"loops_on_data": "webhook loops_on_data: param dups: the expression allocates or loops over more than 1000000 values",
		"panics":        "webhook panics: param d: interface conversion",
		"crlf":          "webhook crlf: header X-Note: the rendered value contains CR, LF, NUL or another control character",
		"dots":          `webhook dots: url: a param value makes a "." or ".." path segment`,
	}
	for name, want := range dead {
		id := ans.id(name)
		if id == "" {
			t.Errorf("%s: no delivery in the answer %+v", name, ans.Deliveries)
			continue
		}
		state, lastErr, _, _ := hostileDelivery(t, id)
		if state != "dead" || !strings.Contains(lastErr, want) {
			t.Errorf("%s: state %q, last error %q, want dead with %q", name, state, lastErr, want)
		}
		if strings.Contains(lastErr, "X-Injected") {
			t.Errorf("%s: the reason quotes the hostile value: %q", name, lastErr)
		}
	}
	rc.waitHits(t, 1)
	time.Sleep(300 * time.Millisecond)
	for _, h := range rc.got() {
		if h.Path != "/fine" || h.Header.Get("X-Injected") != "" {
			t.Errorf("unexpected request to %s (headers %v)", h.Path, h.Header)
		}
	}
}

// TestHostileRetryAfter: a receiver that asks for a retry in 30 years is
// retried within the hour.
func TestHostileRetryAfter(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "999999999")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook slow_down {
				on after_call
				url %s/hook
				param id call.call_id
				backoff 1s 2s
			}
		}
	}`, rc.URL))
	status, ans := postJSON(t, "/calls/after_call", `{"call_id":"ra-1"}`)
	if status != 202 {
		t.Fatalf("status %d", status)
	}
	h := rc.waitHits(t, 1)[0]
	deadline := time.Now().Add(30 * time.Second)
	for {
		state, lastErr, next, attempts := hostileDelivery(t, ans.id("slow_down"))
		if attempts == 1 && next != "" {
			at, err := time.Parse(time.RFC3339Nano, next)
			if err != nil {
				t.Fatalf("next_attempt %q: %v", next, err)
			}
			if wait := at.Sub(h.At); state != "pending" || wait < 59*time.Minute || wait > time.Hour+time.Minute {
				t.Fatalf("state %s, next attempt %v after the first (%s), want about 1h", state, wait, lastErr)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("attempt not recorded: state %s, %d attempts, next %q", state, attempts, next)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
