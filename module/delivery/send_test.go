package delivery

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

func newTestSender(t *testing.T, o SenderOptions) *Sender {
	t.Helper()
	if o.Guard == nil {
		o.Guard = allowLoopback()
	}
	s := NewSender(o)
	t.Cleanup(s.CloseIdleConnections)
	return s
}

// server starts an httptest server whose handler is released at cleanup, so
// handlers that block "forever" do not outlive the test.
func server(t *testing.T, h func(w http.ResponseWriter, r *http.Request, done <-chan struct{})) *httptest.Server {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body up front: only then does net/http watch the
		// connection, so r.Context() ends when the client gives up.
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		h(w, r, done)
	}))
	t.Cleanup(func() {
		close(done)
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

func statusServer(t *testing.T, status int, header http.Header, body string) *httptest.Server {
	return server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

func delivery(url string) *queue.Delivery {
	return &queue.Delivery{
		ID:      "msg_test1",
		Webhook: "crm",
		Event:   "after_call",
		Target:  "crm",
		CallID:  "call-1",
		Request: queue.Request{
			Method: "POST",
			URL:    url,
			Header: [][2]string{{"Content-Type", "application/json"}},
			Body:   []byte(`{"call_id":"call-1"}`),
		},
		Policy: queue.Policy{Timeout: 5 * time.Second},
	}
}

func TestSendStatusClassification(t *testing.T) {
	s := newTestSender(t, SenderOptions{})
	tests := []struct {
		status    int
		ok, retry bool
	}{
		{200, true, false},
		{201, true, false},
		{204, true, false},
		{400, false, false},
		{401, false, false},
		{404, false, false},
		{410, false, false},
		{422, false, false},
		{408, false, true},
		{425, false, true},
		{429, false, true},
		{500, false, true},
		{502, false, true},
		{503, false, true},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			srv := statusServer(t, tt.status, nil, "answer")
			r := s.Send(context.Background(), delivery(srv.URL))
			if r.OK != tt.ok || r.Retryable != tt.retry {
				t.Fatalf("OK=%v Retryable=%v, want %v %v (reason %q)", r.OK, r.Retryable, tt.ok, tt.retry, r.Reason)
			}
			if r.Attempt.Status != tt.status {
				t.Errorf("status = %d", r.Attempt.Status)
			}
			if tt.status != 204 && string(r.Attempt.Response) != "answer" {
				t.Errorf("response = %q", r.Attempt.Response)
			}
			if tt.ok {
				if r.Reason != "" || r.Attempt.Error != "" {
					t.Errorf("success has a reason: %q / %q", r.Reason, r.Attempt.Error)
				}
			} else {
				if want := "http " + strconv.Itoa(tt.status); r.Reason != want || r.Attempt.Error != want {
					t.Errorf("reason = %q, error = %q, want %q", r.Reason, r.Attempt.Error, want)
				}
			}
			if r.Attempt.Start.IsZero() || r.Attempt.Duration <= 0 {
				t.Errorf("attempt timing not recorded: %+v", r.Attempt)
			}
		})
	}
}

func TestSendRedirectNotFollowed(t *testing.T) {
	var targetHits atomic.Int64
	target := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { targetHits.Add(1) })
	s := newTestSender(t, SenderOptions{})
	for _, code := range []int{301, 302, 307, 308} {
		redirector := statusServer(t, code, http.Header{"Location": {target.URL + "/elsewhere"}}, "")
		r := s.Send(context.Background(), delivery(redirector.URL))
		if r.OK || r.Retryable {
			t.Fatalf("%d: OK=%v Retryable=%v, want a permanent failure", code, r.OK, r.Retryable)
		}
		want := fmt.Sprintf("redirect not followed (%d to %s/elsewhere)", code, target.URL)
		if r.Reason != want {
			t.Errorf("reason = %q, want %q", r.Reason, want)
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Fatalf("redirect target was hit %d times", n)
	}
}

func TestSendRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := newTestSender(t, SenderOptions{Now: func() time.Time { return now }})
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0}, // in the past
		{now.Add(24 * 365 * time.Hour).Format(http.TimeFormat), time.Hour},
		{"99999999999999999999999", time.Hour}, // overflows int64
		{"86400", time.Hour},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.value, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.value, got, tt.want)
		}
	}

	srv := statusServer(t, 429, http.Header{"Retry-After": {"7"}}, "")
	if r := s.Send(context.Background(), delivery(srv.URL)); !r.Retryable || r.RetryAfter != 7*time.Second {
		t.Errorf("429 Retry-After 7: retryable=%v after=%s", r.Retryable, r.RetryAfter)
	}
	srv = statusServer(t, 503, http.Header{"Retry-After": {now.Add(time.Minute).Format(http.TimeFormat)}}, "")
	if r := s.Send(context.Background(), delivery(srv.URL)); !r.Retryable || r.RetryAfter != time.Minute {
		t.Errorf("503 Retry-After date: retryable=%v after=%s", r.Retryable, r.RetryAfter)
	}
}

