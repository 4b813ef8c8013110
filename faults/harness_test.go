//go:build linux

package faults

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHarness checks the checks: the scenarios pass only if what they count
// can fail, so a lost, foreign, misrouted or overlapping delivery must show
// up. It needs no Caddy.
func TestHarness(t *testing.T) {
	send := func(t *testing.T, s *sink, id, path, hookName, call string) {
		req, _ := http.NewRequest(http.MethodPost, s.url()+path, nil)
		req.Header.Set("webhook-id", id)
		req.Header.Set("X-Hook", hookName)
		req.Header.Set("X-Call", call)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		res.Body.Close()
	}
	acceptOne := func(led *ledger, call string, ids ...string) {
		var a answer
		for i, id := range ids {
			a.Deliveries = append(a.Deliveries, struct {
				ID      string `json:"id"`
				Webhook string `json:"webhook"`
			}{id, []string{"crm", "erp"}[i]})
		}
		led.accept(call, a, time.Now())
	}

	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s *sink, led *ledger)
		want func(tl tally) bool
	}{
		{
			name: "all delivered, one duplicate",
			run: func(t *testing.T, s *sink, led *ledger) {
				acceptOne(led, "c1", "id1", "id2")
				send(t, s, "id1", "/crm/c1", "crm", "c1")
				send(t, s, "id2", "/erp/c1", "erp", "c1")
				send(t, s, "id2", "/erp/c1", "erp", "c1")
			},
			want: func(tl tally) bool {
				return tl.accepted == 2 && tl.delivered == 2 && tl.duplicates == 1 && len(tl.missing) == 0
			},
		},
		{
			name: "lost",
			run: func(t *testing.T, s *sink, led *ledger) {
				acceptOne(led, "c1", "id1", "id2")
				send(t, s, "id1", "/crm/c1", "crm", "c1")
			},
			want: func(tl tally) bool { return len(tl.missing) == 1 && tl.missing[0] == "id2" },
		},
		{
			name: "answered 503 is not delivered",
			run: func(t *testing.T, s *sink, led *ledger) {
				s.setPolicy(func(int) reply { return reply{status: http.StatusServiceUnavailable} })
				acceptOne(led, "c1", "id1")
				send(t, s, "id1", "/crm/c1", "crm", "c1")
			},
			want: func(tl tally) bool { return tl.delivered == 0 && len(tl.missing) == 1 && tl.requests == 1 },
		},
		{
			name: "unknown id",
			run: func(t *testing.T, s *sink, led *ledger) {
				send(t, s, "ghost", "/crm/c9", "crm", "c9")
			},
			want: func(tl tally) bool { return len(tl.unknown) == 1 },
		},
		{
			name: "sent somewhere it was not rendered for",
			run: func(t *testing.T, s *sink, led *ledger) {
				acceptOne(led, "c1", "id1")
				send(t, s, "id1", "/erp/c1", "crm", "c1")
			},
			want: func(tl tally) bool { return len(tl.wrong) == 1 },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, nil)
			led := newLedger()
			tc.run(t, s, led)
			if tl := count(led, s); !tc.want(tl) {
				t.Errorf("count = %+v", tl)
			}
		})
	}

	t.Run("repeat answered with other ids", func(t *testing.T) {
		led := newLedger()
		acceptOne(led, "c1", "id1")
		acceptOne(led, "c1", "id1")
		if len(led.conflicts) != 0 {
			t.Errorf("the same ids again is not a conflict: %v", led.conflicts)
		}
		acceptOne(led, "c1", "id7")
		if len(led.conflicts) != 1 {
			t.Errorf("conflicts = %v, want one", led.conflicts)
		}
	})

	t.Run("overlapping attempts", func(t *testing.T) {
		s := newSink(t, func(int) reply { return reply{status: http.StatusOK, delay: 300 * time.Millisecond} })
		var wg sync.WaitGroup
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				send(t, s, "same", "/crm/c1", "crm", "c1")
			}()
		}
		wg.Wait()
		send(t, s, "other", "/crm/c2", "crm", "c2")
		if o, _ := s.overlapping(); len(o) != 1 || !strings.HasPrefix(o[0], "POST /crm/c1 ") {
			t.Errorf("overlaps = %v, want one for /crm/c1", o)
		}
	})

	t.Run("retry after an abandoned attempt", func(t *testing.T) {
		// The first attempt times out at the sender while the sink still
		// waits to answer; the retry is not a concurrent send.
		slow := true
		var mu sync.Mutex
		s := newSink(t, func(int) reply {
			mu.Lock()
			defer mu.Unlock()
			if slow {
				slow = false
				return reply{status: http.StatusOK, delay: time.Second}
			}
			return reply{status: http.StatusOK}
		})
		req, _ := http.NewRequest(http.MethodPost, s.url()+"/crm/c1", nil)
		req.Header.Set("webhook-id", "same")
		if _, err := (&http.Client{Timeout: 100 * time.Millisecond}).Do(req); err == nil {
			t.Fatal("the slow attempt did not time out")
		}
		send(t, s, "same", "/crm/c1", "crm", "c1")
		time.Sleep(100 * time.Millisecond)
		if o, _ := s.overlapping(); len(o) != 0 {
			t.Errorf("overlaps = %v, want none", o)
		}
	})

	t.Run("retry after the sender's timeout, hang-up not seen", func(t *testing.T) {
		// The sink answers the first attempt late, never having noticed that
		// its sender gave up at the webhook's timeout; the retry that came
		// meanwhile is only concurrent if the sink does not know that
		// timeout.
		for _, tc := range []struct {
			timeout time.Duration
			want    int
		}{{0, 1}, {100 * time.Millisecond, 0}} {
			s := newSink(t, func(n int) reply {
				if n == 1 {
					return reply{status: http.StatusOK, delay: 400 * time.Millisecond}
				}
				return reply{status: http.StatusOK}
			})
			s.timeout = tc.timeout
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				send(t, s, "same", "/crm/c1", "crm", "c1")
			}()
			time.Sleep(200 * time.Millisecond)
			send(t, s, "same", "/crm/c1", "crm", "c1")
			wg.Wait()
			if o, _ := s.overlapping(); len(o) != tc.want {
				t.Errorf("timeout %s: overlaps = %v, want %d", tc.timeout, o, tc.want)
			}
		}
	})

	t.Run("down, black hole, up", func(t *testing.T) {
		s := newSink(t, nil)
		c := &http.Client{Timeout: 300 * time.Millisecond}
		s.down()
		if _, err := c.Get(s.url()); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("down: err = %v, want connection refused", err)
		}
		s.blackhole()
		if _, err := c.Get(s.url()); err == nil || !strings.Contains(err.Error(), "Timeout") {
			t.Errorf("black hole: err = %v, want a timeout", err)
		}
		if s.heldConns() != 1 {
			t.Errorf("black hole held %d connections, want 1", s.heldConns())
		}
		s.up()
		res, err := c.Get(s.url())
		if err != nil {
			t.Fatalf("up: %v", err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent {
			t.Errorf("up: status %d", res.StatusCode)
		}
	})
}
