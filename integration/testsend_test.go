package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testAnswer is POST /callhook/webhooks/<target>/<webhook>/test's answer.
type testAnswer struct {
	Target, Webhook, Event, ID string
	Sample, OK, Signed         bool
	Status                     int
	DurationMS                 float64 `json:"duration_ms"`
	Request                    struct {
		Method, URL, Body string
		Headers           []struct{ Name, Value string }
	}
	ResponseHeaders   []struct{ Name, Value string } `json:"response_headers"`
	Response          string
	ResponseTruncated bool   `json:"response_truncated"`
	Error             string `json:"error"`
	ErrorClass        string `json:"error_class"`
}

func postAdmin(t *testing.T, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", fmt.Sprintf("http://localhost:%d%s", adminPort, path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST %s: Content-Type %q, want application/json: %s", path, ct, raw)
	}
	return res.StatusCode, raw
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// startTestSendFixture is a real Caddy with webhooks of target lab that
// answer in every way a test can end, against receivers on 127.0.0.1.
func startTestSendFixture(t *testing.T) (ok *receiver) {
	ok = newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Answer", "yes")
		w.Header().Set("Set-Cookie", "session="+planted["receiver location"])
		w.WriteHeader(http.StatusOK)
		w.Write(bytes.Repeat([]byte("a"), 5000))
	})
	down := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	rpc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}`)
	})
	blocked := newReceiverOn(t, "127.0.0.2:0", nil)
	// A port nobody listens on: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /lab/* {
		callhook {
			target lab
			webhook signed {
				on after_call before_call
				url "%[1]s/signed?token=%[5]s"
				header Authorization "Bearer %[6]s"
				secret %[7]s
				param call_id call.call_id
			}
			webhook broken {
				on after_call
				url %[1]s/broken
				param doubled "call.duration * 2"
			}
			webhook choosy {
				on after_call
				url %[1]s/choosy
				when "call.caller == '+1000'"
			}
			webhook blocked {
				on after_call
				# a literal 127.0.0.2 fails at load; a host from a
				# param reaches the dial-time guard
				url http://{param.host}:%[8]s/x
				param host "'127.0.0.2'"
			}
			webhook down {
				on after_call
				url %[2]s/down
			}
			webhook rpc {
				on after_call
				format jsonrpc
				url %[3]s/rpc
			}
			webhook refused {
				on after_call
				url http://%[4]s/refused
			}
			webhook live {
				on after_call
				sync
				url %[1]s/sync
				param call_id call.call_id
			}
		}
	}`, ok.URL, down.URL, rpc.URL, closed, planted["url query"], planted["authorization"], testSecret, blocked.URL[strings.LastIndexByte(blocked.URL, ':')+1:]))
	t.Cleanup(func() {
		if n := len(blocked.got()); n != 0 {
			t.Errorf("the SSRF guard let %d tests through to 127.0.0.2", n)
		}
	})
	return ok
}

