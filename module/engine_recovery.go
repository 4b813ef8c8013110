package callhook

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// The recovery operations of the admin API and the dashboard: webhook
// states and resume, event replay, and retry and delete of dead
// deliveries. Each renders with the running config's webhooks (never a
// stale config's: e.current() follows every reload).

// WebhookState is one webhook as GET /callhook/webhooks shows it. The
// figures count attempts made by this process since it started.
type WebhookState struct {
	Target  string `json:"target"`
	Webhook string `json:"webhook"`
	// State is "active" or "paused".
	State       string    `json:"state"`
	PausedSince time.Time `json:"paused_since,omitzero"`
	PauseReason string    `json:"pause_reason,omitempty"`
	// Configured is false for a paused webhook that the running config no
	// longer has (its pause is kept until it is resumed).
	Configured  bool      `json:"configured"`
	Attempts    int64     `json:"attempts"`
	Delivered   int64     `json:"delivered"`
	Failed      int64     `json:"failed"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastFailure time.Time `json:"last_failure,omitzero"`
	// FailingSince is the first failed attempt since the last success.
	FailingSince time.Time `json:"failing_since,omitzero"`
	// The webhook's delivery options in the running config.
	Ordered      bool   `json:"ordered,omitempty"`
	RateLimit    string `json:"rate_limit,omitempty"`
	Concurrency  int    `json:"concurrency,omitempty"`
	DisableAfter string `json:"disable_after,omitempty"`
}

// Webhook states.
const (
	webhookActive = "active"
	webhookPaused = "paused"
)

// conflictError is a recovery operation that cannot be done as things are
// (the admin API answers 409 with its message, which says what to do).
type conflictError struct{ msg string }

func (e *conflictError) Error() string { return e.msg }

func conflict(format string, args ...any) error { return &conflictError{fmt.Sprintf(format, args...)} }

// webhookStates lists every webhook of the running config, and every
// paused one it no longer has, by target and name.
func (e *engine) webhookStates(ctx context.Context) ([]WebhookState, error) {
	ps, err := e.q.Pauses(ctx)
	if err != nil {
		return nil, err
	}
	paused := make(map[string]queue.Pause, len(ps))
	for _, p := range ps {
		paused[queue.WebhookKey(p.Target, p.Webhook)] = p
	}
	var out []WebhookState
	seen := map[string]bool{}
	add := func(target, webhook string, h *Handler) {
		key := queue.WebhookKey(target, webhook)
		if seen[key] {
			return
		}
		seen[key] = true
		st := e.hooks.get(key)
		ws := WebhookState{
			Target: target, Webhook: webhook, State: webhookActive, Configured: h != nil,
			Attempts: st.attempts, Delivered: st.delivered, Failed: st.failed,
			LastSuccess: st.lastSuccess, LastFailure: st.lastFailure, FailingSince: st.failingSince,
		}
		if p, ok := paused[key]; ok {
			ws.State, ws.PausedSince, ws.PauseReason = webhookPaused, p.Since, p.Reason
		}
		if h != nil {
			for _, w := range h.Webhooks {
				if w.Name == webhook {
					ws.Ordered, ws.RateLimit, ws.Concurrency = w.Ordered, w.RateLimit, w.Concurrency
					if w.DisableAfter > 0 {
						ws.DisableAfter = time.Duration(w.DisableAfter).String()
					}
				}
			}
		}
		out = append(out, ws)
	}
	e.current().each(func(h *Handler, w *render.Webhook) { add(h.Target, w.Name(), h) })
	for _, p := range ps {
		add(p.Target, p.Webhook, nil)
	}
	slices.SortStableFunc(out, func(a, b WebhookState) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Webhook, b.Webhook))
	})
	return out, nil
}

// resumeWebhook ends a webhook's pause; resuming one that is not paused
// does nothing. queue.ErrNotFound: the running config has no such webhook
// and no pause is stored for it.
func (e *engine) resumeWebhook(ctx context.Context, target, webhook string) error {
	key := queue.WebhookKey(target, webhook)
	e.paused.mu.Lock()
	defer e.paused.mu.Unlock()
	ps, err := e.q.Pauses(ctx)
	if err != nil {
		return err
	}
	var stored *queue.Pause
	for i := range ps {
		if ps[i].Target == target && ps[i].Webhook == webhook {
			stored = &ps[i]
		}
	}
	_, inMemory := e.paused.m[key]
	if stored == nil && !inMemory {
		if _, w := e.current().webhook(target, webhook); w == nil {
			return fmt.Errorf("webhook %s of target %s: %w", webhook, target, queue.ErrNotFound)
		}
		return nil
	}
	if err := e.q.SetPause(ctx, target, webhook, nil); err != nil {
		return err
	}
	e.setPauseLocked(target, webhook, nil)
	e.hooks.resetStreak(key)
	e.pool.Notify()
	e.logger.Info("webhook resumed by hand: its pending deliveries are attempted again",
		zap.String("target", target), zap.String("webhook", webhook))
	return nil
}

// replayEvent renders a stored event again with the running config's
// webhooks for its target and queues the deliveries as a new event (dedup
// bypassed). queue.ErrNotFound: no such event is stored (unknown, or
// pruned after retention).
func (e *engine) replayEvent(ctx context.Context, eventID string) (queue.EnqueueResult, error) {
	ev, err := e.q.GetEvent(ctx, eventID)
	if err != nil {
		return queue.EnqueueResult{}, err
	}
	reg := e.current()
	hs := reg.handlers(ev.Target)
	if len(hs) == 0 {
		return queue.EnqueueResult{}, conflict("event %s is of target %s, which the running config has no callhook handler for; add the target back to replay it", eventID, ev.Target)
	}
	now := time.Now()
	replay := queue.Event{ID: render.NewID(), Target: ev.Target, Name: ev.Name, CallID: ev.CallID, ReceivedAt: now, Data: ev.Data}
	var ds []*queue.Delivery
	for _, h := range hs {
		iev, err := h.rebuild(ev)
		if err != nil {
			return queue.EnqueueResult{}, conflict("event %s cannot be rendered with the running config: %v", eventID, err)
		}
		replay.CallID = iev.CallID
		for _, hook := range h.hooks {
			if !hook.Fires(ev.Name) || hook.Sync() {
				// A sync webhook answered a caller who is gone by now:
				// replaying it would queue a lookup for a call that is over.
				continue
			}
			if d := renderSafely(hook, iev, ev.Target, now); d != nil {
				d.EventID = replay.ID
				ds = append(ds, d)
			}
		}
	}
	res, err := e.enqueue(ctx, &queue.Envelope{Event: replay, Deliveries: ds}, reg)
	if err != nil {
		return res, err
	}
	e.pool.Notify()
	e.logger.Info("event replayed by hand with the running config",
		zap.String("event_id", eventID), zap.String("replay_event_id", res.EventID),
		zap.String("target", ev.Target), zap.String("event", ev.Name), zap.String("call_id", replay.CallID),
		zap.Array("deliveries", refList(res.Refs)))
	for _, d := range ds {
		if d.State == queue.Dead {
			countDeadOnArrival(d)
			e.logRenderError(d)
		}
	}
	return res, nil
}

// retryDelivery puts a dead delivery back in the queue, due now, with a
// fresh attempt budget (created_at kept, retried_at set). One that was
// dead on arrival (its webhook failed to render) is rendered again from
// the stored event with the running config first. queue.ErrNotDead for a
// delivery in another state, queue.ErrNotFound for an unknown one.
func (e *engine) retryDelivery(ctx context.Context, id string) (*queue.Delivery, error) {
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if d.State != queue.Dead {
		return d, fmt.Errorf("delivery %s is %s: %w", id, d.State, queue.ErrNotDead)
	}
	if isSyncCall(d) {
		return nil, errSyncCallRetry(d)
	}
	if rendered(d) {
		n, err := e.q.RetryDead(ctx, id)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			// It was dead a moment ago: retried or removed meanwhile.
			if d, err = e.q.Get(ctx, id); err != nil {
				return nil, err
			}
			return d, fmt.Errorf("delivery %s is %s: %w", id, d.State, queue.ErrNotDead)
		}
	} else {
		nd, err := e.rerender(ctx, d)
		if err != nil {
			return nil, err
		}
		if err := e.q.Redeliver(ctx, nd); err != nil {
			return nil, err
		}
	}
	e.pool.Notify()
	e.logger.Info("dead delivery put back in the queue by hand",
		zap.String("delivery_id", d.ID), zap.String("webhook", d.Webhook), zap.String("target", d.Target),
		zap.String("event", d.Event), zap.String("call_id", d.CallID), zap.Bool("rendered_again", !rendered(d)))
	return e.q.Get(ctx, id)
}

// rerender renders a dead-on-arrival delivery again from its stored event
// with the running config's webhook of the same name.
func (e *engine) rerender(ctx context.Context, d *queue.Delivery) (*queue.Delivery, error) {
	if d.EventID == "" {
		return nil, conflict("delivery %s cannot be rendered again: it has no stored event; have the source send the event again", d.ID)
	}
	ev, err := e.q.GetEvent(ctx, d.EventID)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, conflict("delivery %s cannot be rendered again: its event %s is no longer stored (events are kept for the retention period); have the source send the event again, or delete the delivery", d.ID, d.EventID)
	}
	if err != nil {
		return nil, err
	}
	reg := e.current()
	h, hook := reg.webhook(d.Target, d.Webhook)
	if hook == nil {
		return nil, conflict("delivery %s cannot be rendered again: the running config has no webhook %s in target %s; add it back, or delete the delivery", d.ID, d.Webhook, d.Target)
	}
	if hook.Sync() {
		return nil, errSyncCallRetry(d)
	}
	iev, err := h.rebuild(ev)
	if err != nil {
		return nil, conflict("delivery %s cannot be rendered again: its event does not decode under the running config: %v", d.ID, err)
	}
	// Under its own ID: a JSON-RPC body carries it.
	nd := renderWithID(hook, iev, d.Target, d.ID, d.CreatedAt)
	switch {
	case nd == nil:
		return nil, conflict("delivery %s: webhook %s's `when` is false for this event under the running config, so there is nothing to send; delete the delivery", d.ID, d.Webhook)
	case nd.State == queue.Dead:
		return nil, conflict("delivery %s still fails to render with the running config: %s; fix the webhook, reload, and retry again", d.ID, nd.LastError)
	}
	nd.EventID = d.EventID
	if err := e.seal(reg, nd); err != nil {
		return nil, err
	}
	return nd, nil
}

// deleteDelivery removes a dead delivery. queue.ErrNotDead for one in
// another state, queue.ErrNotFound for an unknown one.
func (e *engine) deleteDelivery(ctx context.Context, id string) error {
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return err
	}
	if d.State != queue.Dead {
		return fmt.Errorf("delivery %s is %s: %w", id, d.State, queue.ErrNotDead)
	}
	n, err := e.q.DeleteDead(ctx, id)
	if err != nil {
		return err
	}
	if n == 0 {
		if d, err = e.q.Get(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("delivery %s is %s: %w", id, d.State, queue.ErrNotDead)
	}
	e.logger.Info("dead delivery deleted by hand",
		zap.String("delivery_id", d.ID), zap.String("webhook", d.Webhook), zap.String("target", d.Target),
		zap.String("event", d.Event), zap.String("call_id", d.CallID))
	return nil
}

// rebuild makes the intake event again from a stored event, with this
// handler's field mappings and timezone.
func (h *Handler) rebuild(ev *queue.Event) (*intake.Event, error) {
	var st struct {
		Data    json.RawMessage    `json:"data"`
		Request intake.RequestInfo `json:"request"`
	}
	if len(ev.Data) > 0 {
		if err := json.Unmarshal(ev.Data, &st); err != nil {
			return nil, fmt.Errorf("the stored event is not readable: %v", err)
		}
	}
	return intake.Rebuild(ev.Name, st.Data, st.Request, ev.ReceivedAt, intake.Options{Location: h.loc, Remap: h.fields.Remap})
}

// logRenderError logs a dead-on-arrival delivery, with advice that works.
func (e *engine) logRenderError(d *queue.Delivery) {
	e.logger.Error(renderErrorAdvice, renderErrorFields(d)...)
}

// renderErrorAdvice is the message of the log line of a delivery that was
// dead on arrival.
const renderErrorAdvice = "webhook could not be rendered; its delivery is stored dead (fix the webhook, reload, then retry the delivery by hand: it is rendered again from the stored event)"

func renderErrorFields(d *queue.Delivery) []zap.Field {
	return []zap.Field{
		zap.String("target", d.Target), zap.String("event", d.Event), zap.String("call_id", d.CallID),
		zap.String("webhook", d.Webhook), zap.String("delivery_id", d.ID), zap.String("reason", d.LastError),
		zap.String("retry", "POST /callhook/deliveries/"+d.ID+"/retry on Caddy's admin endpoint"),
	}
}
