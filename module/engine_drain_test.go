package callhook

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/embedded"
	"github.com/callhook/caddy-callhook/module/render"
)

// lingeringPruneQueue is an embedded queue whose prune, once cancelled,
// takes 1.5s more to stop (a large chunk still being written).
type lingeringPruneQueue struct {
	queue.Queue
	pruning chan struct{}
	once    atomic.Bool
}

func (q *lingeringPruneQueue) Prune(ctx context.Context, _ queue.PruneRequest) error {
	if q.once.CompareAndSwap(false, true) {
		close(q.pruning)
	}
	<-ctx.Done()
	time.Sleep(1500 * time.Millisecond)
	return ctx.Err()
}

// TestDestructGivesAttemptsTheWholeDrain: when the last config stops, the
// pool stops taking work at once and its attempts in flight have all of
// drain_timeout, however long the prune takes to stop. Waiting for the
// prune first let workers start new attempts that the drain then cut.
func TestDestructGivesAttemptsTheWholeDrain(t *testing.T) {
	arrived, finished := make(chan struct{}, 2), make(chan struct{}, 2)
	var started atomic.Int32
	var cut atomic.Bool
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // else the server does not see the client go
		started.Add(1)
		arrived <- struct{}{}
		defer func() { finished <- struct{}{} }()
		select {
		case <-time.After(700 * time.Millisecond):
		case <-r.Context().Done():
			cut.Store(true)
		}
	}))
	defer rc.Close()
	inner, err := embedded.Open(embedded.Options{Dir: filepath.Join(t.TempDir(), "queue"), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	q := &lingeringPruneQueue{Queue: inner, pruning: make(chan struct{})}
	s := testSettings(1, time.Second) // one worker: d2 waits for d1
	s.guard = delivery.NewGuard([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	e, err := newEngine("fake", fakeBackend{q}, s)
	if err != nil {
		t.Fatal(err)
	}
	<-q.pruning
	var ds []*queue.Delivery
	for _, id := range []string{"d1", "d2"} {
		ds = append(ds, &queue.Delivery{ID: id, Target: "t", Event: "after_call", CallID: "c1", Webhook: "w", Destination: rc.Listener.Addr().String(),
			Request:   queue.Request{Method: "POST", URL: rc.URL + "/hook", Body: []byte("{}")},
			Policy:    queue.Policy{Timeout: 10 * time.Second, MaxAttempts: 3, BackoffMin: time.Second, BackoffMax: time.Second, MaxAge: time.Hour},
			State:     queue.Pending,
			CreatedAt: time.Now(), NextAttempt: time.Now()})
	}
	if _, err := e.q.Enqueue(context.Background(), &queue.Envelope{Event: queue.Event{ID: "e1", ReceivedAt: time.Now()}, Deliveries: ds}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery was never sent")
	}
	start := time.Now()
	if err := e.Destruct(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Destruct took %s; %d attempts", took, started.Load())
	for range started.Load() {
		<-finished
	}
	if cut.Load() {
		t.Errorf("an attempt was cut by the drain (%d started, Destruct took %s): the pool kept taking work while Destruct waited for the prune", started.Load(), took)
	}
	if took > 2*time.Second {
		t.Errorf("Destruct took %s with drain_timeout 1s", took)
	}
}

// TestReloadForgetsRemovedWebhookFigures: the figures of a webhook the new
// config no longer has are dropped, those of a kept one stay.
func TestReloadForgetsRemovedWebhookFigures(t *testing.T) {
	reg := func(names ...string) *targetRegistry {
		h := &Handler{Target: "shop"}
		for _, n := range names {
			w, err := render.Compile(render.Config{Name: n, On: []string{"after_call"}, URL: "http://127.0.0.1:9/" + n})
			if err != nil {
				t.Fatal(err)
			}
			h.hooks = append(h.hooks, w)
		}
		r := new(targetRegistry)
		if err := r.add(h); err != nil {
			t.Fatal(err)
		}
		return r
	}
	e := &engine{}
	old := reg("kept", "gone")
	e.hooks.record("shop/kept", true, time.Now())
	e.hooks.record("shop/gone", false, time.Now())
	e.forgetRemovedWebhooks(old, reg("kept"))
	if e.hooks.get("shop/gone").attempts != 0 {
		t.Error("the removed webhook's figures are kept")
	}
	if e.hooks.get("shop/kept").attempts != 1 {
		t.Error("the kept webhook's figures were dropped")
	}
}