func TestSendTimeout(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	s := newTestSender(t, SenderOptions{})
	d := delivery(srv.URL)
	d.Policy.Timeout = 100 * time.Millisecond
	r := s.Send(context.Background(), d)
	if r.OK || !r.Retryable || r.Reason != "timeout after 100ms" {
		t.Fatalf("OK=%v Retryable=%v reason=%q", r.OK, r.Retryable, r.Reason)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := newTestSender(t, SenderOptions{})
	r := s.Send(context.Background(), delivery("http://"+addr+"/hook"))
	if r.OK || !r.Retryable || r.Reason != "connection refused" || r.Attempt.Status != 0 {
		t.Fatalf("OK=%v Retryable=%v reason=%q status=%d", r.OK, r.Retryable, r.Reason, r.Attempt.Status)
	}
}

func TestSendNoSuchHost(t *testing.T) {
	s := newTestSender(t, SenderOptions{})
	r := s.Send(context.Background(), delivery("http://callhook-test.invalid/hook"))
	if r.OK || !r.Retryable || !strings.HasPrefix(r.Reason, "no such host") && !strings.HasPrefix(r.Reason, "dns ") {
		t.Fatalf("OK=%v Retryable=%v reason=%q", r.OK, r.Retryable, r.Reason)
	}
}

func TestSendInvalidRequest(t *testing.T) {
	s := newTestSender(t, SenderOptions{})
	for _, u := range []string{"ftp://example.com/x", "http://", "://nope", "http://exa mple.com/"} {
		r := s.Send(context.Background(), delivery(u))
		if r.OK || r.Retryable || !strings.HasPrefix(r.Reason, "invalid") {
			t.Errorf("%q: OK=%v Retryable=%v reason=%q", u, r.OK, r.Retryable, r.Reason)
		}
	}
	d := delivery("http://127.0.0.1:1/")
	d.Request.Header = append(d.Request.Header, [2]string{"X-Token", "abc\r\nInjected: yes"})
	if r := s.Send(context.Background(), d); r.Retryable || strings.Contains(r.Reason, "abc") {
		t.Errorf("header injection: retryable=%v reason=%q", r.Retryable, r.Reason)
	}
}

func TestSendResponseLimit(t *testing.T) {
	big := strings.Repeat("x", 5000)
	srv := statusServer(t, 500, nil, big)
	s := newTestSender(t, SenderOptions{MaxResponse: 1024})
	r := s.Send(context.Background(), delivery(srv.URL))
	if len(r.Attempt.Response) != 1024 {
		t.Fatalf("kept %d bytes, want 1024", len(r.Attempt.Response))
	}
}

func TestSendEndlessResponse(t *testing.T) {
	// A body that never ends is cut at MaxResponse...
	srv := server(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		chunk := []byte(strings.Repeat("y", 512))
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-done:
				return
			default:
			}
		}
	})
	s := newTestSender(t, SenderOptions{MaxResponse: 4096})
	d := delivery(srv.URL)
	d.Policy.Timeout = time.Minute
	r := s.Send(context.Background(), d)
	if !r.OK || len(r.Attempt.Response) != 4096 {
		t.Fatalf("OK=%v kept %d bytes (reason %q)", r.OK, len(r.Attempt.Response), r.Reason)
	}

	// ...and one that trickles below the limit is cut by the timeout. The
	// receiver did answer 2xx, so the delivery counts as delivered.
	trickle := server(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		for {
			if _, err := w.Write([]byte("z")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	d = delivery(trickle.URL)
	d.Policy.Timeout = time.Second
	r = s.Send(context.Background(), d)
	if !r.OK || r.Attempt.Status != 200 || len(r.Attempt.Response) == 0 || len(r.Attempt.Response) >= 4096 {
		t.Fatalf("trickle: OK=%v status=%d kept %d bytes", r.OK, r.Attempt.Status, len(r.Attempt.Response))
	}
}

func TestSendHeadersAndSignature(t *testing.T) {
	type seen struct {
		header http.Header
		host   string
		body   []byte
		method string
	}
	got := make(chan seen, 1)
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Clone(), r.Host, b, r.Method}
	})
	now := time.Unix(1700000000, 0)
	secret := []byte("0123456789abcdef0123456789abcdef")
	var secrets [][]byte
	var signErr error
	s := newTestSender(t, SenderOptions{UserAgent: "callhook-test/1", Now: func() time.Time { return now },
		Secrets: func(*queue.Delivery) ([][]byte, error) { return secrets, signErr }})
	d := delivery(srv.URL + "/hook")
	d.Request.Method = "PUT"
	d.Request.Header = [][2]string{
		{"Content-Type", "application/json; charset=utf-8"},
		{"X-Multi", "first"},
		{"Authorization", "Bearer tok"},
		{"X-Multi", "second"},
		{"webhook-id", "forged"}, // ours win
		{"Host", "crm.example"},  // config cannot set Host (render refuses it); a stored one changes nothing
	}
	secrets = [][]byte{secret}
	r := s.Send(context.Background(), d)
	if !r.OK {
		t.Fatalf("send failed: %s", r.Reason)
	}
	h := <-got
	if h.method != "PUT" || string(h.body) != string(d.Request.Body) || h.host != strings.TrimPrefix(srv.URL, "http://") {
		t.Errorf("method %s body %q host %q", h.method, h.body, h.host)
	}
	checks := map[string]string{
		"User-Agent":        "callhook-test/1",
		"Content-Type":      "application/json; charset=utf-8",
		"Authorization":     "Bearer tok",
		"Webhook-Id":        d.ID,
		"Webhook-Timestamp": "1700000000",
	}
	for k, want := range checks {
		if v := h.header.Values(k); len(v) != 1 || v[0] != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	if v := h.header.Values("X-Multi"); len(v) != 2 || v[0] != "first" || v[1] != "second" {
		t.Errorf("X-Multi = %q, want [first second] in order", v)
	}
	// Recompute the signature independently of Sign.
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "%s.%d.%s", d.ID, now.Unix(), d.Request.Body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if v := h.header.Get("Webhook-Signature"); v != want {
		t.Errorf("webhook-signature = %q, want %q", v, want)
	}

	// During a rotation: one signature per secret, newest first.
	old := []byte("the-old-secret")
	secrets = [][]byte{secret, old}
	if r := s.Send(context.Background(), d); !r.OK {
		t.Fatal(r.Reason)
	}
	mac = hmac.New(sha256.New, old)
	fmt.Fprintf(mac, "%s.%d.%s", d.ID, now.Unix(), d.Request.Body)
	if v, w := (<-got).header.Get("Webhook-Signature"), want+" v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)); v != w {
		t.Errorf("webhook-signature with two secrets = %q, want %q", v, w)
	}

	// Unsigned when there is no secret.
	secrets = nil
	if r := s.Send(context.Background(), d); !r.OK {
		t.Fatal(r.Reason)
	}
	if h := <-got; h.header.Get("Webhook-Signature") != "" {
		t.Errorf("unsigned delivery carries a signature")
	}

	// A delivery that cannot be signed is not sent, for good.
	signErr = errors.New("no key")
	if r := s.Send(context.Background(), d); r.OK || r.Retryable || !strings.Contains(r.Reason, "cannot sign: no key") {
		t.Errorf("unsignable delivery: %+v", r)
	}
	select {
	case <-got:
		t.Error("an unsignable delivery was sent")
	default:
	}
}

