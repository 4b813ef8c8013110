package callhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/callhook/caddy-callhook/internal/redact"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// The dashboard's webhook page (webhooks/<target>/<webhook>): the
// webhook's settings in the running config, secrets redacted, its pause
// state, success rate and latency, its latest deliveries, and a "Send
// test" form whose answer (admin_test_send.go) the page shows.

// webhookData is the webhook page.
type webhookData struct {
	W          webhookRow
	Settings   *webhookSettings
	Deliveries []deliveryView
	// Events the webhook fires on, for the test form; Event and Data are
	// what the form was sent with.
	Events      []string
	Event, Data string
	Test        *testSendAnswer
	// TestError is why a test was not sent (400, 422, 429).
	TestError string
	// TestsPerMinute is the dashboard's limit of tests per webhook.
	TestsPerMinute int
	status         int
}

// webhookSettings are a webhook's options as the running config has them,
// with credentials redacted and secrets never shown.
type webhookSettings struct {
	Method, URL, Format string
	On                  []string
	Headers             []headerView
	Signed              bool
	Secrets             int
	Sync                bool
	TLS                 bool
	Timeout, MaxAge     string
	MaxAttempts         int
	Backoff             string
}

// settingsOf is the config of webhook name of target, nil when the running
// config has none (a paused webhook that was removed).
func (s *adminService) settingsOf(target, name string) *webhookSettings {
	e, _, err := s.engine()
	if err != nil {
		return nil
	}
	h, hook := e.current().webhook(target, name)
	if hook == nil {
		return nil
	}
	for _, w := range h.Webhooks {
		if w.Name != name {
			continue
		}
		r := redact.New(append([]string{w.Secret}, w.RotatedSecrets...)...)
		set := &webhookSettings{
			Method: cmpOr(w.Method, http.MethodPost), URL: r.URL(w.URL), Format: cmpOr(w.Format, "json"),
			On: w.On, Signed: len(hook.Secrets()) > 0, Secrets: len(hook.Secrets()), Sync: w.Sync, TLS: w.TLS != nil,
		}
		// The delivery settings in force, defaults applied: a render of
		// the sample event carries them.
		p := effectivePolicy(h, hook)
		set.Timeout, set.MaxAge, set.MaxAttempts = p.Timeout.String(), p.MaxAge.String(), p.MaxAttempts
		set.Backoff = p.BackoffMin.String() + " – " + p.BackoffMax.String()
		for _, hd := range w.Headers {
			set.Headers = append(set.Headers, headerView{Name: hd.Name, Value: r.Header(hd.Name, hd.Value)})
		}
		return set
	}
	return nil
}

// effectivePolicy is the policy a delivery of hook gets: the defaults
// applied to the config's options.
func effectivePolicy(h *Handler, hook *render.Webhook) queue.Policy {
	for _, event := range hook.On() {
		ev, err := decodeRenderData(h, event, []byte(sampleEvents[event][0]))
		if err != nil {
			continue
		}
		if d := renderWithID(hook, ev, "", renderID, time.Now()); d != nil && d.State != queue.Dead {
			return d.Policy
		}
	}
	return queue.Policy{}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// webhookPage renders the webhook page, with a test's answer when one
// was just sent; status is 200 unless the test was refused.
func (h *Dashboard) webhookPage(v *view, data *webhookData) error {
	ctx := v.r.Context()
	target, name := v.route.args[0], v.route.args[1]
	if err := v.webhookInScope(target, name); err != nil {
		return v.fail(err)
	}
	ws, err := h.svc.webhooks(ctx)
	if err != nil {
		return v.fail(err)
	}
	if data == nil {
		data = &webhookData{}
	}
	found := false
	for _, w := range ws {
		if w.Target == target && w.Webhook == name {
			data.W, found = webhookRow{WebhookState: viewWebhook(w), figures: webhookFigures(w)}, true
		}
	}
	if !found {
		return v.fail(apiError(http.StatusNotFound, "no webhook %s in target %s", name, target))
	}
	data.Settings = h.svc.settingsOf(target, name)
	if data.Settings != nil {
		data.Events = data.Settings.On
	}
	data.TestsPerMinute = testLimit.max
	ds, _, err := h.svc.list(ctx, queue.Filter{Target: target, Webhook: name, Limit: 10})
	if err != nil {
		return v.fail(err)
	}
	for _, d := range ds {
		data.Deliveries = append(data.Deliveries, viewDelivery(d, 0, h.svc.secretsOf(d)...))
	}
	status := http.StatusOK
	if data.TestError != "" && data.Test == nil {
		status = data.status
	}
	return v.write(status, "webhook", pageData{Title: "Webhook " + target + "/" + name, Data: data, Flash: flash(v.r.URL.Query())})
}

// sendTest is the "Send test" form: one test, at most testLimit a minute
// per webhook, shown on the webhook page.
func (h *Dashboard) sendTest(v *view) error {
	target, name := v.route.args[0], v.route.args[1]
	form := v.r.PostForm
	data := &webhookData{Event: form.Get("event"), Data: form.Get("data")}
	if wait, err := testLimit.allow(queue.WebhookKey(target, name), time.Now()); err != nil {
		data.TestError = fmt.Sprintf("Too many tests: this dashboard sends at most %d a minute to one webhook. Try again in %d s.", testLimit.max, int(wait.Seconds())+1)
		data.status = http.StatusTooManyRequests
		v.w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		return h.webhookPage(v, data)
	}
	req := testSendRequest{Event: data.Event}
	if raw := strings.TrimSpace(data.Data); raw != "" {
		if !json.Valid([]byte(raw)) {
			data.TestError = "The data is not valid JSON: give the body of an event, such as {\"call_id\": \"c-1\"}, or leave it empty for the sample."
			data.status = http.StatusBadRequest
			return h.webhookPage(v, data)
		}
		req.Data = json.RawMessage(raw)
	}
	out, err := h.svc.sendTest(v.r.Context(), target, name, req)
	if err != nil {
		if errorStatus(err) >= 500 || isNotFound(err) {
			return v.fail(err)
		}
		data.TestError = errorMessage(err)
		data.status = errorStatus(err)
		return h.webhookPage(v, data)
	}
	data.Test = &out
	return h.webhookPage(v, data)
}
