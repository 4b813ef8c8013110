package callhook

import (
	"errors"
	"fmt"
	"net/http"
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
