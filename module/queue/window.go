package queue

import (
	"context"
	"time"
)

type dedupWindowKey struct{}

// WithDedupWindow asks Enqueue to treat a dedup key as seen only if it was
// stored less than d ago (the handler's dedup_window). Zero or less leaves
// the backend's default.
func WithDedupWindow(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		return ctx
	}
	return context.WithValue(ctx, dedupWindowKey{}, d)
}

// DedupWindow returns the window set by WithDedupWindow, or def.
func DedupWindow(ctx context.Context, def time.Duration) time.Duration {
	if d, ok := ctx.Value(dedupWindowKey{}).(time.Duration); ok && d > 0 {
		return d
	}
	return def
}
