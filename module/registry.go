package callhook

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/callhook/caddy-callhook/module/render"
)

// targetRegistry holds every handler block's webhooks of one config, by
// target. The rules of SPEC §7 (unique names, at most 40 webhooks per
// event) are per target, and a target may be served by several handler
// blocks (one per PBX, say). It lives on the config's App, so a reload
// starts from an empty one.
type targetRegistry struct {
	mu      sync.RWMutex
	targets map[string]*targetBlocks
}

type targetBlocks struct {
	// blocks are the distinct handler blocks, by the JSON of their config:
	// Caddy copies a site's routes into each server the site listens on, so
	// one block declared once may be provisioned more than once.
	blocks []string
	hooks  []*render.Webhook
	// handlers are the distinct blocks' handlers, in the order of blocks:
	// what renders a stored event again (field mappings, timezone) and
	// what each webhook's limits are.
	handlers []*Handler
}

// add registers a provisioned handler's webhooks under its target and
// checks the per-target rules against the blocks registered before it.
func (r *targetRegistry) add(h *Handler) error {
	raw, err := json.Marshal(h)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.targets == nil {
		r.targets = make(map[string]*targetBlocks)
	}
	tb := r.targets[h.Target]
	if tb == nil {
		tb = new(targetBlocks)
		r.targets[h.Target] = tb
	}
	for _, b := range tb.blocks {
		if b == string(raw) {
			return nil // the same block again, in another server
		}
	}
	all := append(append([]*render.Webhook(nil), tb.hooks...), h.hooks...)
	if err := render.CheckSet(h.Target, all); err != nil {
		if len(tb.blocks) > 0 {
			return fmt.Errorf("%v (counting the webhooks of all %d callhook handler blocks of target %s)", err, len(tb.blocks)+1, h.Target)
		}
		return err
	}
	tb.blocks = append(tb.blocks, string(raw))
	tb.hooks = all
	tb.handlers = append(tb.handlers, h)
	return nil
}

// handlers returns the handler blocks of a target in this config.
func (r *targetRegistry) handlers(target string) []*Handler {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if tb := r.targets[target]; tb != nil {
		return slices.Clone(tb.handlers)
	}
	return nil
}

// webhook finds a webhook of this config by target and name, with the
// handler block that declares it; nil when the config has none by that name.
func (r *targetRegistry) webhook(target, name string) (*Handler, *render.Webhook) {
	for _, h := range r.handlers(target) {
		for _, w := range h.hooks {
			if w.Name() == name {
				return h, w
			}
		}
	}
	return nil, nil
}

// each calls f for every webhook of this config, by target (sorted) in
// declaration order.
func (r *targetRegistry) each(f func(h *Handler, w *render.Webhook)) {
	if r == nil {
		return
	}
	r.mu.RLock()
	targets := slices.Sorted(maps.Keys(r.targets))
	r.mu.RUnlock()
	for _, t := range targets {
		for _, h := range r.handlers(t) {
			for _, w := range h.hooks {
				f(h, w)
			}
		}
	}
}

// longestDedupWindow is the longest dedup_window of this config's
// handlers that detect repeats (dedup not off); 0 when none does.
func (r *targetRegistry) longestDedupWindow() time.Duration {
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var longest time.Duration
	for _, tb := range r.targets {
		for _, h := range tb.handlers {
			if h.Dedup != dedupOff {
				longest = max(longest, h.dedupWindow())
			}
		}
	}
	return longest
}

// dedupScope is what a handler adds to its dedup keys: nothing while its
// target has one handler block, and the names of its own webhooks when the
// target has several, so an event that two blocks of one target receive is
// queued by each (each queues only its own webhooks) instead of being
// answered by the second as a repeat of the first.
func (r *targetRegistry) dedupScope(h *Handler) string {
	if r == nil {
		return ""
	}
	r.mu.RLock()
	n := 0
	if tb := r.targets[h.Target]; tb != nil {
		n = len(tb.blocks)
	}
	r.mu.RUnlock()
	if n <= 1 {
		return ""
	}
	names := make([]string, len(h.hooks))
	for i, w := range h.hooks {
		names[i] = w.Name()
	}
	return "\x00" + strings.Join(names, ",")
}
