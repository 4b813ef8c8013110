package callhook

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// forgetRemovedWebhooks drops the metric series and the figures of the
// webhooks that old has and cur no longer does: without it every webhook
// ever configured keeps its series (and the dashboard its figures) for
// the life of the process, so cardinality grows with each reload that
// renames or removes one. A removed webhook's deliveries still in the
// queue are sent, and their outcomes start its series again.
func (e *engine) forgetRemovedWebhooks(old, cur *targetRegistry) {
	if old == nil || old == cur {
		return
	}
	keep := make(map[string]bool)
	cur.each(func(h *Handler, w *render.Webhook) { keep[queue.WebhookKey(h.Target, w.Name())] = true })
	old.each(func(h *Handler, w *render.Webhook) {
		key := queue.WebhookKey(h.Target, w.Name())
		if keep[key] {
			return
		}
		keep[key] = true // once, if two blocks declared it
		deleteWebhookSeries(h.Target, w.Name())
		e.hooks.forget(key)
	})
}

// deleteWebhookSeries deletes every series of one webhook.
func deleteWebhookSeries(target, webhook string) {
	labels := prometheus.Labels{"target": target, "webhook": webhook}
	metrics.deliveries.DeletePartialMatch(labels)
	metrics.attempts.DeletePartialMatch(labels)
	metrics.paused.DeletePartialMatch(labels)
}

// forget drops a webhook's figures.
func (s *hookStats) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}