// TestSendTestAPI sends tests through the admin API to real receivers:
// signed (verified in the receiver), with the sample or given data, every
// error class, render errors as 422, and nothing queued.
func TestSendTestAPI(t *testing.T) {
	ok := startTestSendFixture(t)
	key, err := decodeWhsec(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	test := func(webhook, body string, want int) (testAnswer, []byte) {
		t.Helper()
		status, raw := postAdmin(t, "/callhook/webhooks/lab/"+webhook+"/test", body)
		if status != want {
			t.Fatalf("test of %s with %q: status %d, want %d: %s", webhook, body, status, want, raw)
		}
		noSecrets(t, "the test answer of "+webhook, raw)
		var a testAnswer
		if status == 200 {
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatalf("%v: %s", err, raw)
			}
		}
		return a, raw
	}

	// The default: the webhook's first event, on the sample data.
	a, _ := test("signed", "", 200)
	if !a.OK || a.Status != 200 || a.Event != "after_call" || !a.Sample || !a.Signed || !strings.HasPrefix(a.ID, "msg_test_") {
		t.Fatalf("test of signed = %+v", a)
	}
	hits := ok.waitHits(t, 1)
	h := hits[0]
	if h.Header.Get("webhook-id") != a.ID {
		t.Errorf("the receiver got webhook-id %q, the answer says %q", h.Header.Get("webhook-id"), a.ID)
	}
	verifySignature(t, key, h)
	if h.Header.Get("Authorization") != "Bearer "+planted["authorization"] || !strings.Contains(h.Body, `"call_id":"sample-1"`) {
		t.Errorf("the receiver got %v %s", h.Header, h.Body)
	}
	if len(a.Response) != 4096 || !a.ResponseTruncated {
		t.Errorf("response: %d bytes, truncated %v; want the first 4096", len(a.Response), a.ResponseTruncated)
	}
	var sawAnswer, sawCookie bool
	for _, hd := range a.ResponseHeaders {
		sawAnswer = sawAnswer || hd.Name == "X-Answer" && hd.Value == "yes"
		sawCookie = sawCookie || hd.Name == "Set-Cookie" && hd.Value == "[redacted]"
	}
	if !sawAnswer || !sawCookie {
		t.Errorf("response headers %+v: want X-Answer, and Set-Cookie redacted", a.ResponseHeaders)
	}
	if !strings.Contains(a.Request.URL, "token=[redacted]") {
		t.Errorf("request URL %q", a.Request.URL)
	}

	// Given event and data.
	a, _ = test("signed", `{"event":"before_call","data":{"call_id":"t-9"}}`, 200)
	if !a.OK || a.Event != "before_call" || a.Sample {
		t.Fatalf("test with data = %+v", a)
	}
	h = ok.waitHits(t, 2)[1]
	verifySignature(t, key, h)
	if !strings.Contains(h.Body, `"call_id":"t-9"`) || h.Header.Get("webhook-id") != a.ID {
		t.Errorf("the receiver got %s, id %s", h.Body, h.Header.Get("webhook-id"))
	}

	// A sync webhook is called like an event calls it.
	if a, _ = test("live", "", 200); !a.OK {
		t.Errorf("test of the sync webhook: %+v", a)
	}

	// Every failure is a 200 that says what kind it is.
	for webhook, class := range map[string]string{"blocked": "guard", "down": "http_5xx", "rpc": "jsonrpc", "refused": "refused"} {
		a, _ := test(webhook, "", 200)
		if a.OK || a.ErrorClass != class || a.Error == "" {
			t.Errorf("test of %s: ok %v, class %q (%s); want %s", webhook, a.OK, a.ErrorClass, a.Error, class)
		}
		if webhook == "blocked" && (!strings.Contains(a.Error, "SSRF guard") || a.Status != 0) {
			t.Errorf("blocked: %+v", a)
		}
	}

	// Render errors: 422 with the expression and its caret.
	_, raw := test("broken", `{"data":{"call_id":"x"}}`, 422)
	var e struct{ Error string }
	json.Unmarshal(raw, &e)
	if !strings.Contains(e.Error, "call.duration * 2") || !strings.Contains(e.Error, "^") {
		t.Errorf("render error: %s", raw)
	}
	if _, raw = test("choosy", "", 422); !strings.Contains(string(raw), "when is false") {
		t.Errorf("when false: %s", raw)
	}

	// Bad requests.
	for body, want := range map[string]string{
		`{"event":"call_answered"}`: "does not fire on call_answered",
		`{"event":"nope"}`:          "not a callhook event",
		`{"data":[1]}`:              "JSON object",
		`{"evnt":"after_call"}`:     "unknown field",
		`{"data":{"call_id":"x"`:    "is not",
	} {
		if _, raw := test("signed", body, 400); !strings.Contains(string(raw), want) {
			t.Errorf("body %s: %s, want %q", body, raw, want)
		}
	}
	if _, raw := test("nope", "", 404); !strings.Contains(string(raw), "no webhook nope in target lab: its webhooks are signed, broken") {
		t.Errorf("unknown webhook: %s", raw)
	}
	if status, raw, _ := adminCall(t, "POST", "/callhook/webhooks/nobody/signed/test"); status != 404 || !strings.Contains(string(raw), "no callhook handler for target nobody") {
		t.Errorf("unknown target: %d %s", status, raw)
	}
	if status, _, hdr := adminCall(t, "GET", "/callhook/webhooks/lab/signed/test"); status != 405 || hdr.Get("Allow") != "POST" {
		t.Errorf("GET: %d, Allow %q", status, hdr.Get("Allow"))
	}

	// Nothing was queued by any of it.
	var st adminStats
	adminJSON(t, "GET", "/callhook/stats", 200, &st)
	if st.Pending+st.Leased+st.Delivered+st.Dead != 0 {
		t.Errorf("stats after the tests: %+v, want nothing queued", st)
	}
	if ds, _ := listDeliveries(t, "limit=10"); len(ds) != 0 {
		t.Errorf("deliveries after the tests: %d, want none", len(ds))
	}
}

// TestSendTestCLI runs `caddy callhook test` of the built binary against
// the running Caddy.
func TestSendTestCLI(t *testing.T) {
	ok := startTestSendFixture(t)
	bin := buildCaddy(t, t.TempDir())
	addr := fmt.Sprintf("localhost:%d", adminPort)

	out, err := runCLI(t, bin, "callhook", "test", "lab", "signed", "--address", addr)
	if err != nil || !strings.Contains(string(out), "delivered, HTTP 200") || !strings.Contains(string(out), "webhook-id: msg_test_") {
		t.Fatalf("caddy callhook test lab signed: %v\n%s", err, out)
	}
	noSecrets(t, "the CLI", out)
	key, _ := decodeWhsec(testSecret)
	verifySignature(t, key, ok.waitHits(t, 1)[0])

	data := filepath.Join(t.TempDir(), "call.json")
	os.WriteFile(data, []byte(`{"call_id":"cli-7"}`), 0o600)
	out, err = runCLI(t, bin, "callhook", "test", "lab", "signed", "--event", "before_call", "--data", data, "--address", addr)
	if err != nil || !strings.Contains(ok.waitHits(t, 2)[1].Body, "cli-7") {
		t.Fatalf("with --data: %v\n%s", err, out)
	}

	out, err = runCLI(t, bin, "callhook", "test", "lab", "blocked", "--address", addr)
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "(guard)") {
		t.Errorf("a blocked test: exit %d\n%s", code, out)
	}
	out, err = runCLI(t, bin, "callhook", "test", "lab", "broken", "--data", data, "--address", addr)
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "call.duration * 2") {
		t.Errorf("a render error: exit %d\n%s", code, out)
	}
	out, err = runCLI(t, bin, "callhook", "test", "lab", "--address", addr)
	if code := exitCode(err); code != 2 {
		t.Errorf("a missing argument: exit %d\n%s", code, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee interface{ ExitCode() int }
	if e, ok := err.(interface{ ExitCode() int }); ok {
		ee = e
		return ee.ExitCode()
	}
	return -1
}
