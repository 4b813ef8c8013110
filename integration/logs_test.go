package integration

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// logLine is one JSON line of Caddy's log.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// num is a number field; JSON numbers decode as float64.
func (l logLine) num(k string) (float64, bool) { n, ok := l[k].(float64); return n, ok }

// readLog parses a JSON log file; a line that is not JSON fails the test.
func readLog(t *testing.T, path string) []logLine {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the log: %v", err)
	}
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Bytes())
		}
		out = append(out, l)
	}
	return out
}

// logWant describes a log line that must exist: its message, logger and
// level, and fields that must have exactly these values.
type logWant struct {
	name   string
	msg    string
	logger string
	level  string
	fields map[string]any // string or float64 values, compared exactly
	// reason, when set, must be the start of the line's reason field.
	reason string
}

func (w logWant) match(l logLine) bool {
	if l.str("msg") != w.msg || l.str("logger") != w.logger || l.str("level") != w.level {
		return false
	}
	for k, v := range w.fields {
		if l[k] != v {
			return false
		}
	}
	return w.reason == "" || strings.HasPrefix(l.str("reason"), w.reason)
}

// TestLogs captures Caddy's log while events are accepted, repeated and
// rejected and their webhooks are delivered, retried and given up on for
// each reason that can be made to happen locally. It checks the lines and
// their fields, and that no token, header secret, signing secret or
// signature ever appears in the log.
func TestLogs(t *testing.T) {
	const (
		target        = "logs-test"
		pbxToken      = "pbx-token-d41d8cd98f00b204"
		headerSecret  = "crm-bearer-9e107d9d372bb682"
		apiKeySecret  = "api-key-e4d909c290d0fb1c"
		rawSignSecret = "raw-signing-secret-a87ff679a2f3e71d"
	)
	signKey := []byte("whsec-signing-key-bytes-0123456789")
	whsec := "whsec_" + base64.StdEncoding.EncodeToString(signKey)
	t.Setenv("CALLHOOK_LOGS_TEST_CRM_TOKEN", headerSecret)

	ok := newReceiver(t, nil)
	flaky := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	elsewhere := newReceiver(t, nil)
	redirect := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/moved", http.StatusFound)
	})
	readOnly := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"jsonrpc":"2.0","error":{"code":-32001,"message":"crm is read-only"},"id":"x"}`))
	})
	private := newReceiverOn(t, "127.0.0.2:0", nil)
	// a port nobody listens on: connection refused
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String()
	ln.Close()

	hook := func(name, url, extra string) string {
		return fmt.Sprintf(`
			webhook %s {
				on after_call
				url %s
				header Authorization "Bearer {env.CALLHOOK_LOGS_TEST_CRM_TOKEN}"
				header X-Api-Key %s
				param id call.call_id
				backoff 10ms 20ms
				max_attempts 2
				%s
			}`, name, url, apiKeySecret, extra)
	}
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	cfg := caddyfile(t.TempDir(), `allow_destinations 127.0.0.1/32`, `
	handle /calls/* {
		callhook {
			target `+target+`
			token `+pbxToken+
		hook("ok", ok.URL, "secret "+whsec)+
		hook("flaky", flaky.URL, "secret "+rawSignSecret)+
		hook("refused", closedURL, "secret "+whsec)+
		hook("redirect", redirect.URL, "secret "+whsec)+
		hook("read_only", readOnly.URL, "format jsonrpc\n\t\t\t\tsecret "+whsec)+
		// a literal 127.0.0.2 fails at load; a host from a param reaches
		// the dial-time guard
		hook("private", "http://{param.host}:"+private.URL[strings.LastIndexByte(private.URL, ':')+1:], "secret "+whsec+"\n\t\t\t\tparam host \"'127.0.0.2'\"")+
		hook("broken", ok.URL+"/broken", `param doubled "call.duration * 2"`)+`
		}
	}`)
	// DEBUG: secrets must not leak at any level
	cfg = withGlobalOptions(cfg, fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t\tlevel DEBUG\n\t}", logFile))
	initServer(t, cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}

	status, ans := postJSON(t, "/calls/after_call", `{"call_id":"log-1"}`, "Authorization", "Bearer "+pbxToken)
	if status != http.StatusAccepted || len(ans.Deliveries) != 7 {
		t.Fatalf("status %d, deliveries %+v: %s", status, ans.Deliveries, ans.Error)
	}
	// the same event again, with the token in the query this time
	if status, _ := postJSON(t, "/calls/after_call?token="+pbxToken, `{"call_id":"log-1"}`); status != http.StatusOK {
		t.Fatalf("repeated event: status %d, want 200", status)
	}
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"log-2"}`, "Authorization", "Bearer wrong-"+pbxToken); status != http.StatusUnauthorized {
		t.Fatalf("wrong token: status %d, want 401", status)
	}

	outcome := func(name, webhook, msg, level string, attempt, status float64, reason string) logWant {
		return logWant{name: name, msg: msg, logger: "callhook", level: level, reason: reason,
			fields: map[string]any{
				"target": target, "event": "after_call", "call_id": "log-1",
				"webhook": webhook, "delivery_id": ans.id(webhook),
				"attempt": attempt, "status": status,
			}}
	}
	const (
		delivered = "webhook delivered"
		retry     = "webhook attempt failed; will retry"
		dead      = "webhook delivery is dead; giving up (retry it by hand once fixed)"
	)
	wants := []logWant{
		{name: "accepted", msg: "event accepted", logger: "http.handlers.callhook", level: "info",
			fields: map[string]any{"target": target, "event": "after_call", "call_id": "log-1"}},
		{name: "duplicate", msg: "duplicate event: already accepted, nothing queued", logger: "http.handlers.callhook", level: "info",
			fields: map[string]any{"target": target, "event": "after_call", "call_id": "log-1"}},
		{name: "rejected", msg: "event rejected", logger: "http.handlers.callhook", level: "debug",
			fields: map[string]any{"target": target, "status": 401.0}, reason: "missing or wrong token"},
		{name: "render error", msg: "webhook could not be rendered; its delivery is stored dead (fix the webhook, reload, then retry the delivery by hand: it is rendered again from the stored event)",
			logger: "http.handlers.callhook", level: "error", reason: "webhook broken: param doubled:",
			fields: map[string]any{"target": target, "event": "after_call", "call_id": "log-1", "webhook": "broken", "delivery_id": ans.id("broken")}},

		outcome("delivered", "ok", delivered, "info", 1, 204, ""),
		outcome("retried", "flaky", retry, "warn", 1, 503, "http 503"),
		outcome("delivered after a retry", "flaky", delivered, "info", 2, 200, ""),
		outcome("connection refused, retried", "refused", retry, "warn", 1, 0, "connection refused"),
		outcome("connection refused, dead", "refused", dead, "error", 2, 0, "connection refused (gave up after 2 attempts)"),
		outcome("redirect", "redirect", dead, "error", 1, 302, "redirect not followed (302 to "+elsewhere.URL+"/moved)"),
		outcome("jsonrpc error, retried", "read_only", retry, "warn", 1, 200, "jsonrpc error -32001: crm is read-only"),
		outcome("jsonrpc error, dead", "read_only", dead, "error", 2, 200, "jsonrpc error -32001: crm is read-only (gave up after 2 attempts)"),
		outcome("ssrf", "private", dead, "error", 1, 0,
			"blocked by SSRF guard: 127.0.0.2 is loopback; add it to allow_destinations to allow it"),
	}

	var lines []logLine
	var missing []logWant
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines = readLog(t, logFile)
		missing = missing[:0]
		for _, w := range wants {
			found := false
			for _, l := range lines {
				if w.match(l) {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range missing {
		t.Errorf("no %s line: want msg %q from %s at %s with %v, reason %q", w.name, w.msg, w.logger, w.level, w.fields, w.reason)
	}
	if t.Failed() {
		for _, l := range lines {
			if strings.Contains(l.str("logger"), "callhook") {
				b, _ := json.Marshal(l)
				t.Logf("log: %s", b)
			}
		}
		t.FailNow()
	}

	for _, l := range lines {
		switch l.str("msg") {
		case delivered, retry, dead:
			if d, ok := l.num("duration"); !ok || d < 0 {
				t.Errorf("outcome line without a duration in seconds: %v", l)
			}
		case "event accepted":
			// every delivery of the answer, each with its webhook
			got := map[string]string{}
			list, _ := l["deliveries"].([]any)
			for _, item := range list {
				m, _ := item.(map[string]any)
				got[fmt.Sprint(m["webhook"])] = fmt.Sprint(m["delivery_id"])
			}
			for _, d := range ans.Deliveries {
				if got[d.Webhook] != d.ID {
					t.Errorf("event accepted line lists %v, want every delivery of %+v", got, ans.Deliveries)
					break
				}
			}
		}
	}

	// Nothing secret, anywhere in the log: not in callhook's lines, not in
	// Caddy's. Signatures are collected from what the receivers got.
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"the handler token":        pbxToken,
		"the Authorization header": headerSecret,
		"the X-Api-Key header":     apiKeySecret,
		"the raw signing secret":   rawSignSecret,
		"the whsec signing secret": whsec,
		"the signing key's base64": base64.StdEncoding.EncodeToString(signKey),
		"the signing key":          string(signKey),
	}
	signatures := 0
	for _, rc := range []*receiver{ok, flaky, redirect, readOnly} {
		for _, h := range rc.got() {
			sig := h.Header.Get("webhook-signature")
			if sig == "" {
				t.Errorf("%s got a request without webhook-signature", rc.URL)
				continue
			}
			signatures++
			secrets["signature "+sig] = strings.TrimPrefix(sig, "v1,")
		}
	}
	if signatures < 5 { // ok, flaky twice, redirect, read_only twice
		t.Errorf("receivers got %d signed requests, want at least 5", signatures)
	}
	for what, s := range secrets {
		if i := bytes.Index(raw, []byte(s)); i >= 0 {
			t.Errorf("the log holds %s: ...%s...", what, raw[max(0, i-200):min(len(raw), i+len(s)+50)])
		}
	}
}
