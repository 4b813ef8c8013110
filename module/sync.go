package callhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/mapping"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// Reply is a `reply <event>` block: how the handler answers the caller of
// an event that has sync webhooks (SPEC §9), in the caller's format.
type Reply struct {
	// Event is the event this reply answers.
	Event string `json:"event"`
	// Status is the HTTP status of the answer. Default: 200.
	Status int `json:"status,omitempty"`
	// Format is json, form, xml or text. Default: json.
	Format string `json:"format,omitempty"`
	// XMLRoot is the root element (format xml), e.g. Response for TwiML.
	// Default: webhook.
	XMLRoot string `json:"xml_root,omitempty"`
	// Headers are added to the answer; values may use {param.NAME}.
	Headers []render.Header `json:"headers,omitempty"`
	// Params are the answer's fields, in order: expressions over call,
	// data, event, target, request and sync.<webhook>.
	Params []render.Param `json:"params,omitempty"`
}

// compileReplies compiles the handler's replies and checks them against
// its webhooks. On error it also returns the index of the reply at fault
// (-1 when it is a webhook's), so the Caddyfile adapter can name the line.
func (h *Handler) compileReplies() (int, error) {
	h.replies = nil
	for _, w := range h.Webhooks {
		if err := w.checkModes(); err != nil {
			return -1, err
		}
	}
	if len(h.Replies) > 0 && h.Passthrough {
		return 0, fmt.Errorf("reply %s: passthrough hands the request to the next handler, which then answers; remove passthrough or the reply", h.Replies[0].Event)
	}
	byName := make(map[string]*render.Webhook, len(h.hooks))
	for _, hook := range h.hooks {
		byName[hook.Name()] = hook
	}
	for i, rc := range h.Replies {
		if !intake.IsEventName(rc.Event) {
			return i, fmt.Errorf("reply %s: unknown event: expected one of %s", rc.Event, strings.Join(intake.EventNames, ", "))
		}
		if h.replies[rc.Event] != nil {
			return i, fmt.Errorf("reply %s: a second reply for the same event; an event is answered once, so keep one", rc.Event)
		}
		var syncs []string
		for _, hook := range h.hooks {
			if hook.Sync() && hook.Fires(rc.Event) {
				syncs = append(syncs, hook.Name())
			}
		}
		if len(syncs) == 0 {
			return i, fmt.Errorf("reply %s: no sync webhook handles %s, so there is nothing to wait for; add `sync` to a webhook with `on %s`, or remove the reply", rc.Event, rc.Event, rc.Event)
		}
		r, err := render.CompileReply(render.ReplyConfig{
			Event: rc.Event, Status: rc.Status, Format: rc.Format, XMLRoot: rc.XMLRoot,
			Headers: rc.Headers, Params: rc.Params,
			DateFormat: h.DateFormat, Timezone: h.Timezone,
		})
		if err != nil {
			return i, err
		}
		for _, name := range r.SyncNames() {
			hook := byName[name]
			switch {
			case hook == nil:
				return i, fmt.Errorf("reply %s: sync.%s names no webhook of this target; sync webhooks for %s: %s", rc.Event, name, rc.Event, strings.Join(syncs, ", "))
			case !hook.Sync():
				return i, fmt.Errorf("reply %s: sync.%s: webhook %s is not a sync webhook; add `sync` to it", rc.Event, name, name)
			case !hook.Fires(rc.Event):
				return i, fmt.Errorf("reply %s: sync.%s: webhook %s does not fire on %s; add %s to its `on`", rc.Event, name, name, rc.Event, rc.Event)
			}
		}
		if h.replies == nil {
			h.replies = make(map[string]*render.Reply)
		}
		h.replies[rc.Event] = r
	}
	return -1, nil
}

// checkModes rejects webhook options that contradict each other.
func (w Webhook) checkModes() error {
	if w.Sync && w.Ordered {
		return fmt.Errorf("webhook %s: sync and ordered cannot be combined: a sync webhook is called at once, while the caller waits; drop one of them", w.Name)
	}
	return nil
}

// syncCall is one sync webhook's call for one event.
type syncCall struct {
	hook *render.Webhook
	// d is the call recorded as a delivery (delivered or dead, one
	// attempt); nil when `when` was false.
	d *queue.Delivery
	// value is sync.<name> for the reply: nil unless it answered 2xx.
	value  map[string]any
	status int
	json   any
}

