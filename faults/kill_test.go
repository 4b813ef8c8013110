//go:build linux

package faults

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestKill9UnderLoad posts events with three webhooks each from several
// clients while deliveries flow (some receivers answers are 503, so retries
// are in flight too), kills Caddy with SIGKILL twice along the way and
// restarts it. Clients repeat an event that got no answer, as a PBX would.
// Every delivery any answer named must arrive; a repeated event must be
// answered with the same delivery IDs; duplicates can only be a delivery
// sent again under its own webhook-id.
func TestKill9UnderLoad(t *testing.T) {
	const (
		events  = 450
		clients = 8
	)
	rc := newSink(t, func(int) reply {
		if rand.IntN(10) == 0 {
			return reply{status: http.StatusServiceUnavailable}
		}
		return reply{status: http.StatusOK, delay: time.Duration(rand.IntN(20)) * time.Millisecond}
	})
	p := newCaddy(t, portsKill9)
	p.start(site{hooks: hook("crm", rc.url()) + hook("erp", rc.url(), "method PUT") + hook("billing", rc.url(), "format xml")})

	led := newLedger()
	post := newPoster(t, p.base(), led)
	work := make(chan int)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := post.send(fmt.Sprintf("kill9-%d", i), 64, time.Now().Add(2*time.Minute)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	go func() {
		defer close(work)
		for i := 0; i < events; i++ {
			work <- i
		}
	}()

	// Kill at a third and two thirds of the events, while clients post.
	kills := 0
	for _, at := range []int{events / 3, 2 * events / 3} {
		deadline := time.Now().Add(2 * time.Minute)
		for led.eventCount() < at {
			if time.Now().After(deadline) {
				t.Fatalf("kill9: only %d events answered after 2 minutes", led.eventCount())
			}
			time.Sleep(5 * time.Millisecond)
		}
		inflight := rc.active()
		p.kill9()
		kills++
		t.Logf("kill -9 #%d after %d accepted events, %d attempts in flight at the receiver", kills, led.eventCount(), inflight)
		p.restart()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := led.eventCount(); n != events {
		t.Fatalf("%d of %d events were answered", n, events)
	}

	tl := waitDelivered(led, 60*time.Second, rc)
	verify(t, "kill9", led, tl, rc)
	if tl.accepted != 3*events {
		t.Errorf("kill9: %d deliveries accepted for %d events with 3 webhooks each", tl.accepted, events)
	}
	recovered := p.logCount(`"msg":"recovered leased deliveries"`)
	if led.reposts > 0 {
		t.Logf("kill9: posts repeated: %s", led.repostReasons())
	}
	summary(t, "kill9", tl, fmt.Sprintf(" kills=%d reposts=%d lease_recoveries=%d requests=%d", kills, led.reposts, recovered, tl.requests))
}
