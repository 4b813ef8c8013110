//go:build linux

package faults

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reloadSite is config version v: its webhooks are named v<v>_<letter>, so
// every reload removes the previous version's webhooks and adds new ones,
// and the set changes size (a always, b on even versions, c every third).
// Each version sends its own X-Cfg header, and even versions POST while odd
// ones PUT, so a delivery that went out with a later config's settings is
// caught.
func reloadSite(url string, v int) site {
	method := "POST"
	if v%2 == 1 {
		method = "PUT"
	}
	var b strings.Builder
	for _, letter := range []string{"a", "b", "c"} {
		if (letter == "b" && v%2 != 0) || (letter == "c" && v%3 != 0) {
			continue
		}
		b.WriteString(hook(fmt.Sprintf("v%d_%s", v, letter), url,
			"method "+method, fmt.Sprintf("header X-Cfg v%d", v), fmt.Sprintf("timeout %ds", 5+v%7)))
	}
	return site{hooks: b.String()}
}

// TestReloadsUnderRetries reloads Caddy through the admin API 50 times while
// deliveries are in flight and retrying (the receiver answers 503 half of
// the time), with a config that adds and removes webhooks every time. Queued
// work must go out with the settings it was rendered with (URL, method,
// headers of the config that took the event), nothing may be lost, and the
// process's goroutines and open files must come back to where they were.
func TestReloadsUnderRetries(t *testing.T) {
	const (
		reloads = 50
		// Slack over the baseline after everything settled: small enough
		// that a goroutine or a file leaked per reload (50 of them) fails.
		goroutineSlack = 10
		fileSlack      = 5
	)
	rc := newSink(t, func(int) reply {
		if rand.IntN(2) == 0 {
			return reply{status: http.StatusServiceUnavailable}
		}
		return reply{status: http.StatusOK}
	})
	p := newCaddy(t, portsReload)
	p.start(reloadSite(rc.url(), 0))
	led := newLedger()
	post := newPoster(t, p.base(), led)

	var seq atomic.Int64
	postSome := func(post *poster, n int) {
		for i := 0; i < n; i++ {
			if err := post.send(fmt.Sprintf("reload-%d", seq.Add(1)), 32, time.Now().Add(time.Minute)); err != nil {
				t.Error(err)
				return
			}
		}
	}

	// Warm up: traffic and two reloads, so that everything Caddy creates
	// lazily exists before the baseline is taken.
	postSome(post, 10)
	for v := 1; v <= 2; v++ {
		if err := p.load(reloadSite(rc.url(), v)); err != nil {
			t.Fatal(err)
		}
		postSome(post, 5)
	}
	if tl := waitDelivered(led, 60*time.Second, rc); len(tl.missing) > 0 {
		verify(t, "reload", led, tl, rc)
		t.FailNow()
	}
	baseG, baseF := settle(t, p, post, rc)
	t.Logf("baseline after warm-up: %d goroutines, %d open files", baseG, baseF)

	// Reload while clients keep posting and deliveries keep retrying. Two
	// clients keep their connections alive, as most PBXs do; two open a new
	// one per event, which reaches the new config's server as soon as it
	// serves, possibly before the rest of the new config has started.
	fresh := newPoster(t, p.base(), led)
	fresh.hc.Transport = &http.Transport{DisableKeepAlives: true}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, client := range []*poster{post, post, fresh, fresh} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				postSome(client, 1)
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	var (
		maxPending int
		reloadTime time.Duration
	)
	start := time.Now()
	for v := 3; v < 3+reloads; v++ {
		// How much queued (and mostly retrying) work each reload meets.
		maxPending = max(maxPending, len(count(led, rc).missing))
		t0 := time.Now()
		if err := p.load(reloadSite(rc.url(), v)); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("reload %d: %v", v-2, err)
		}
		reloadTime += time.Since(t0)
		time.Sleep(80 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)

	t0 := time.Now()
	tl := waitDelivered(led, 90*time.Second, rc)
	t.Logf("%d reloads took %s; the queued work was delivered %s later", reloads, elapsed.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	verify(t, "reload", led, tl, rc)
	// X-Cfg and the method must be those of the version the webhook's name
	// comes from, whatever reloads came between ingest and delivery.
	var stale []string
	for _, h := range rc.got() {
		v, _, _ := strings.Cut(strings.TrimPrefix(h.Hook, "v"), "_")
		n, _ := strconv.Atoi(v)
		method := "POST"
		if n%2 == 1 {
			method = "PUT"
		}
		if h.Cfg != "v"+v || h.Method != method {
			stale = append(stale, fmt.Sprintf("%s %s X-Cfg=%s for webhook %s", h.Method, h.Path, h.Cfg, h.Hook))
		}
	}
	if len(stale) > 0 {
		t.Errorf("reload: %d requests went out with another config's settings, e.g. %v", len(stale), stale[:min(5, len(stale))])
	}
	if t.Failed() {
		return
	}

	// One queue and one set of workers across every reload: the queue was
	// opened by the first config only.
	if opened, reused := p.logCount(`"reused":false`), p.logCount(`"reused":true`); opened != 1 || reused != reloads+2 {
		t.Errorf("reload: the queue was opened %d times and reused %d times over %d configs; want opened once and reused by every reload", opened, reused, reloads+3)
	}

	endG, endF := settle(t, p, post, rc)
	if endG > baseG+goroutineSlack {
		t.Errorf("reload: caddy has %d goroutines after %d reloads, %d before (slack %d): a leak per reload?\n%s", endG, reloads, baseG, goroutineSlack, p.goroutineDump())
	}
	if endF > baseF+fileSlack {
		t.Errorf("reload: caddy has %d open files after %d reloads, %d before (slack %d): a leak per reload?", endF, reloads, baseF, fileSlack)
	}
	retried := 0
	for _, n := range retriesPerID(rc) {
		if n > 1 {
			retried++
		}
	}
	if led.reposts > 0 {
		t.Logf("reload: posts repeated: %s", led.repostReasons())
	}
	// A reload must not turn events away: "connection lost" is Caddy
	// closing kept-alive connections of the old config's server (a client
	// retries those), but a 503 from callhook says the new handler ran
	// before its app had started.
	led.mu.Lock()
	turnedAway := 0
	for why, n := range led.why {
		if strings.HasPrefix(why, "503") {
			turnedAway += n
		}
	}
	led.mu.Unlock()
	if turnedAway > 0 {
		t.Errorf("reload: %d events were answered 503 during reloads (%s); callhook must accept events throughout a reload", turnedAway, led.repostReasons())
	}
	summary(t, "reload", tl, fmt.Sprintf(" reloads=%d in %s (avg %s) max_pending_at_reload=%d retried=%d reposts=%d requests=%d goroutines=%d->%d open_files=%d->%d",
		reloads, elapsed.Round(100*time.Millisecond), (reloadTime/reloads).Round(time.Millisecond), maxPending, retried, led.reposts, tl.requests, baseG, endG, baseF, endF))
}

// retriesPerID counts requests per webhook-id.
func retriesPerID(s *sink) map[string]int {
	n := map[string]int{}
	for _, h := range s.got() {
		n[h.ID]++
	}
	return n
}
