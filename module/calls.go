package callhook

import (
	"context"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// lookupTimeout bounds the queue reads an answer makes for a repeat.
const lookupTimeout = time.Second

// lookup returns a delivery as stored now, or nil when it cannot be read
// (the answer then leaves its state out).
func (a *App) lookup(ctx context.Context, id string) *queue.Delivery {
	e := a.loadEngine()
	if e == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return nil
	}
	return d
}
