//go:build linux

package faults

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// slowSite has webhooks whose attempts may take long (timeout 30s), so a
// lease lasts more than a minute (timeout plus the pool's 30s). Deliveries
// that arrive well within that after a restart were put back by the
// shutdown or by the queue's recovery at start, not by a lease running out.
func slowSite(url string, globals string) site {
	return site{
		globals: globals,
		hooks:   hook("crm", url, "timeout 30s") + hook("erp", url, "timeout 30s") + hook("billing", url, "timeout 30s"),
	}
}

// leaseWait bounds how long deliveries may take to arrive after a restart
// in the shutdown and lease scenarios: well under the 60s+ a lease lasts.
const leaseWait = 40 * time.Second

// TestGracefulShutdown stops Caddy with SIGTERM while attempts are in flight
// against a receiver that takes 2s to answer, with drain_timeout 1s. The
// process must exit within a bound, and after a restart against a fast
// receiver everything accepted must arrive, the interrupted attempts first
// among them and without waiting for their leases to run out.
func TestGracefulShutdown(t *testing.T) {
	const (
		events = 40
		drain  = time.Second
		// The bound on exiting: the drain, plus time to close listeners,
		// record the released leases and flush the log. Generous, because
		// the host is shared; a shutdown that waits for the receiver (2s
		// per attempt, 120 of them) or hangs would blow it.
		exitBound = drain + 9*time.Second
	)
	rc := newSink(t, func(int) reply { return reply{status: http.StatusOK, delay: 2 * time.Second} })
	p := newCaddy(t, portsShutdown)
	p.start(slowSite(rc.url(), fmt.Sprintf("drain_timeout %s\n\t\tworkers 16\n\t\tper_destination 16", drain)))
	led := newLedger()
	post := newPoster(t, p.base(), led)
	for i := 0; i < events; i++ {
		if err := post.send(fmt.Sprintf("term-%d", i), 32, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for a full set of attempts in flight, then stop.
	deadline := time.Now().Add(30 * time.Second)
	for rc.active() < 16 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	inflight := rc.active()
	if inflight == 0 {
		t.Fatal("shutdown: no attempt was in flight; the scenario tests nothing")
	}
	post.hc.CloseIdleConnections()
	took, code := p.terminate(exitBound)
	if code != 0 {
		t.Errorf("shutdown: caddy exited with code %d after SIGTERM", code)
	}
	interrupted := 0
	for _, h := range rc.got() {
		if !h.ok() {
			interrupted++
		}
	}
	released := p.logCount("attempt interrupted by shutdown")
	before := count(led, rc).delivered

	rc.setPolicy(okReply)
	restartAt := time.Now()
	p.restart()
	tl := waitDelivered(led, leaseWait, rc)
	verify(t, "shutdown", led, tl, rc)
	summary(t, "shutdown", tl, fmt.Sprintf(" exit_after_sigterm=%s drain_timeout=%s inflight_at_sigterm=%d interrupted=%d released_in_log=%d delivered_before_stop=%d rest_delivered_within=%s",
		took.Round(10*time.Millisecond), drain, inflight, interrupted, released, before, lastArrival(tl).Sub(restartAt).Round(10*time.Millisecond)))
}

// lastArrival is the latest first 2xx of any delivery.
func lastArrival(tl tally) time.Time {
	var last time.Time
	for _, at := range tl.firstOK {
		if at.After(last) {
			last = at
		}
	}
	return last
}