func TestSendDefaultUserAgent(t *testing.T) {
	got := make(chan string, 1)
	srv := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { got <- r.UserAgent() })
	s := newTestSender(t, SenderOptions{})
	if r := s.Send(context.Background(), delivery(srv.URL)); !r.OK {
		t.Fatal(r.Reason)
	}
	if ua := <-got; ua != "callhook/"+Version {
		t.Errorf("User-Agent = %q, want SPEC §5's callhook/<version>", ua)
	}
}

func TestSendJSONRPC(t *testing.T) {
	tests := []struct {
		body      string
		ok, retry bool
		reason    string
	}{
		{`{"jsonrpc":"2.0","id":1,"result":{"ok":true}}`, true, false, ""},
		{`{"jsonrpc":"2.0","id":1,"result":null,"error":null}`, true, false, ""},
		{`not json at all`, true, false, ""},
		{``, true, false, ""},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"crm is read-only"}}`, false, true, "jsonrpc error -32001: crm is read-only"},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"internal"}}`, false, true, "jsonrpc error -32603: internal"},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32700,"message":"parse error"}}`, false, false, "jsonrpc error -32700: parse error"},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"invalid request"}}`, false, false, "jsonrpc error -32600: invalid request"},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"method not found"}}`, false, false, "jsonrpc error -32601: method not found"},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid params"}}`, false, false, "jsonrpc error -32602: invalid params"},
		{`[{"id":1,"result":1},{"id":2,"error":{"code":-32602,"message":"bad\nparams"}}]`, false, false, "jsonrpc error -32602: bad params"},
		{`{"error":"boom"}`, false, true, `jsonrpc error: "boom"`},
	}
	s := newTestSender(t, SenderOptions{})
	for i, tt := range tests {
		srv := statusServer(t, 200, http.Header{"Content-Type": {"application/json"}}, tt.body)
		d := delivery(srv.URL)
		d.Policy.JSONRPC = true
		r := s.Send(context.Background(), d)
		if r.OK != tt.ok || r.Retryable != tt.retry || r.Reason != tt.reason {
			t.Errorf("%d %s: OK=%v Retryable=%v reason=%q, want %v %v %q", i, tt.body, r.OK, r.Retryable, r.Reason, tt.ok, tt.retry, tt.reason)
		}
		if !tt.ok && r.Attempt.Status != 200 {
			t.Errorf("%d: status = %d", i, r.Attempt.Status)
		}
	}

	// Without JSONRPC the same error body on a 2xx is a success.
	srv := statusServer(t, 200, nil, tests[4].body)
	if r := s.Send(context.Background(), delivery(srv.URL)); !r.OK {
		t.Errorf("plain webhook failed on a jsonrpc error body: %s", r.Reason)
	}
}