// syncRun is the sync calls of one event, running.
type syncRun struct {
	calls []*syncCall
	wg    sync.WaitGroup
}

// startSync calls the event's sync webhooks, concurrently with each other
// and with the durable enqueue. Each call is bounded by its own timeout.
// The calls do not end with the request: a PBX that hangs up still gets its
// calls recorded as they happened.
func (h *Handler) startSync(ctx context.Context, ev *intake.Event, now time.Time) *syncRun {
	var run *syncRun
	for _, hook := range h.hooks {
		if !hook.Sync() || !hook.Fires(ev.Name) {
			continue
		}
		if run == nil {
			run = &syncRun{}
		}
		c := &syncCall{hook: hook}
		run.calls = append(run.calls, c)
		run.wg.Add(1)
		go func() {
			defer run.wg.Done()
			h.callSync(context.WithoutCancel(ctx), c, ev, now)
		}()
	}
	return run
}

func (h *Handler) callSync(ctx context.Context, c *syncCall, ev *intake.Event, now time.Time) {
	d := renderSafely(c.hook, ev, h.Target, now)
	if d == nil {
		return // `when` is false: not called, sync.<name> is nil
	}
	c.d = d
	if d.State == queue.Dead {
		// render error: recorded dead, never sent, and marked as a sync
		// call like every failed one (isSyncCall)
		d.LastError = "webhook " + d.Webhook + syncCallMark + "not made: " + strings.TrimPrefix(d.LastError, "webhook "+d.Webhook+": ")
		return
	}
	res, e, skipped := h.app.sendSync(ctx, d)
	fs := []zap.Field{
		zap.String("webhook", d.Webhook), zap.String("event", d.Event), zap.String("target", d.Target),
		zap.String("call_id", d.CallID), zap.String("delivery_id", d.ID),
	}
	if skipped != "" {
		// Not an attempt: nothing was sent, so the failure clock and the
		// attempt figures do not hear of it.
		d.State = queue.Dead
		d.FinishedAt = time.Now()
		d.LastError = fmt.Sprintf("webhook %s: sync call not made: %s; the reply used its fallback", d.Webhook, skipped)
		outcomeMetrics{}.Outcome(d, res, delivery.OutcomeDead, time.Time{})
		h.logger.Warn("sync webhook not called; the reply sees nil", append(fs, zap.String("reason", skipped))...)
		return
	}
	d.Attempts = []queue.Attempt{res.Attempt}
	d.FinishedAt = res.Attempt.Start.Add(res.Attempt.Duration)
	final := delivery.OutcomeDelivered
	if res.OK {
		d.State = queue.Delivered
		c.value, c.status, c.json = syncValue(res)
	} else {
		d.State = queue.Dead
		d.LastError = fmt.Sprintf("webhook %s: sync call failed (not retried): %s", d.Webhook, res.Reason)
		final = delivery.OutcomeDead
	}
	if e != nil {
		// metrics, the webhook's figures and its disable_after clock,
		// as for a queued delivery's attempt
		e.Outcome(d, res, final, time.Time{})
	} else {
		outcomeMetrics{}.Outcome(d, res, final, time.Time{})
	}
	fs = append(fs, zap.Int("status", res.Attempt.Status), zap.Duration("duration", res.Attempt.Duration))
	if res.OK {
		h.logger.Info("sync webhook answered", fs...)
	} else {
		h.logger.Warn("sync webhook failed; the reply sees nil (sync calls are not retried)", append(fs, zap.String("reason", res.Reason))...)
	}
}

