package embedded

import (
	"testing"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/queuetest"
)

// TestConformance runs the backend contract's suite on the embedded queue.
func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, dir string, o queuetest.Options) queue.Queue {
		q, err := Open(Options{Dir: dir, MaxPending: o.MaxPending, DedupWindow: o.DedupWindow, MinFreeBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		return q
	})
}
