package callhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/internal/redact"
	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// Send a test to one webhook: POST /callhook/webhooks/<target>/<webhook>/test
// on the admin API, the webhook page's "Send test" form in the dashboard,
// and `caddy callhook test`. The webhook is rendered with the running
// config and sent once, now, by the engine's own sender, so the test goes
// through the same SSRF guard, TLS profile and signing as a real delivery.
// Nothing is stored: no event, no delivery, no metrics, no failure streak
// (a test must not pause a webhook, nor count in its success rate). A
// paused webhook is sent to all the same: "does it work again?" is what a
// test is for. A sync webhook is called as an event would call it; the
// reply it would feed is not rendered.

// testIDPrefix starts every test's webhook-id, so a receiver can tell a
// test from a real event (and still verify its signature).
const testIDPrefix = "msg_test_"

// testResponseBytes is how much of the receiver's answer a test shows.
const testResponseBytes = 4 << 10

// testSendRequest is the optional JSON body of a test.
type testSendRequest struct {
	// Event is the event to render (default: the webhook's first).
	Event string `json:"event,omitempty"`
	// Data is the event's body (default: the built-in sample of the event
	// that `caddy callhook render` uses).
	Data json.RawMessage `json:"data,omitempty"`
}

// testSendAnswer is what one test did.
type testSendAnswer struct {
	Target  string `json:"target"`
	Webhook string `json:"webhook"`
	Event   string `json:"event"`
	// ID is the webhook-id the test was sent with: msg_test_...
	ID string `json:"id"`
	// Sample says the data was the built-in sample of the event.
	Sample bool `json:"sample"`
	// OK is a 2xx (and no JSON-RPC error): the receiver took it.
	OK      bool         `json:"ok"`
	Request *requestView `json:"request"`
	Signed  bool         `json:"signed"`
	// Status is the receiver's HTTP status, 0 when it did not answer.
	Status     int     `json:"status"`
	DurationMS float64 `json:"duration_ms"`
	// ResponseHeaders and Response are the receiver's answer: its header
	// and the first 4 KiB of its body, redacted as everywhere.
	ResponseHeaders   []headerView `json:"response_headers"`
	Response          string       `json:"response"`
	ResponseTruncated bool         `json:"response_truncated,omitempty"`
	// Error says why the test failed, and ErrorClass what kind of failure
	// it was: refused, timeout, tls, guard, dns, connection, redirect,
	// http_4xx, http_5xx, jsonrpc or invalid.
	Error      string `json:"error,omitempty"`
	ErrorClass string `json:"error_class,omitempty"`
}

// readTestRequest reads the optional body of a test (at most 1 MiB).
func readTestRequest(r *http.Request) (testSendRequest, error) {
	var req testSendRequest
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil {
		return req, apiError(http.StatusBadRequest, "reading the request body: %v", err)
	}
	if len(raw) > 1<<20 {
		return req, apiError(http.StatusRequestEntityTooLarge, "the request body is over 1 MiB: send a smaller data object")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return req, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, apiError(http.StatusBadRequest, `the request body is not {"event": "<name>", "data": {...}}: %v`, err)
	}
	return req, nil
}

// sendTest renders one webhook of the running config for a test event and
// sends it once. 404: no such webhook; 400: a bad event or data; 422: the
// webhook does not render for that data (the expression's error, with its
// caret). A failed send is a 200 that says why.
func (s *adminService) sendTest(ctx context.Context, target, webhook string, req testSendRequest) (testSendAnswer, error) {
	e, _, err := s.engine()
	if err != nil {
		return testSendAnswer{}, err
	}
	h, hook := e.current().webhook(target, webhook)
	if hook == nil {
		return testSendAnswer{}, unknownWebhook(e, target, webhook)
	}
	event, err := testEvent(hook, req.Event)
	if err != nil {
		return testSendAnswer{}, err
	}
	data, sample := []byte(req.Data), false
	if len(data) == 0 || string(bytes.TrimSpace(data)) == "null" {
		data, sample = []byte(sampleEvents[event][0]), true
	} else if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return testSendAnswer{}, apiError(http.StatusBadRequest, "data must be a JSON object, the body of a %s event such as {\"call_id\": \"c-1\"}", event)
	}
	ev, err := decodeRenderData(h, event, data)
	if err != nil {
		return testSendAnswer{}, apiError(http.StatusBadRequest, "data is not a %s event callhook can read: %v", event, err)
	}
	id := testIDPrefix + strings.TrimPrefix(render.NewID(), "msg_")
	d := renderWithID(hook, ev, target, id, time.Now())
	switch {
	case d == nil:
		return testSendAnswer{}, apiError(http.StatusUnprocessableEntity, "webhook %s of target %s: its when is false for this %s data, so nothing would be sent; give data for which it is true", webhook, target, event)
	case d.State == queue.Dead:
		return testSendAnswer{}, apiError(http.StatusUnprocessableEntity, "%s", redact.Text(d.LastError))
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	res := e.sender.Send(ctx, d)
	secrets, _ := e.signingSecrets(d)
	out := viewTest(d, res, secrets)
	out.Sample = sample
	s.logger.Info("test webhook sent by hand; nothing was queued",
		zap.String("target", target), zap.String("webhook", webhook), zap.String("event", event),
		zap.String("delivery_id", id), zap.Int("status", out.Status), zap.Bool("ok", out.OK),
		zap.String("error_class", out.ErrorClass))
	return out, nil
}

