//go:build linux

package faults

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestKilledMidAttempt kills Caddy with SIGKILL while attempts are in flight
// against a slow receiver: the deliveries are leased in the queue file by a
// process that is gone. After a restart they must be retried (not lost),
// without waiting for their leases to run out, and no delivery may ever be
// sent twice at the same time: the receiver tracks requests in flight per
// webhook-id and fails the test on an overlap. A request whose sender died
// ends when its connection closes, as it would for any receiver; a retry
// that arrives before the receiver noticed that is not a concurrent send.
func TestKilledMidAttempt(t *testing.T) {
	const events = 20
	rc := newSink(t, func(int) reply { return reply{status: http.StatusOK, delay: 2 * time.Second} })
	p := newCaddy(t, portsLease)
	p.start(slowSite(rc.url(), "workers 16\n\t\tper_destination 16"))
	led := newLedger()
	post := newPoster(t, p.base(), led)
	for i := 0; i < events; i++ {
		if err := post.send(fmt.Sprintf("lease-%d", i), 32, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}

	// Let a first round of attempts finish and a second one start, so the
	// kill finds some deliveries done, some leased mid-attempt, the rest
	// pending.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !(count(led, rc).delivered >= 8 && rc.active() >= 8) {
		time.Sleep(10 * time.Millisecond)
	}
	inflight := rc.active()
	if inflight == 0 {
		t.Fatal("lease: no attempt was in flight at the kill; the scenario tests nothing")
	}
	p.kill9()
	before := count(led, rc).delivered

	// The receiver stays slow: recovered deliveries are in flight again
	// while the queue's recovery and the dispatcher run, which is when a
	// delivery leased twice would be sent twice at once.
	restartAt := time.Now()
	p.restart()
	tl := waitDelivered(led, leaseWait, rc)
	verify(t, "lease", led, tl, rc)
	recovered := p.logCount(`"msg":"queue opened; pending deliveries, including any a previous process was attempting, are due again"`)
	if recovered == 0 {
		t.Errorf("lease: the restart did not report recovering the leases the killed process held")
	}
	concurrent, afterAbandoned := rc.overlapping()
	summary(t, "lease", tl, fmt.Sprintf(" inflight_at_kill=%d delivered_before_kill=%d concurrent_sends=%d resent_before_hangup_seen=%d rest_delivered_within=%s requests=%d",
		inflight, before, len(concurrent), afterAbandoned, lastArrival(tl).Sub(restartAt).Round(10*time.Millisecond), tl.requests))
}
