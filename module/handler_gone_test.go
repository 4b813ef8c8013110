package callhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/callhook/caddy-callhook/module/queue"
)

// stallQueue stores nothing: Enqueue waits for its caller to give up.
type stallQueue struct{ benchQueue }

func (*stallQueue) Enqueue(ctx context.Context, _ *queue.Envelope) (queue.EnqueueResult, error) {
	<-ctx.Done()
	return queue.EnqueueResult{}, ctx.Err()
}

// TestClientGoneIsNotAQueueError: a client that disconnects while its
// event is being stored is a warning saying so, not an error blaming the
// queue with a 503.
func TestClientGoneIsNotAQueueError(t *testing.T) {
	h := benchHandler(t, new(stallQueue))
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core)
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest("POST", "/calls/after_call", nil).WithContext(ctx)
	r.Header.Set("Content-Type", "application/json")
	w := &benchWriter{header: http.Header{}}
	cancel() // the client is gone before the queue answers
	if err := benchServe(h, strings.NewReader(strings.Replace(benchEventBody, "%ID%", "gone-1", 1)), w, r); err != nil {
		t.Fatal(err)
	}
	if w.code != statusClientClosed {
		t.Errorf("status %d, want %d (client closed request)", w.code, statusClientClosed)
	}
	for _, e := range logs.All() {
		if e.Level >= zapcore.ErrorLevel {
			t.Errorf("logged at %s: %s", e.Level, e.Message)
		}
	}
	if got := logs.FilterMessageSnippet("client closed the connection").Len(); got != 1 {
		t.Errorf("%d log lines say the client went away, want 1: %v", got, logs.All())
	}
}