// testEvent is the event a test renders: the one asked for, which the
// webhook must fire on, or the webhook's first.
func testEvent(hook *render.Webhook, event string) (string, error) {
	on := hook.On()
	if event == "" {
		if len(on) == 0 {
			return "", apiError(http.StatusBadRequest, "webhook %s fires on no event", hook.Name())
		}
		return on[0], nil
	}
	if !intake.IsEventName(event) {
		return "", apiError(http.StatusBadRequest, "event %q is not a callhook event: expected one of %s", event, strings.Join(intake.EventNames, ", "))
	}
	if !hook.Fires(event) {
		return "", apiError(http.StatusBadRequest, "webhook %s does not fire on %s: it is declared for %s", hook.Name(), event, strings.Join(on, ", "))
	}
	return event, nil
}

// unknownWebhook is the 404 of a test of a webhook the running config does
// not have. It names the target's own webhooks only, never other targets.
func unknownWebhook(e *engine, target, webhook string) error {
	var names []string
	for _, h := range e.current().handlers(target) {
		for _, w := range h.hooks {
			names = append(names, w.Name())
		}
	}
	if len(names) == 0 {
		return apiError(http.StatusNotFound, "no webhook %s in target %s: the running config has no callhook handler for target %s", webhook, target, target)
	}
	return apiError(http.StatusNotFound, "no webhook %s in target %s: its webhooks are %s", webhook, target, strings.Join(names, ", "))
}

// viewTest shows a test: the request as it went out (credentials redacted,
// the signature never shown), and the receiver's answer.
func viewTest(d *queue.Delivery, res delivery.Result, secrets [][]byte) testSendAnswer {
	r := redact.For(d, secrets...)
	out := testSendAnswer{
		Target: d.Target, Webhook: d.Webhook, Event: d.Event, ID: d.ID,
		OK:         res.OK,
		Request:    viewRequest(d, secrets, false),
		Signed:     len(secrets) > 0,
		Status:     res.Attempt.Status,
		DurationMS: float64(res.Attempt.Duration.Microseconds()) / 1000,
	}
	hasUA := slices.ContainsFunc(out.Request.Headers, func(h headerView) bool { return strings.EqualFold(h.Name, "User-Agent") })
	if !hasUA {
		out.Request.Headers = append(out.Request.Headers, headerView{Name: "User-Agent", Value: delivery.DefaultUserAgent})
	}
	out.Request.Headers = append(out.Request.Headers,
		headerView{Name: "webhook-id", Value: d.ID},
		headerView{Name: "webhook-timestamp", Value: strconv.FormatInt(res.Attempt.Start.Unix(), 10)})
	if out.Signed {
		out.Request.Headers = append(out.Request.Headers, headerView{Name: "webhook-signature", Value: redact.Mask})
	}
	out.ResponseHeaders = []headerView{}
	names := make([]string, 0, len(res.Header))
	for k := range res.Header {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		for _, v := range res.Header[k] {
			out.ResponseHeaders = append(out.ResponseHeaders, headerView{Name: k, Value: r.Header(k, v)})
		}
	}
	body := res.Attempt.Response
	if len(body) > testResponseBytes {
		body, out.ResponseTruncated = body[:testResponseBytes], true
	}
	out.Response = r.Text(string(bytes.ToValidUTF8(body, []byte("\uFFFD"))))
	if !res.OK {
		out.Error = r.Text(res.Reason)
		out.ErrorClass = errorClass(res)
	}
	return out
}

// errorClass names the kind of a failed attempt, from the sender's reason
// and the status.
func errorClass(res delivery.Result) string {
	reason, code := res.Reason, res.Attempt.Status
	switch {
	case strings.HasPrefix(reason, "blocked by SSRF guard"):
		return "guard"
	case strings.Contains(reason, "jsonrpc error"):
		return "jsonrpc"
	case code >= 500:
		return "http_5xx"
	case code >= 400:
		return "http_4xx"
	case code >= 300:
		return "redirect"
	case reason == "connection refused":
		return "refused"
	case strings.HasPrefix(reason, "timeout after"):
		return "timeout"
	case strings.HasPrefix(reason, "tls "):
		return "tls"
	case strings.HasPrefix(reason, "no such host"), strings.HasPrefix(reason, "dns "):
		return "dns"
	case strings.HasPrefix(reason, "invalid "), strings.HasPrefix(reason, "cannot sign"):
		return "invalid"
	}
	return "connection"
}

// handleTest is POST /callhook/webhooks/<target>/<webhook>/test.
func (a *adminAPI) handleTest(w http.ResponseWriter, r *http.Request) error {
	req, err := readTestRequest(r)
	if err != nil {
		return err
	}
	out, err := a.svc.sendTest(r.Context(), r.PathValue("target"), r.PathValue("webhook"), req)
	if err != nil {
		return err
	}
	return writeAdminJSON(w, out)
}

// testLimit bounds how many tests the dashboard sends to one webhook: a
// portal's customer must not be able to flood a receiver with them.
var testLimit = &sendLimiter{max: 5, per: time.Minute, sent: map[string][]time.Time{}}

// sendLimiter allows max sends per key in any window of per.
type sendLimiter struct {
	mu   sync.Mutex
	max  int
	per  time.Duration
	sent map[string][]time.Time
}

var errTooMany = errors.New("too many tests")

// allow records a send for key now, or returns how long until one is
// allowed again.
func (l *sendLimiter) allow(key string, now time.Time) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, ts := range l.sent {
		i := 0
		for i < len(ts) && now.Sub(ts[i]) >= l.per {
			i++
		}
		if i == len(ts) {
			delete(l.sent, k)
		} else {
			l.sent[k] = ts[i:]
		}
	}
	ts := l.sent[key]
	if len(ts) >= l.max {
		return l.per - now.Sub(ts[0]), fmt.Errorf("%w: %d a minute", errTooMany, l.max)
	}
	l.sent[key] = append(ts, now)
	return 0, nil
}
