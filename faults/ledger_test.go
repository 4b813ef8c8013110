//go:build linux

package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// answer is callhook's 200/202 body, or an error body.
type answer struct {
	Event      string `json:"event"`
	Target     string `json:"target"`
	Deliveries []struct {
		ID      string `json:"id"`
		Webhook string `json:"webhook"`
	} `json:"deliveries"`
	Error string `json:"error"`
}

// accepted is one delivery callhook answered for.
type accepted struct {
	call    string
	webhook string
	at      time.Time // when the answer came
}

// ledger is what callhook promised: every delivery ID from a 200/202 answer.
type ledger struct {
	mu        sync.Mutex
	byID      map[string]accepted
	calls     map[string][]string // call_id -> delivery IDs, from its first answer
	sentAt    map[string]time.Time
	rejected  map[string]bool // call_ids answered 503 and never accepted
	conflicts []string        // a repeated event answered with other IDs
	reposts   int             // posts repeated after no answer or a 503
	why       map[string]int  // why posts were repeated
}

func newLedger() *ledger {
	return &ledger{
		byID:     map[string]accepted{},
		calls:    map[string][]string{},
		sentAt:   map[string]time.Time{},
		rejected: map[string]bool{},
		why:      map[string]int{},
	}
}

func (l *ledger) sent(call string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.sentAt[call]; !ok {
		l.sentAt[call] = at
	}
}

// accept records a 200/202 answer. A repeat of an event (after a lost answer
// or a crash) must name the same deliveries as the first answer.
func (l *ledger) accept(call string, a answer, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(a.Deliveries))
	for _, d := range a.Deliveries {
		ids = append(ids, d.ID)
	}
	sort.Strings(ids)
	if prev, ok := l.calls[call]; ok {
		if !slices.Equal(prev, ids) {
			l.conflicts = append(l.conflicts, fmt.Sprintf("%s: first answered %v, then %v", call, prev, ids))
		}
		return
	}
	l.calls[call] = ids
	delete(l.rejected, call)
	for _, d := range a.Deliveries {
		l.byID[d.ID] = accepted{call: call, webhook: d.Webhook, at: at}
	}
}

func (l *ledger) reject(call string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.calls[call]; !ok {
		l.rejected[call] = true
	}
}

func (l *ledger) repost(why string) {
	l.mu.Lock()
	l.reposts++
	l.why[why]++
	l.mu.Unlock()
}

func (l *ledger) repostCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reposts
}

// repostReasons says why posts were repeated, most frequent first.
func (l *ledger) repostReasons() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for why, n := range l.why {
		out = append(out, fmt.Sprintf("%d× %s", n, why))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func (l *ledger) acceptedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}

func (l *ledger) eventCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// poster posts call events to one Caddy.
type poster struct {
	base string
	hc   *http.Client
	led  *ledger
}

func newPoster(t *testing.T, base string, led *ledger) *poster {
	p := &poster{
		base: base,
		// Keep-alive with a bound, like a PBX; a crash breaks the connections.
		hc:  &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		led: led,
	}
	t.Cleanup(p.hc.CloseIdleConnections)
	return p
}

// eventBody is an after_call event; pad makes it bigger.
func eventBody(call string, pad int) string {
	return fmt.Sprintf(`{"call_id":%q,"caller":"+380441234567","duration":42,"note":%q}`, call, strings.Repeat("x", pad))
}

// post sends one event once. err is a transport error (no answer).
func (p *poster) post(call string, pad int) (int, answer, http.Header, error) {
	p.led.sent(call, time.Now())
	res, err := p.hc.Post(p.base+"/", "application/json", strings.NewReader(eventBody(call, pad)))
	if err != nil {
		return 0, answer{}, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, answer{}, nil, err
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return res.StatusCode, a, res.Header, fmt.Errorf("answer %d is not JSON: %q", res.StatusCode, raw)
	}
	if res.StatusCode == http.StatusOK || res.StatusCode == http.StatusAccepted {
		p.led.accept(call, a, time.Now())
	}
	return res.StatusCode, a, res.Header, nil
}

// send posts an event until callhook answers 200 or 202, as a PBX that
// retries would: after a transport error (Caddy is down or was killed) and
// after a 503. Any other answer, or no answer within the deadline, is
// returned as an error.
func (p *poster) send(call string, pad int, deadline time.Time) error {
	for {
		status, a, _, err := p.post(call, pad)
		switch {
		case err == nil && (status == http.StatusOK || status == http.StatusAccepted):
			if len(a.Deliveries) == 0 {
				return fmt.Errorf("event %s: answer %d names no deliveries", call, status)
			}
			return nil
		case err == nil && status != http.StatusServiceUnavailable:
			return fmt.Errorf("event %s: unexpected answer %d: %s", call, status, a.Error)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("event %s: no 200/202 by the deadline; last: status %d, error %v, %s", call, status, err, a.Error)
		}
		why := fmt.Sprintf("%d %s", status, a.Error)
		if err != nil {
			msg := err.Error()
			why = "no answer (" + msg[strings.LastIndex(msg, ": ")+1:] + ")"
			if errors.Is(err, syscall.ECONNREFUSED) {
				why = "connection refused"
			} else if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				why = "connection lost"
			}
		}
		p.led.repost(why)
		time.Sleep(50 * time.Millisecond)
	}
}

// tally is what the receivers got for what the ledger holds.
type tally struct {
	accepted   int // deliveries answered for
	delivered  int // of those, answered 2xx by a receiver at least once
	duplicates int // 2xx answers beyond the first, per delivery
	requests   int // requests the receivers got, any outcome
	missing    []string
	unknown    []string // webhook-ids nobody was answered for
	wrong      []string // requests that do not match what was rendered
	maxDelay   time.Duration
	firstOK    map[string]time.Time
}

