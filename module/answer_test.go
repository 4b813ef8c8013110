package callhook

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/callhook/caddy-callhook/module/queue"
)

func TestQueueErrorStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: 5 waiting", queue.ErrFull), http.StatusServiceUnavailable},
		{fmt.Errorf("write: %w", syscall.ENOSPC), http.StatusServiceUnavailable},
		{queue.ErrClosed, http.StatusServiceUnavailable},
		{errNotStarted, http.StatusServiceUnavailable},
		// would fail again: never "retry later"
		{errors.New("dedup key is 2000 bytes; at most 1024 are allowed"), http.StatusInternalServerError},
		{errors.New(`delivery id "x" already exists`), http.StatusInternalServerError},
	}
	for _, tt := range tests {
		if got, _ := queueErrorStatus(tt.err); got != tt.want {
			t.Errorf("%v: %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestDeadReason: a sender sees a render error redacted, and never the
// error of a delivery that died sending.
func TestDeadReason(t *testing.T) {
	a := new(App)
	render := &queue.Delivery{ID: "d1", State: queue.Dead,
		Request:   queue.Request{URL: "https://crm.example/hook?api_key=k-Secret-9x"},
		LastError: `webhook crm: url https://crm.example/hook?api_key=k-Secret-9x: too long`}
	if got := a.deadReason(render); strings.Contains(got, "k-Secret-9x") || !strings.Contains(got, "too long") {
		t.Errorf("render error shown as %q: want it redacted and kept", got)
	}
	sent := &queue.Delivery{ID: "d2", State: queue.Dead, AttemptCount: 3, LastError: "blocked by SSRF guard: 10.1.2.3 is private"}
	if got := a.deadReason(sent); strings.Contains(got, "10.1.2.3") || !strings.Contains(got, "3 attempt") {
		t.Errorf("send error shown as %q", got)
	}
}
