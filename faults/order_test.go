//go:build linux

package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Port offsets of the scenarios in this file (see main_test.go).
const (
	portsOrder = 90
	portsPause = 95
)

// orderEvents are one call's events, in the order a PBX sends them.
var orderEvents = []string{"before_call", "call_answered", "after_call"}

// orderRoute is a handle block whose handler takes the event from the path
// and has one ordered webhook that names the event in X-Cfg.
func orderRoute(url string) string {
	return fmt.Sprintf(`
	handle /ord/* {
		callhook ord {
			event {http.request.uri.path.1}
			webhook crm {
				on before_call call_answered after_call
				url %s/crm/{param.id}
				param id call.call_id
				param e event
				header X-Hook crm
				header X-Call {param.id}
				header X-Cfg {param.e}
				backoff 20ms 200ms
				max_attempts 50
				ordered
			}
		}
	}`, url)
}

// postUntilAccepted posts one event until callhook answers 200 or 202, as a
// PBX retries through a crash; it returns the delivery IDs of the answer.
func postUntilAccepted(hc *http.Client, base, event, call string, deadline time.Time) ([]string, error) {
	for {
		res, err := hc.Post(base+"/ord/"+event, "application/json", strings.NewReader(fmt.Sprintf(`{"call_id":%q}`, call)))
		if err == nil {
			raw, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK || res.StatusCode == http.StatusAccepted {
				var a answer
				if err := json.Unmarshal(raw, &a); err != nil {
					return nil, err
				}
				var ids []string
				for _, d := range a.Deliveries {
					ids = append(ids, d.ID)
				}
				return ids, nil
			}
			if res.StatusCode != http.StatusServiceUnavailable {
				return nil, fmt.Errorf("%s of %s: answer %d: %s", event, call, res.StatusCode, raw)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s of %s: not accepted by the deadline (last error %v)", event, call, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOrderUnderKill9: an ordered webhook's deliveries for many calls, with
// a receiver that fails a third of the attempts at random and Caddy killed
// with SIGKILL mid-run: for each call, every attempt of an earlier event
// (retries and the repeat of one whose answer a crash lost, too) starts
// before the first attempt of a later event, and every accepted delivery
// arrives.
func TestOrderUnderKill9(t *testing.T) {
	const (
		calls   = 60
		clients = 6
	)
	rc := newSink(t, func(int) reply {
		if rand.IntN(3) == 0 {
			return reply{status: http.StatusServiceUnavailable}
		}
		return reply{status: http.StatusOK, delay: time.Duration(rand.IntN(10)) * time.Millisecond}
	})
	p := newCaddy(t, portsOrder)
	p.start(site{routes: orderRoute(rc.url()), hooks: hook("unused", rc.url())})
	hc := &http.Client{Timeout: 20 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)

	var (
		mu       sync.Mutex
		accepted = map[string]bool{} // delivery IDs
		wg       sync.WaitGroup
		errs     = make(chan error, clients)
		done     atomic.Int32
	)
	work := make(chan int)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				call := fmt.Sprintf("ord-%d", i)
				for _, ev := range orderEvents {
					ids, err := postUntilAccepted(hc, p.base(), ev, call, time.Now().Add(2*time.Minute))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, id := range ids {
						accepted[id] = true
					}
					mu.Unlock()
					time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				}
				done.Add(1)
			}
		}()
	}
	go func() {
		defer close(work)
		for i := range calls {
			work <- i
		}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for done.Load() < calls/2 {
		if time.Now().After(deadline) {
			t.Fatalf("order: only %d calls posted after 2 minutes", done.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	inflight := rc.active()
	p.kill9()
	t.Logf("kill -9 after %d of %d calls, %d attempts in flight at the receiver", done.Load(), calls, inflight)
	p.restart()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Everything accepted arrives.
	mu.Lock()
	want := len(accepted)
	mu.Unlock()
	if want != calls*len(orderEvents) {
		t.Fatalf("order: %d deliveries accepted for %d calls of %d events", want, calls, len(orderEvents))
	}
	var hits []hit
	for end := time.Now().Add(90 * time.Second); ; {
		hits = rc.got()
		ok := map[string]bool{}
		for _, h := range hits {
			if h.ok() && accepted[h.ID] {
				ok[h.ID] = true
			}
		}
		if len(ok) == want {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("order: %d of %d accepted deliveries arrived", len(ok), want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// In order, per call.
	type span struct{ first, last time.Time }
	byCall := map[string]map[string]*span{}
	attempts := 0
	for _, h := range hits {
		if h.Hook != "crm" {
			continue
		}
		attempts++
		m := byCall[h.Call]
		if m == nil {
			m = map[string]*span{}
			byCall[h.Call] = m
		}
		s := m[h.Cfg]
		if s == nil {
			m[h.Cfg] = &span{h.Start, h.Start}
			continue
		}
		if h.Start.Before(s.first) {
			s.first = h.Start
		}
		if h.Start.After(s.last) {
			s.last = h.Start
		}
	}
	calls2 := slices.Sorted(func(yield func(string) bool) {
		for c := range byCall {
			if !yield(c) {
				return
			}
		}
	})
	for _, c := range calls2 {
		m := byCall[c]
		for i := 1; i < len(orderEvents); i++ {
			earlier, later := m[orderEvents[i-1]], m[orderEvents[i]]
			if earlier == nil || later == nil {
				t.Errorf("call %s: attempts of %s %v, of %s %v", c, orderEvents[i-1], earlier != nil, orderEvents[i], later != nil)
				continue
			}
			if earlier.last.After(later.first) {
				t.Errorf("call %s: an attempt of %s started %s after the first of %s", c, orderEvents[i-1], earlier.last.Sub(later.first), orderEvents[i])
			}
		}
	}
	summary(t, "order", tally{accepted: want, delivered: want, requests: attempts}, fmt.Sprintf(" calls=%d kills=1", calls))
}

// adminPost posts to the admin endpoint and returns the status and body.
func (p *caddyProc) adminPost(path string) (int, []byte, error) {
	res, err := p.admin.Post(p.adminBase()+path, "application/json", bytes.NewReader(nil))
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, body, err
}

// webhookState reads one webhook's state from GET /callhook/webhooks.
func (p *caddyProc) webhookState(target, webhook string) (string, error) {
	body, err := p.adminGet("/callhook/webhooks")
	if err != nil {
		return "", err
	}
	var out struct {
		Webhooks []struct {
			Target, Webhook, State string
		} `json:"webhooks"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", err
	}
	for _, w := range out.Webhooks {
		if w.Target == target && w.Webhook == webhook {
			return w.State, nil
		}
	}
	return "", fmt.Errorf("webhook %s/%s is not listed: %s", target, webhook, body)
}

// TestPauseSurvivesRestart: a webhook paused by disable_after stays paused
// across a kill -9 and restart (nothing is attempted, its delivery stays
// pending), and its delivery goes out once it is resumed by hand.
func TestPauseSurvivesRestart(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	rc := newSink(t, func(int) reply {
		if failing.Load() {
			return reply{status: http.StatusServiceUnavailable}
		}
		return reply{status: http.StatusNoContent}
	})
	p := newCaddy(t, portsPause)
	p.start(site{hooks: hook("crm", rc.url(), "disable_after 300ms", "backoff 20ms 50ms")})
	led := newLedger()
	post := newPoster(t, p.base(), led)
	if err := post.send("pause-1", 0, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := p.webhookState("default", "crm")
			if err == nil && st == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("webhook crm is %q (%v), want %s", st, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitState("paused")
	// The pause is stored (and listed) just before it is logged.
	const pausedLine = `"msg":"webhook paused: its deliveries stay pending and none is attempted until it is resumed"`
	for deadline := time.Now().Add(5 * time.Second); p.logCount(pausedLine) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // attempts in flight when it paused finish
	if n := p.logCount(pausedLine); n != 1 {
		t.Errorf("the pause was logged %d times, want once", n)
	}
	before := len(rc.got())

	p.kill9()
	p.restart()
	waitState("paused")
	failing.Store(false)
	time.Sleep(time.Second)
	if n := len(rc.got()); n != before {
		t.Fatalf("%d attempts of a paused webhook after the restart", n-before)
	}
	if status, body, err := p.adminPost("/callhook/webhooks/default/crm/resume"); err != nil || status != http.StatusOK {
		t.Fatalf("resume: %d %s %v", status, body, err)
	}
	tl := waitDelivered(led, 30*time.Second, rc)
	verify(t, "pause", led, tl, rc)
	summary(t, "pause", tl, fmt.Sprintf(" attempts_before_pause=%d", before))
}
