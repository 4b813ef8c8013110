package callhook

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/callhook/caddy-callhook/internal/redact"
	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
)

// The views of the operator layer: what the admin API answers in JSON and
// what the dashboard's templates show. Every string that leaves through
// them goes through the delivery's redactor (internal/redact).
type (
	listAnswer struct {
		Deliveries []deliveryView `json:"deliveries"`
		// NextCursor fetches the next page; "" on the last one.
		NextCursor string `json:"next_cursor"`
	}

	retryAnswer struct {
		Retried int `json:"retried"`
		// Skipped counts dead deliveries that were never rendered (their
		// webhook failed to evaluate), which retrying cannot fix.
		Skipped int `json:"skipped"`
		// SyncCalls counts failed sync webhook calls left dead: their
		// calls are over.
		SyncCalls int `json:"skipped_sync_calls,omitempty"`
	}

	statsView struct {
		Queue string `json:"queue"`
		queue.Stats
		Workers        int    `json:"workers"`
		PerDestination int    `json:"per_destination"`
		Retention      string `json:"retention"`
		DrainTimeout   string `json:"drain_timeout"`
	}

	deliveryView struct {
		ID          string      `json:"id"`
		EventID     string      `json:"event_id,omitempty"`
		State       queue.State `json:"state"`
		Target      string      `json:"target"`
		Event       string      `json:"event"`
		CallID      string      `json:"call_id"`
		Webhook     string      `json:"webhook"`
		Destination string      `json:"destination,omitempty"`
		CreatedAt   string      `json:"created_at"`
		// RetriedAt is when it was last put back in the queue by hand.
		RetriedAt string `json:"retried_at,omitempty"`
		// NextAttempt is when a pending delivery is due.
		NextAttempt string `json:"next_attempt,omitempty"`
		// LeasedUntil is set while an attempt is running.
		LeasedUntil string `json:"leased_until,omitempty"`
		FinishedAt  string `json:"finished_at,omitempty"`
		LastError   string `json:"last_error,omitempty"`
		// Retryable: POST .../retry would put it back in the queue.
		Retryable bool          `json:"retryable"`
		Attempts  []attemptView `json:"attempts"`
		Request   *requestView  `json:"request,omitempty"`
		Policy    *policyView   `json:"policy,omitempty"`

		// SyncCall marks the record of a failed sync webhook call: dead,
		// but kept for the figures, not for a retry.
		SyncCall bool `json:"sync_call,omitempty"`
	}

	attemptView struct {
		Start      string  `json:"start"`
		DurationMS float64 `json:"duration_ms"`
		// Status is 0 when no response was received.
		Status            int    `json:"status"`
		Error             string `json:"error,omitempty"`
		Response          string `json:"response,omitempty"`
		ResponseTruncated bool   `json:"response_truncated,omitempty"`
	}

	requestView struct {
		Method  string       `json:"method"`
		URL     string       `json:"url"`
		Headers []headerView `json:"headers"`
		Body    string       `json:"body"`
	}

	headerView struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}

	policyView struct {
		Timeout     string `json:"timeout"`
		MaxAttempts int    `json:"max_attempts"`
		BackoffMin  string `json:"backoff_min"`
		BackoffMax  string `json:"backoff_max"`
		MaxAge      string `json:"max_age"`
		JSONRPC     bool   `json:"jsonrpc,omitempty"`
		// Signed says a signing secret is set; the secret is never shown.
		Signed bool `json:"signed"`
	}
)

// viewDelivery shows d with at most maxResponse bytes of each attempt's
// response (all of it when maxResponse < 0). Reasons, errors and
// responses are redacted: they quote URLs (a receiver's Location), and a
// receiver may echo what it was sent.
func viewDelivery(d *queue.Delivery, maxResponse int, secrets ...[]byte) deliveryView {
	r := redact.For(d, secrets...)
	v := deliveryView{
		ID:          d.ID,
		EventID:     d.EventID,
		State:       d.State,
		Target:      d.Target,
		Event:       d.Event,
		CallID:      d.CallID,
		Webhook:     d.Webhook,
		Destination: r.URL(d.Destination),
		CreatedAt:   formatTime(d.CreatedAt),
		RetriedAt:   formatTime(d.RetriedAt),
		FinishedAt:  formatTime(d.FinishedAt),
		LeasedUntil: formatTime(d.LeasedUntil),
		LastError:   r.Text(d.LastError),
		// A dead-on-arrival one is rendered again from its stored event; a
		// failed sync call is not retried (its call is over).
		Retryable: d.State == queue.Dead && !isSyncCall(d),
		SyncCall:  isSyncCall(d),
		Attempts:  make([]attemptView, 0, len(d.Attempts)),
	}
	if d.State == queue.Pending {
		v.NextAttempt = formatTime(d.NextAttempt)
	}
	for _, at := range d.Attempts {
		resp := at.Response
		cut := len(resp) >= delivery.DefaultMaxResponse
		if maxResponse >= 0 && len(resp) > maxResponse {
			resp, cut = resp[:maxResponse], true
		}
		v.Attempts = append(v.Attempts, attemptView{
			Start:             formatTime(at.Start),
			DurationMS:        float64(at.Duration.Microseconds()) / 1000,
			Status:            at.Status,
			Error:             r.Text(at.Error),
			Response:          r.Text(string(bytes.ToValidUTF8(resp, []byte("\uFFFD")))),
			ResponseTruncated: cut,
		})
	}
	return v
}