// syncValue is sync.<name>: {status, headers (lower-case names), body (at
// most 64 KiB, as a string), json (the decoded body, or nil)}.
func syncValue(res delivery.Result) (map[string]any, int, any) {
	headers := make(map[string]any, len(res.Header))
	for k, vs := range res.Header {
		headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	var decoded any
	if len(res.Attempt.Response) > 0 {
		if err := json.Unmarshal(res.Attempt.Response, &decoded); err != nil {
			decoded = nil
		}
	}
	return map[string]any{
		"status":  int64(res.Attempt.Status),
		"headers": headers,
		"body":    string(res.Attempt.Response),
		"json":    decoded,
	}, res.Attempt.Status, decoded
}

// wait waits for every call and returns the calls made, as deliveries to
// record.
func (run *syncRun) wait() []*queue.Delivery {
	if run == nil {
		return nil
	}
	run.wg.Wait()
	var ds []*queue.Delivery
	for _, c := range run.calls {
		if c.d != nil {
			ds = append(ds, c.d)
		}
	}
	return ds
}

// recordTimeout bounds storing the sync calls of an event.
const recordTimeout = 5 * time.Second

// recordSyncCalls stores the event's sync calls as finished deliveries
// (delivered or dead, one attempt each, never leased), so they show in
// the admin API like any other. A failure is logged: the caller is
// answered anyway, it is waiting for its routing answer.
//
// Queue v2: these go in as Deliveries of an Envelope with State Delivered
// or Dead (Enqueue stores those as they are).
func (h *Handler) recordSyncCalls(ctx context.Context, eventID string, ds []*queue.Delivery) {
	if len(ds) == 0 {
		return
	}
	for _, d := range ds {
		d.EventID = eventID
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	// An envelope without an event: the calls belong to the stored one.
	if _, err := h.app.enqueue(ctx, &queue.Envelope{Deliveries: ds}); err != nil {
		h.logger.Error("sync calls could not be recorded; they were made, but the admin API will not list them",
			zap.String("target", h.Target), zap.Int("calls", len(ds)), zap.Error(err))
	}
}

// syncRefs are the answer's refs for the recorded sync calls.
func syncRefs(ds []*queue.Delivery) []deliveryRef {
	out := make([]deliveryRef, 0, len(ds))
	for _, d := range ds {
		ref := deliveryRef{ID: d.ID, Webhook: d.Webhook, State: d.State}
		if d.State == queue.Dead {
			ref.Error = d.LastError
		}
		out = append(out, ref)
	}
	return out
}

// summaries is the answer's "sync" member, without a reply.
func (run *syncRun) summaries() map[string]*syncSummary {
	if run == nil {
		return nil
	}
	out := make(map[string]*syncSummary, len(run.calls))
	for _, c := range run.calls {
		var s *syncSummary
		if c.value != nil {
			s = &syncSummary{Status: c.status, JSON: c.json}
		}
		out[c.hook.Name()] = s
	}
	return out
}

// writeReply renders the event's reply and answers with it.
func (h *Handler) writeReply(w http.ResponseWriter, rp *render.Reply, ev *intake.Event, run *syncRun) error {
	env := &mapping.ReplyEnv{Call: ev.Call, Data: ev.Data, Event: ev.Name, Target: h.Target, Request: &ev.Request, Sync: map[string]any{}}
	if run != nil {
		for _, c := range run.calls {
			if c.value != nil {
				env.Sync[c.hook.Name()] = c.value
			} else {
				env.Sync[c.hook.Name()] = nil
			}
		}
	}
	a, err := rp.Render(env)
	if err != nil {
		h.logger.Error("reply could not be rendered; answering 500 (the event itself is stored)",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID), zap.Error(err))
		return writeError(w, http.StatusInternalServerError, err.Error())
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	for _, kv := range a.Header {
		if slices.Contains([]string{"Content-Type", "Cache-Control"}, http.CanonicalHeaderKey(kv[0])) {
			hdr.Set(kv[0], kv[1])
		} else {
			hdr.Add(kv[0], kv[1])
		}
	}
	w.WriteHeader(a.Status)
	_, err = w.Write(a.Body)
	return err
}

// sendSync makes a sync webhook's one attempt through the engine's
// SSRF-guarded sender, within the webhook's rate_limit and concurrency and
// unless it is paused. Over a limit or paused, the call is not made (the
// caller is waiting: it gets the reply's fallback at once) and skipped
// says why. e is the engine that made it, nil when none runs.
func (a *App) sendSync(ctx context.Context, d *queue.Delivery) (res delivery.Result, e *engine, skipped string) {
	e = a.loadEngine()
	if e == nil {
		e = a.waitStarted(ctx)
	}
	if e == nil {
		reason := "the callhook app is not running yet"
		return delivery.Result{Reason: reason, Attempt: queue.Attempt{Start: time.Now(), Error: reason}}, nil, ""
	}
	key := d.WebhookKey()
	if ok, why := e.limiter.TryStart(key, time.Now()); !ok {
		return delivery.Result{Reason: why}, e, why
	}
	defer e.limiter.Done(key)
	return e.sender.Send(ctx, d), e, ""
}