// count compares the receivers' requests with the ledger. wrong requests
// are those whose path or headers do not match the webhook the delivery was
// rendered for: every webhook of this suite sends to /<webhook>/<call_id>
// with X-Hook and X-Call headers.
func count(led *ledger, sinks ...*sink) tally {
	led.mu.Lock()
	defer led.mu.Unlock()
	t := tally{accepted: len(led.byID), firstOK: map[string]time.Time{}}
	oks := map[string]int{}
	for _, s := range sinks {
		for _, h := range s.got() {
			t.requests++
			a, ok := led.byID[h.ID]
			if !ok {
				if len(t.unknown) < 20 {
					t.unknown = append(t.unknown, fmt.Sprintf("%s (%s %s)", h.ID, h.Method, h.Path))
				}
				continue
			}
			if want := "/" + a.webhook + "/" + a.call; h.Path != want || h.Hook != a.webhook || h.Call != a.call {
				if len(t.wrong) < 20 {
					t.wrong = append(t.wrong, fmt.Sprintf("%s: got %s %s X-Hook=%q X-Call=%q, rendered for webhook %s of call %s (%s)",
						h.ID, h.Method, h.Path, h.Hook, h.Call, a.webhook, a.call, want))
				}
			}
			if !h.ok() {
				continue
			}
			oks[h.ID]++
			if f, seen := t.firstOK[h.ID]; !seen || h.Start.Before(f) {
				t.firstOK[h.ID] = h.Start
			}
		}
	}
	for id, a := range led.byID {
		n := oks[id]
		if n == 0 {
			t.missing = append(t.missing, id)
			continue
		}
		t.delivered++
		t.duplicates += n - 1
		if d := t.firstOK[id].Sub(a.at); d > t.maxDelay {
			t.maxDelay = d
		}
	}
	sort.Strings(t.missing)
	return t
}

// waitDelivered waits until every accepted delivery got a 2xx somewhere, or
// the deadline passes; it returns the last tally.
func waitDelivered(led *ledger, within time.Duration, sinks ...*sink) tally {
	deadline := time.Now().Add(within)
	for {
		tl := count(led, sinks...)
		if len(tl.missing) == 0 || time.Now().After(deadline) {
			return tl
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// verify fails the test on any lost delivery, any request for a delivery
// nobody was answered for, any request that is not what was rendered, any
// repeated event answered with other IDs, and any delivery sent twice at
// the same time.
func verify(t *testing.T, name string, led *ledger, tl tally, sinks ...*sink) {
	t.Helper()
	if len(tl.missing) > 0 {
		led.mu.Lock()
		var ex []string
		for _, id := range tl.missing[:min(10, len(tl.missing))] {
			a := led.byID[id]
			tries := 0
			for _, s := range sinks {
				for _, h := range s.got() {
					if h.ID == id {
						tries++
					}
				}
			}
			ex = append(ex, fmt.Sprintf("%s (webhook %s, call %s, accepted %s, %d requests seen)", id, a.webhook, a.call, a.at.Format("15:04:05.000"), tries))
		}
		led.mu.Unlock()
		t.Errorf("%s: %d of %d accepted deliveries never arrived (LOST), e.g.:\n  %s", name, len(tl.missing), tl.accepted, strings.Join(ex, "\n  "))
	}
	if len(tl.unknown) > 0 {
		t.Errorf("%s: receivers got deliveries no answer named (a partially stored or re-rendered event?): %v", name, tl.unknown)
	}
	if len(tl.wrong) > 0 {
		t.Errorf("%s: requests that differ from what was rendered at ingest:\n  %s", name, strings.Join(tl.wrong, "\n  "))
	}
	led.mu.Lock()
	conflicts := append([]string(nil), led.conflicts...)
	led.mu.Unlock()
	if len(conflicts) > 0 {
		t.Errorf("%s: a repeated event was answered with other delivery IDs (it would be delivered twice under different webhook-ids): %v", name, conflicts)
	}
	for _, s := range sinks {
		if o, _ := s.overlapping(); len(o) > 0 {
			t.Errorf("%s: the same delivery was sent twice at the same time (%d times), e.g.:\n  %s", name, len(o), strings.Join(o[:min(5, len(o))], "\n  "))
		}
	}
}

// summary prints the scenario's one line, to the test log and to stdout so
// that it shows in `go test` output without -v.
func summary(t *testing.T, name string, tl tally, extra string) {
	t.Helper()
	line := fmt.Sprintf("faults: %s: accepted=%d delivered=%d duplicates=%d max_delay=%s%s",
		name, tl.accepted, tl.delivered, tl.duplicates, tl.maxDelay.Round(10*time.Millisecond), extra)
	t.Log(line)
	fmt.Println(line)
}

// hook is one webhook block sending to <url>/<name>/<call_id> with the
// headers count checks, a short backoff and attempts enough to outlast
// every outage of this suite.
func hook(name, url string, extra ...string) string {
	return fmt.Sprintf(`
		webhook %s {
			on after_call
			url %s/%s/{param.id}
			param id call.call_id
			param note call.note
			header X-Hook %s
			header X-Call {param.id}
			backoff 50ms 500ms
			max_attempts 50
			%s
		}`, name, url, name, name, strings.Join(extra, "\n\t\t\t"))
}

// percentile of sorted durations (p in 0..100).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}
