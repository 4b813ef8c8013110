package integration

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// twilioSign computes X-Twilio-Signature as Twilio documents it ("Webhooks
// security": the full URL, then each POST param's name and value, names
// sorted, no delimiters; HMAC-SHA1 with the auth token; base64). Written
// out here independently of the code under test.
func twilioSign(token, fullURL string, form url.Values) string {
	s := fullURL
	var keys []string
	for k := range form {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		s += k + form.Get(k)
	}
	m := hmac.New(sha1.New, []byte(token))
	m.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// zadarmaSign is Zadarma's Signature for NOTIFY_START as its PHP example
// computes it: base64_encode(hash_hmac('sha1', caller_id.called_did.call_start, secret)).
func zadarmaSign(secret string, form url.Values) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(form.Get("caller_id") + form.Get("called_did") + form.Get("call_start")))
	return base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString(m.Sum(nil))))
}

func postForm(t *testing.T, path string, form url.Values, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", caddyBase+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestVerify: verify twilio, verify zadarma (with the zd_echo check) and
// allow_sources on a real Caddy, with trusted proxies honoured for the
// client IP, which request.remote_ip shows too (SPEC §10).
func TestVerify(t *testing.T) {
	t.Setenv("CALLHOOK_TEST_TWILIO", "tw-auth-token")
	rc := newReceiver(t, nil)
	cfg := caddyfile(t.TempDir(), `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /twilio/* {
		callhook {
			target twilio
			input twilio
			event before_call
			verify twilio {env.CALLHOOK_TEST_TWILIO}
			webhook w {
				on before_call
				url %[1]s/twilio
				param id call.call_id
			}
		}
	}
	handle_path /behind/* {
		callhook {
			target behind
			input twilio
			event before_call
			verify twilio tw-auth-token https://public.example.com/calls/twilio
			webhook w {
				on before_call
				url %[1]s/behind
				param id call.call_id
			}
		}
	}
	handle /zadarma/* {
		callhook {
			target zadarma
			input zadarma
			event before_call
			verify zadarma zd-secret
			webhook w {
				on before_call
				url %[1]s/zadarma
				param id call.call_id
			}
		}
	}
	handle /src/* {
		callhook {
			target src
			allow_sources 10.9.0.0/16 192.0.2.7
			token src-token
			webhook w {
				on after_call
				url %[1]s/src
				param id call.call_id
				param ip request.remote_ip
			}
		}
	}`, rc.URL))
	cfg = withGlobalOptions(cfg, "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}")
	initServer(t, cfg, "caddyfile")

	twForm := url.Values{"CallSid": {"CA0001"}, "From": {"+15550001"}, "To": {"+15550002"}, "CallStatus": {"ringing"}}
	t.Run("twilio", func(t *testing.T) {
		signed := caddyBase + "/twilio/voice?x=1"
		if s, b := postForm(t, "/twilio/voice?x=1", twForm, "X-Twilio-Signature", twilioSign("tw-auth-token", signed, twForm)); s != 202 {
			t.Fatalf("signed: %d %s", s, b)
		}
		bad := url.Values{}
		for k, v := range twForm {
			bad[k] = v
		}
		bad.Set("From", "+15559999")
		s, b := postForm(t, "/twilio/voice?x=1", bad, "X-Twilio-Signature", twilioSign("tw-auth-token", signed, twForm))
		if s != 401 || !strings.Contains(b, "X-Twilio-Signature does not match") {
			t.Errorf("tampered: %d %s", s, b)
		}
		if s, b := postForm(t, "/twilio/voice?x=1", twForm); s != 401 || !strings.Contains(b, "missing X-Twilio-Signature") {
			t.Errorf("unsigned: %d %s", s, b)
		}
	})
	t.Run("twilio behind a proxy", func(t *testing.T) {
		sig := twilioSign("tw-auth-token", "https://public.example.com/calls/twilio?x=2", twForm)
		if s, b := postForm(t, "/behind/voice?x=2", twForm, "X-Twilio-Signature", sig); s != 202 {
			t.Fatalf("public URL: %d %s", s, b)
		}
		// signed for the URL Caddy sees: wrong when a public URL is set
		sig = twilioSign("tw-auth-token", caddyBase+"/behind/voice?x=2", twForm)
		if s, _ := postForm(t, "/behind/voice?x=2", twForm, "X-Twilio-Signature", sig); s != 401 {
			t.Errorf("local URL: %d", s)
		}
	})
	t.Run("zadarma", func(t *testing.T) {
		res, err := http.Get(caddyBase + "/zadarma/notify?zd_echo=a1b2c3")
		if err != nil {
			t.Fatal(err)
		}
		echo, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(echo) != "a1b2c3" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("zd_echo: %d %q", res.StatusCode, echo)
		}
		form := url.Values{"event": {"NOTIFY_START"}, "call_start": {"2024-03-01 10:15:00"}, "pbx_call_id": {"in_777"},
			"caller_id": {"+380501234567"}, "called_did": {"+380441112233"}}
		if s, b := postForm(t, "/zadarma/notify", form, "Signature", zadarmaSign("zd-secret", form)); s != 202 {
			t.Fatalf("signed: %d %s", s, b)
		}
		sig := zadarmaSign("zd-secret", form)
		form.Set("caller_id", "+380500000000")
		if s, b := postForm(t, "/zadarma/notify", form, "Signature", sig); s != 401 || !strings.Contains(b, "Signature does not match") {
			t.Errorf("tampered: %d %s", s, b)
		}
	})
	t.Run("allow_sources", func(t *testing.T) {
		auth := []string{"Authorization", "Bearer src-token"}
		status, a := postJSON(t, "/src/after_call", `{"call_id":"src-1"}`, auth...)
		if status != http.StatusForbidden || !strings.Contains(a.Error, "127.0.0.1 is not in allow_sources") {
			t.Errorf("from 127.0.0.1: %d %q", status, a.Error)
		}
		// Caddy trusts 127.0.0.1 as a proxy: X-Forwarded-For names the client
		status, _ = postJSON(t, "/src/after_call", `{"call_id":"src-2"}`, append(auth, "X-Forwarded-For", "10.9.3.4")...)
		if status != 202 {
			t.Fatalf("via the trusted proxy: %d", status)
		}
		status, _ = postJSON(t, "/src/after_call", `{"call_id":"src-3"}`, "X-Forwarded-For", "10.9.3.4")
		if status != 401 {
			t.Errorf("allowed source without the token: %d, want 401 (all checks must pass)", status)
		}
		status, _ = postJSON(t, "/src/after_call", `{"call_id":"src-4"}`, append(auth, "X-Forwarded-For", "10.10.0.1")...)
		if status != http.StatusForbidden {
			t.Errorf("other source via the proxy: %d", status)
		}
	})

	// what was accepted reached the receiver; nothing refused did
	time.Sleep(300 * time.Millisecond)
	byPath := map[string][]string{}
	for _, h := range rc.waitHits(t, 4) {
		var b map[string]any
		json.Unmarshal([]byte(h.Body), &b)
		byPath[h.Path] = append(byPath[h.Path], fmt.Sprint(b["id"], "|", b["ip"]))
	}
	want := map[string][]string{
		"/twilio":  {"CA0001|<nil>"},
		"/behind":  {"CA0001|<nil>"},
		"/zadarma": {"in_777|<nil>"},
		"/src":     {"src-2|10.9.3.4"},
	}
	if fmt.Sprint(byPath) != fmt.Sprint(want) {
		t.Errorf("receiver got %v, want %v", byPath, want)
	}
}

