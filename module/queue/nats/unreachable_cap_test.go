package nats

import (
	"fmt"
	"testing"
	"time"
)

// TestSetMaxPendingWhileOpening: a max_pending set by a reload while the
// background open has the queue but has not published it yet is applied,
// not lost until the next reload.
func TestSetMaxPendingWhileOpening(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	q, err := OpenOrWait(Options{URLs: []string{fmt.Sprintf("nats://127.0.0.1:%d", port)}, Bucket: bucketFor(dir), MaxPending: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	w := q.(*waiting)
	testHookOpened = func(w *waiting) { w.SetMaxPending(7) }
	defer func() { testHookOpened = nil }()
	s, err := startServer(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the queue did not open")
	}
	if got := w.q.Load().maxPending.Load(); got != 7 {
		t.Errorf("the open queue's max_pending is %d, want 7 (set while it opened)", got)
	}
}