// viewFull is viewDelivery with all of each response, the request and the
// policy: GET of one delivery. secrets are the ones that sign it.
func viewFull(d *queue.Delivery, secrets [][]byte) deliveryView {
	v := viewDelivery(d, -1, secrets...)
	v.Request = viewRequest(d, secrets, false)
	v.Policy = &policyView{
		Timeout:     d.Policy.Timeout.String(),
		MaxAttempts: d.Policy.MaxAttempts,
		BackoffMin:  d.Policy.BackoffMin.String(),
		BackoffMax:  d.Policy.BackoffMax.String(),
		MaxAge:      d.Policy.MaxAge.String(),
		JSONRPC:     d.Policy.JSONRPC,
		Signed:      len(secrets) > 0 || len(d.Policy.SealedSecret) > 0,
	}
	return v
}

// viewRequest shows the stored request as it will be sent, without the
// per-attempt Standard Webhooks headers. Credentials are redacted unless
// showSecrets (caddy callhook render --show-secrets); the signing secret
// is scrubbed from every value regardless, since only the signature may
// ever carry it.
func viewRequest(d *queue.Delivery, secrets [][]byte, showSecrets bool) *requestView {
	if !rendered(d) {
		return nil
	}
	signing := redact.For(&queue.Delivery{Policy: d.Policy}, secrets...)
	full := redact.For(d, secrets...)
	body := string(bytes.ToValidUTF8(d.Request.Body, []byte("\uFFFD")))
	v := &requestView{
		Method:  d.Request.Method,
		URL:     signing.Scrub(d.Request.URL),
		Headers: make([]headerView, 0, len(d.Request.Header)),
		Body:    signing.Scrub(body),
	}
	if !showSecrets {
		v.URL = full.URL(d.Request.URL)
		v.Body = full.Text(body)
	}
	for _, h := range d.Request.Header {
		value := signing.Scrub(h[1])
		if !showSecrets {
			value = full.Header(h[0], h[1])
		}
		v.Headers = append(v.Headers, headerView{Name: h[0], Value: value})
	}
	return v
}

// viewWebhook is a webhook state as shown: its pause reason may quote a
// receiver's error.
func viewWebhook(w WebhookState) WebhookState {
	w.PauseReason = redact.Text(w.PauseReason)
	return w
}

// replayAnswer answers POST /callhook/events/<id>/replay.
type replayAnswer struct {
	// EventID is the new event the replay stored.
	EventID string `json:"event_id"`
	// ReplayOf is the event replayed.
	ReplayOf   string      `json:"replay_of"`
	Deliveries []queue.Ref `json:"deliveries"`
}

func viewReplay(of string, res queue.EnqueueResult) replayAnswer {
	out := replayAnswer{EventID: res.EventID, ReplayOf: of, Deliveries: make([]queue.Ref, 0, len(res.Refs))}
	for _, ref := range res.Refs {
		ref.Error = redact.Text(ref.Error)
		out.Deliveries = append(out.Deliveries, ref)
	}
	return out
}

// eventView is a stored event with its deliveries. Data is the event's
// decoded body; Request is the request it came in (see storedEventParts).
type eventView struct {
	ID         string         `json:"id"`
	Target     string         `json:"target"`
	Event      string         `json:"event"`
	CallID     string         `json:"call_id"`
	ReceivedAt string         `json:"received_at"`
	Data       any            `json:"data,omitempty"`
	Request    any            `json:"request,omitempty"`
	Deliveries []deliveryView `json:"deliveries"`
}

func viewEvent(ev *queue.Event, ds []*queue.Delivery) eventView {
	v := eventView{
		ID: ev.ID, Target: ev.Target, Event: ev.Name, CallID: ev.CallID,
		ReceivedAt: formatTime(ev.ReceivedAt),
		Deliveries: make([]deliveryView, 0, len(ds)),
	}
	if len(ev.Data) > 0 {
		v.Data, v.Request = storedEventParts(ev.Data)
	}
	for _, d := range ds {
		v.Deliveries = append(v.Deliveries, viewDelivery(d, listResponseBytes))
	}
	return v
}

// formatTime is RFC 3339 in UTC with milliseconds; "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// trimID is a long ID cut for narrow tables.
func trimID(id string) string {
	if len(id) <= 16 {
		return id
	}
	prefix, _, _ := strings.Cut(id, "_")
	return prefix + "_…" + id[len(id)-8:]
}

// redactedJSON is stored JSON decoded and redacted (redact.Value), or the
// redacted text when it is not JSON.
// storedEventParts splits a stored event ({"data": body, "request":
// request info}, the request under its Go field names, as every version
// stored it) into the body and the request with the names the expressions
// use (method, path, remote_ip, headers, query), both redacted. Data that
// is not in that shape is shown whole.
func storedEventParts(raw []byte) (data, request any) {
	var st struct {
		Data    json.RawMessage     `json:"data"`
		Request *intake.RequestInfo `json:"request"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.Data == nil || st.Request == nil {
		return redactedJSON(raw), nil
	}
	r := st.Request
	return redactedJSON(st.Data), redact.Value(map[string]any{
		"method": r.Method, "path": r.Path, "remote_ip": r.RemoteIP,
		"headers": stringMap(r.Headers), "query": stringMap(r.Query),
	})
}

// stringMap is m as redact.Value walks it; nil for an empty one.
func stringMap(m map[string]string) any {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func redactedJSON(raw []byte) any {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return redact.Text(string(bytes.ToValidUTF8(raw, []byte("\uFFFD"))))
	}
	return redact.Value(v)
}