// TestVerifyJSON: verify and allow_sources from Caddy JSON.
func TestVerifyJSON(t *testing.T) {
	rc := newReceiver(t, nil)
	startJSON(t, `"allow_destinations": ["127.0.0.1/32"]`, fmt.Sprintf(`{
		"handler": "callhook", "input": "zadarma", "event": "after_call",
		"verify": [{"vendor": "zadarma", "secret": "zd-json"}],
		"allow_sources": ["127.0.0.1/32"],
		"webhooks": [{"name": "w", "on": ["after_call"], "url": "%s/z", "params": [{"name": "id", "expr": "call.call_id"}]}]
	}`, rc.URL))
	form := url.Values{"event": {"NOTIFY_END"}, "call_start": {"2024-03-01 10:15:00"}, "pbx_call_id": {"in_9"},
		"caller_id": {"+380501234567"}, "called_did": {"+380441112233"}, "duration": {"42"}, "disposition": {"answered"}}
	if s, b := postForm(t, "/calls/x", form, "Signature", zadarmaSign("zd-json", form)); s != 202 {
		t.Fatalf("signed: %d %s", s, b)
	}
	if s, _ := postForm(t, "/calls/x", form, "Signature", zadarmaSign("other", form)); s != 401 {
		t.Errorf("wrong secret: %d", s)
	}
	if h := rc.waitHits(t, 1); !strings.Contains(h[0].Body, `"id":"in_9"`) {
		t.Errorf("delivered %s", h[0].Body)
	}
}
