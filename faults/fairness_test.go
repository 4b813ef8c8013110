//go:build linux

package faults

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFairness is SPEC §6's promise on a real process: a receiver that
// holds every request, with 100 000 deliveries due for it, must not delay a
// healthy receiver's deliveries. 2 500 events fan out to 40 webhooks on the
// black-holed receiver; then events for a healthy receiver (another target)
// must each arrive promptly. Their latency is printed; every one must
// arrive, and none may wait for the black hole.
func TestFairness(t *testing.T) {
	const (
		holdHooks  = 40
		holdEvents = 2500 // x 40 webhooks = 100 000 deliveries
		goodEvents = 200
	)
	hold := newSink(t, nil)
	hold.blackhole()
	good := newSink(t, nil)

	var hooks strings.Builder
	for i := range holdHooks {
		hooks.WriteString(hook(fmt.Sprintf("hold%02d", i), hold.url(), "timeout 5m"))
	}
	p := newCaddy(t, portsFairness)
	p.start(site{
		globals: "workers 32\n\t\tper_destination 8",
		hooks:   hooks.String(),
		routes: `handle /good/* {
		callhook {
			target healthy
			event after_call
			` + hook("good", good.url()) + `
		}
	}`,
	})

	// Fill the black hole's backlog, 16 senders at a time.
	holdLed := newLedger()
	holdPost := newPoster(t, p.base(), holdLed)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < holdEvents; i += 16 {
				if err := holdPost.send(fmt.Sprintf("hold-%d", i), 0, time.Now().Add(time.Minute)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	queued := holdLed.acceptedCount()
	fill := time.Since(start)
	if queued != holdEvents*holdHooks {
		t.Fatalf("fairness: %d deliveries queued for the black hole, want %d", queued, holdEvents*holdHooks)
	}
	for deadline := time.Now().Add(10 * time.Second); hold.heldConns() < 8; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fairness: the black hole holds %d connections, want its per-destination share of 8", hold.heldConns())
		}
	}

	// Now the healthy receiver's events, 50 a second.
	led := newLedger()
	post := newPoster(t, p.base()+"/good", led)
	for i := range goodEvents {
		if err := post.send(fmt.Sprintf("good-%d", i), 0, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tl := waitDelivered(led, 30*time.Second, good)
	verify(t, "fairness", led, tl, good)

	led.mu.Lock()
	var lat []time.Duration
	var slow []string // the events that took over 500 ms, in the order sent
	for id, a := range led.byID {
		if first, ok := tl.firstOK[id]; ok {
			d := first.Sub(led.sentAt[a.call])
			lat = append(lat, d)
			if d > 500*time.Millisecond {
				slow = append(slow, fmt.Sprintf("%s sent %s after the first took %s", a.call,
					led.sentAt[a.call].Sub(led.sentAt["good-0"]).Round(time.Millisecond), d.Round(time.Millisecond)))
			}
		}
	}
	led.mu.Unlock()
	slices.Sort(lat)
	slices.Sort(slow)
	if len(slow) > 0 {
		t.Logf("fairness: healthy events delivered after over 500 ms: %s", strings.Join(slow, "; "))
	}
	if len(lat) != goodEvents {
		t.Fatalf("fairness: %d of %d healthy deliveries arrived", len(lat), goodEvents)
	}
	// A starved receiver waits for minutes (the black hole's 5m timeout);
	// a lease that walked the backlog would slow every delivery, the
	// median with them. Idle, p50 is about 2 ms and p99 about 30 ms; on a
	// 2-core CI machine running other suites beside this one, p99 reached
	// 2.5 s (a few events that waited for the CPU), hence the margins.
	if p50 := percentile(lat, 50); p50 > 250*time.Millisecond {
		t.Errorf("fairness: healthy deliveries' median latency is %s with %d deliveries waiting for a black hole", p50, queued)
	}
	if p99 := percentile(lat, 99); p99 > 5*time.Second {
		t.Errorf("fairness: healthy deliveries' p99 latency is %s with %d deliveries waiting for a black hole", p99, queued)
	}
	summary(t, "fairness", tl, fmt.Sprintf(" backlog=%d filled_in=%s held_conns=%d healthy_p50=%s healthy_p99=%s healthy_max=%s",
		queued, fill.Round(time.Millisecond), hold.heldConns(),
		percentile(lat, 50).Round(100*time.Microsecond), percentile(lat, 99).Round(100*time.Microsecond), percentile(lat, 100).Round(100*time.Microsecond)))
}
