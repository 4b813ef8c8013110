package callhook

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

// The customer portal: a dashboard with `target` shows one target only.
// Its value (a literal or placeholders such as {http.auth.user.id}) is
// replaced per request, after the auth handlers in front of the dashboard
// have run. Every page, list, count and action is limited to that target,
// and what belongs to another one answers exactly as an unknown ID does,
// so a customer cannot even learn that it exists.

// scopeOf is the target the request is limited to, "" for the operator's
// dashboard (no `target`). A value that is empty, still holds a
// placeholder, or names no target of the running config is refused with
// 403: it must never fall back to "every target".
func (h *Dashboard) scopeOf(r *http.Request) (string, error) {
	if h.Target == "" {
		return "", nil
	}
	t := h.Target
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		t = repl.ReplaceAll(t, "")
	}
	t = strings.TrimSpace(t)
	switch {
	case t == "", strings.ContainsAny(t, "{}"):
		h.logger.Warn("callhook portal refused a request: its target is empty after replacing placeholders (is an auth handler in front of the dashboard, and does it set the placeholder?)",
			zap.String("target", h.Target), zap.String("path", r.URL.Path))
		return "", apiError(http.StatusForbidden, "this portal shows the deliveries of one target, taken from %s, which is empty for this request: sign in again, or ask the operator to check the authentication in front of the portal", h.Target)
	case !h.svc.knowsTarget(t):
		h.logger.Warn("callhook portal refused a request: no callhook handler has its target",
			zap.String("target", t), zap.String("from", h.Target), zap.String("path", r.URL.Path))
		return "", apiError(http.StatusForbidden, "there are no webhooks for %q here: ask the operator to set up your target", t)
	}
	return t, nil
}

// knowsTarget reports whether the running config has a callhook handler
// for target, or a pause stored for one of its webhooks.
func (s *adminService) knowsTarget(target string) bool {
	e, _, err := s.engine()
	if err != nil {
		// No engine: the pages answer 503 on their own, which is right.
		return true
	}
	if len(e.current().handlers(target)) > 0 {
		return true
	}
	e.paused.mu.Lock()
	defer e.paused.mu.Unlock()
	for _, p := range e.paused.m {
		if p.Target == target {
			return true
		}
	}
	return false
}

// scopeFilter limits a list, preview or bulk action to the view's target:
// whatever target the query names, a scoped view lists its own.
func (v *view) scopeFilter(f *queue.Filter) {
	if v.scope != "" {
		f.Target = v.scope
	}
}

// inScope is nil when the delivery may be shown or acted on in this view,
// and otherwise the very 404 an unknown ID gets.
func (v *view) deliveryInScope(ctx context.Context, id string) error {
	if v.scope == "" {
		return nil
	}
	d, err := v.h.svc.get(ctx, id)
	if err != nil {
		return err
	}
	if d.Target != v.scope {
		return v.h.svc.unknownDelivery(id)
	}
	return nil
}

// eventInScope is deliveryInScope for a stored event.
func (v *view) eventInScope(ctx context.Context, id string) error {
	if v.scope == "" {
		return nil
	}
	ev, _, err := v.h.svc.event(ctx, id)
	if err != nil {
		return err
	}
	if ev.Target != v.scope {
		return v.h.svc.unknownEvent(id)
	}
	return nil
}

// webhookInScope is nil for a webhook of the portal's target that the
// running config has (or that is paused), and otherwise a 404 worded the
// same for another target's webhook as for an unknown one, naming no
// other target.
func (v *view) webhookInScope(target, webhook string) error {
	if v.scope == "" {
		return nil
	}
	if target == v.scope {
		if e, _, err := v.h.svc.engine(); err != nil {
			return err
		} else if _, w := e.current().webhook(target, webhook); w != nil {
			return nil
		} else if e.isPaused(target, webhook) {
			return nil
		}
	}
	return apiError(http.StatusNotFound, "no webhook %s in target %s", webhook, target)
}

// isPaused reports whether a pause is kept for the webhook.
func (e *engine) isPaused(target, webhook string) bool {
	e.paused.mu.Lock()
	defer e.paused.mu.Unlock()
	_, ok := e.paused.m[queue.WebhookKey(target, webhook)]
	return ok
}

// unknownDelivery is the 404 of an unknown delivery ID.
func (s *adminService) unknownDelivery(id string) error {
	e, _, err := s.engine()
	if err != nil {
		return err
	}
	return deliveryError(e, id, queue.ErrNotFound)
}

// unknownEvent is the 404 of an unknown event ID.
func (s *adminService) unknownEvent(id string) error {
	e, _, err := s.engine()
	if err != nil {
		return err
	}
	return eventNotFound(e, id)
}

// scopedWebhooks is webhooks limited to the view's target.
func (v *view) scopedWebhooks(ws []WebhookState) []WebhookState {
	if v.scope == "" {
		return ws
	}
	var out []WebhookState
	for _, w := range ws {
		if w.Target == v.scope {
			out = append(out, w)
		}
	}
	return out
}

// targetStats counts one target's deliveries by state, through the queue's
// per-target counters (queue.Store.TargetStats). The settings shown to the
// operator (queue, workers) are left out: they are not the customer's.
func (s *adminService) targetStats(ctx context.Context, target string) (statsView, error) {
	e, _, err := s.engine()
	if err != nil {
		return statsView{}, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	st, err := e.q.TargetStats(ctx, target)
	if err != nil {
		return statsView{}, queueError(err, "reading the queue stats of target "+target)
	}
	return statsView{Stats: st}, nil
}

// isNotFound reports a 404 of this layer.
func isNotFound(err error) bool {
	var ae caddy.APIError
	return errors.As(err, &ae) && ae.HTTPStatus == http.StatusNotFound
}

// unmarshalTarget reads `target <name or placeholder>`.
func (h *Dashboard) unmarshalTarget(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("target needs a value: the target to show, a literal or a placeholder such as {http.auth.user.id}")
	}
	if h.Target != "" {
		return d.Errf("target is set twice (%q, then %q): a dashboard shows one target", h.Target, d.Val())
	}
	h.Target = d.Val()
	if strings.TrimSpace(h.Target) == "" {
		return d.Err("target is empty: give the target to show, a literal or a placeholder such as {http.auth.user.id}")
	}
	if d.NextArg() {
		return d.Errf("target takes one value, got also %q", d.Val())
	}
	return nil
}

// stats are the overview's counts: the queue's, or the portal's target's.
func (v *view) stats(ctx context.Context) (statsView, error) {
	if v.scope != "" {
		return v.h.svc.targetStats(ctx, v.scope)
	}
	return v.h.svc.stats(ctx)
}

// actionInScope refuses an action on what is not the portal's target's,
// with the 404 of an unknown ID or webhook. Bulk actions are limited by
// their filter instead (scopeFilter).
func (v *view) actionInScope(ctx context.Context) error {
	if v.scope == "" {
		return nil
	}
	args := v.route.args
	switch v.route.name {
	case "retry", "delete":
		return v.deliveryInScope(ctx, args[0])
	case "replay":
		return v.eventInScope(ctx, args[0])
	case "resume", "test":
		return v.webhookInScope(args[0], args[1])
	}
	return nil
}