func TestSendReasonsHoldNoSecrets(t *testing.T) {
	const (
		headerSecret = "hdr-s3cr3t-value"
		urlSecret    = "url-s3cr3t-token"
	)
	signing := []byte("sig-s3cr3t-key")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	urls := map[string]string{
		"404":      statusServer(t, 404, nil, "").URL,
		"500":      statusServer(t, 500, nil, "").URL,
		"redirect": statusServer(t, 302, http.Header{"Location": {"https://example.com/next"}}, "").URL,
		"timeout": server(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
			select {
			case <-r.Context().Done():
			case <-done:
			}
		}).URL,
		"refused": "http://" + closedAddr,
	}
	sign := func(*queue.Delivery) ([][]byte, error) { return [][]byte{signing}, nil }
	s := newTestSender(t, SenderOptions{Secrets: sign})
	blocked := NewSender(SenderOptions{Guard: NewGuard(nil), Secrets: sign})
	t.Cleanup(blocked.CloseIdleConnections)

	check := func(name string, r Result) {
		t.Helper()
		if r.OK {
			t.Fatalf("%s: unexpectedly OK", name)
		}
		for _, secret := range []string{headerSecret, urlSecret, string(signing), "Bearer"} {
			if strings.Contains(r.Reason, secret) || strings.Contains(r.Attempt.Error, secret) {
				t.Errorf("%s: reason %q leaks %q", name, r.Reason, secret)
			}
		}
	}
	for name, u := range urls {
		d := delivery(u + "/hook?token=" + urlSecret)
		d.Request.Header = append(d.Request.Header, [2]string{"Authorization", "Bearer " + headerSecret})
		d.Policy.Timeout = 200 * time.Millisecond
		check(name, s.Send(context.Background(), d))
		if name == "404" {
			check("blocked", blocked.Send(context.Background(), d))
		}
	}
}
