package callhook

import (
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
)

// sampleFailure is a webhook that cannot be rendered on one of the
// built-in sample events.
type sampleFailure struct {
	webhook, event, sample, reason string
}

// sampleFailures renders each of the handler's webhooks on the samples of
// the events it fires on and returns the first failure of each webhook. A
// config that is valid may still use a field some calls lack (e164 of no
// caller): such calls' deliveries would be dead on arrival, which the load
// can warn about before the first one comes.
func (h *Handler) sampleFailures() []sampleFailure {
	var out []sampleFailure
	now := time.Now()
	for _, hook := range h.hooks {
	events:
		for _, name := range intake.EventNames {
			if !hook.Fires(name) || (h.Event != "" && !strings.Contains(h.Event, "{") && h.Event != name) {
				continue
			}
			for _, body := range sampleEvents[name] {
				ev, err := decodeRenderData(h, name, []byte(body))
				if err != nil {
					continue // a field mapping that needs the sender's own fields
				}
				d := hook.Render(ev, h.Target, renderID, now)
				if d != nil && d.State == queue.Dead {
					sample := "an ordinary sample"
					if body == bareSample {
						sample = "only call_id, every optional field missing"
					}
					out = append(out, sampleFailure{webhook: hook.Name(), event: name, sample: sample, reason: d.LastError})
					break events
				}
			}
		}
	}
	return out
}

// warnSampleFailures logs sampleFailures at load: a warning, not an
// error, since real calls may always carry the field.
func (h *Handler) warnSampleFailures() {
	for _, f := range h.sampleFailures() {
		h.logger.Warn("webhook fails to render on a sample event: calls like it would get a dead delivery; give the param a fallback with ?? or a when, and check with caddy callhook render",
			zap.String("target", h.Target), zap.String("webhook", f.webhook), zap.String("event", f.event),
			zap.String("sample", f.sample), zap.String("error", f.reason))
	}
}
