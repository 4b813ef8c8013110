package natswq

import (
	"testing"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/queuetest"
)

// TestConformance runs the backend contract's suite against an in-process
// JetStream server (or the cluster CALLHOOK_NATS_CLUSTER names), one node
// owning all four partitions.
func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, dir string, o queuetest.Options) queue.Queue {
		return openTest(t, dir, Options{MaxPending: o.MaxPending, DedupWindow: o.DedupWindow})
	})
}
