package callhook

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

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
	return nil
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
