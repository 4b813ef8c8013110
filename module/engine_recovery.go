package callhook

// STAND-IN for issue 9. Issue 9 adds this file with the same name and the
// same signatures (pausing, replay with the current config, re-rendering
// dead-on-arrival deliveries, per-webhook figures). When it lands, its
// version replaces this one whole (`git checkout --theirs
// module/engine_recovery.go`); the admin service, the dashboard and the CLI
// only call these five methods and the WebhookState type.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// WebhookState is one webhook as GET /callhook/webhooks shows it (issue
// 9's shape, fewer fields).
type WebhookState struct {
	Target  string `json:"target"`
	Webhook string `json:"webhook"`
	// State is "active" or "paused".
	State       string    `json:"state"`
	PausedSince time.Time `json:"paused_since,omitzero"`
	PauseReason string    `json:"pause_reason,omitempty"`
	Configured  bool      `json:"configured"`
	Attempts    int64     `json:"attempts"`
	Delivered   int64     `json:"delivered"`
	Failed      int64     `json:"failed"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastFailure time.Time `json:"last_failure,omitzero"`
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

// signingSecrets are the secrets that sign d (issue 9 resolves them from
// the running config; here they travel in the policy).
func (e *engine) signingSecrets(d *queue.Delivery) ([][]byte, error) {
	if len(d.Policy.Secret) == 0 {
		return nil, nil
	}
	return [][]byte{d.Policy.Secret}, nil
}

// webhookStates lists every configured webhook of the config in force,
// with the pauses stored in the queue.
func (e *engine) webhookStates(ctx context.Context) ([]WebhookState, error) {
	pauses, err := e.q.Pauses(ctx)
	if err != nil {
		return nil, err
	}
	paused := map[string]queue.Pause{}
	for _, p := range pauses {
		paused[queue.WebhookKey(p.Target, p.Webhook)] = p
	}
	var out []WebhookState
	seen := map[string]bool{}
	add := func(target, webhook string, configured bool) {
		k := queue.WebhookKey(target, webhook)
		if seen[k] {
			return
		}
		seen[k] = true
		ws := WebhookState{Target: target, Webhook: webhook, State: webhookActive, Configured: configured}
		if p, ok := paused[k]; ok {
			ws.State, ws.PausedSince, ws.PauseReason = webhookPaused, p.Since, p.Reason
		}
		out = append(out, ws)
	}
	e.mu.Lock()
	var reg *targetRegistry
	if n := len(e.holders); n > 0 {
		reg = e.holders[n-1].webhooks
	}
	e.mu.Unlock()
	if reg != nil {
		reg.mu.RLock()
		for target, tb := range reg.targets {
			for _, h := range tb.hooks {
				add(target, h.Name(), true)
			}
		}
		reg.mu.RUnlock()
	}
	for _, p := range pauses {
		add(p.Target, p.Webhook, false)
	}
	slices.SortFunc(out, func(a, b WebhookState) int {
		if a.Target != b.Target {
			return strings.Compare(a.Target, b.Target)
		}
		return strings.Compare(a.Webhook, b.Webhook)
	})
	return out, nil
}

// resumeWebhook lifts a stored pause; queue.ErrNotFound if it is not paused.
func (e *engine) resumeWebhook(ctx context.Context, target, webhook string) error {
	pauses, err := e.q.Pauses(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(pauses, func(p queue.Pause) bool { return p.Target == target && p.Webhook == webhook }) {
		return fmt.Errorf("webhook %s is not paused: %w", queue.WebhookKey(target, webhook), queue.ErrNotFound)
	}
	return e.q.SetPause(ctx, target, webhook, nil)
}

// replayEvent needs rendering with the current config: issue 9.
func (e *engine) replayEvent(ctx context.Context, eventID string) (queue.EnqueueResult, error) {
	if _, err := e.q.GetEvent(ctx, eventID); err != nil {
		return queue.EnqueueResult{}, err
	}
	return queue.EnqueueResult{}, fmt.Errorf("replay is not in this build yet: %w", errors.ErrUnsupported)
}

// retryDelivery puts a dead delivery back in the queue; queue.ErrNotDead if
// it is not dead. A never-rendered one is refused here (issue 9 renders it
// again).
func (e *engine) retryDelivery(ctx context.Context, id string) (*queue.Delivery, error) {
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if d.State != queue.Dead {
		return nil, queue.ErrNotDead
	}
	if !rendered(d) {
		return nil, conflict("delivery %s cannot be retried: its request was never built because the webhook failed to render (%s); fix the config and have the source send the event again", d.ID, d.LastError)
	}
	n, err := e.q.RetryDead(ctx, id)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, queue.ErrNotDead
	}
	d.State = queue.Pending
	return d, nil
}

// deleteDelivery removes a dead delivery; queue.ErrNotDead if it is not dead.
func (e *engine) deleteDelivery(ctx context.Context, id string) error {
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return err
	}
	if d.State != queue.Dead {
		return queue.ErrNotDead
	}
	n, err := e.q.DeleteDead(ctx, id)
	if err == nil && n == 0 {
		return queue.ErrNotDead
	}
	return err
}
