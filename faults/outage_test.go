//go:build linux

package faults

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestReceiverOutage takes one receiver through the ways receivers fail —
// connection refused (nothing listens on its port), a black hole (TCP
// accepted, never answered), 503 for a while — and then heals it, while
// every event also goes to a second, healthy receiver. Everything must
// arrive after the recovery, and the healthy receiver must keep getting its
// deliveries while the bad one swallows connections: one dead receiver must
// not hold up the others. The healthy receiver's latency (event sent to
// received) is printed, not asserted.
func TestReceiverOutage(t *testing.T) {
	const phase = 2 * time.Second
	bad := newSink(t, func(int) reply { return reply{status: http.StatusServiceUnavailable} })
	good := newSink(t, nil)
	bad.down()

	p := newCaddy(t, portsOutage)
	p.start(site{
		globals: "workers 16\n\t\tper_destination 4",
		hooks:   hook("bad", bad.url(), "timeout 5s") + hook("good", good.url()),
	})
	led := newLedger()
	post := newPoster(t, p.base(), led)

	// phaseOf is the receiver's state when each event was sent.
	const (
		refused = iota
		blackhole
		unavailable
		healthy
	)
	names := []string{"refused", "blackhole", "503", "healthy"}
	var (
		mu      sync.Mutex
		cur     = refused
		phaseOf = map[string]int{}
	)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			call := fmt.Sprintf("outage-%d", i)
			mu.Lock()
			phaseOf[call] = cur
			mu.Unlock()
			if err := post.send(call, 32, time.Now().Add(time.Minute)); err != nil {
				done <- err
				return
			}
			time.Sleep(40 * time.Millisecond)
		}
	}()
	set := func(ph int) time.Time {
		mu.Lock()
		cur = ph
		mu.Unlock()
		return time.Now()
	}

	time.Sleep(phase)
	holeAt := set(blackhole)
	bad.blackhole()
	time.Sleep(phase)
	held := bad.heldConns()
	set(unavailable)
	bad.up() // closes the black hole's connections, then answers 503
	holeEnd := time.Now()
	time.Sleep(phase)
	bad.setPolicy(okReply)
	healedAt := set(healthy)
	time.Sleep(phase / 2)
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	tl := waitDelivered(led, 60*time.Second, bad, good)
	verify(t, "outage", led, tl, bad, good)
	if held == 0 {
		t.Errorf("outage: the black hole swallowed no connection; the phase tested nothing")
	}

	// Healthy deliveries of events sent while the other receiver was a
	// black hole must have arrived while it still was one, give or take a
	// margin for events sent at the very end of the phase. If the black hole
	// took every worker, they would wait until its connections closed.
	const margin = time.Second
	led.mu.Lock()
	var (
		lat      []time.Duration
		late     []string
		byPhase  = map[int]int{}
		lastBad  time.Time
		duringBH int
		inHole   int // healthy deliveries that arrived while the hole held
	)
	for id, a := range led.byID {
		first, ok := tl.firstOK[id]
		if !ok {
			continue
		}
		ph := phaseOf[a.call]
		if a.webhook == "bad" {
			byPhase[ph]++
			if first.After(lastBad) {
				lastBad = first
			}
			continue
		}
		sent := led.sentAt[a.call]
		lat = append(lat, first.Sub(sent))
		if first.After(holeAt) && first.Before(holeEnd) {
			inHole++
		}
		if ph == blackhole && sent.Before(holeEnd.Add(-margin)) {
			duringBH++
			if !first.Before(holeEnd) {
				late = append(late, fmt.Sprintf("%s sent %s into the black hole, arrived %s after it ended",
					a.call, sent.Sub(holeAt).Round(time.Millisecond), first.Sub(holeEnd).Round(time.Millisecond)))
			}
		}
	}
	led.mu.Unlock()
	if duringBH == 0 || inHole == 0 {
		t.Errorf("outage: %d events sent and %d healthy deliveries made during the black hole; the phase tested nothing", duringBH, inHole)
	}
	if len(late) > 0 {
		t.Errorf("outage: %d of %d healthy deliveries of events sent during the black hole waited for the bad receiver, e.g. %v", len(late), duringBH, late[:min(5, len(late))])
	}
	slices.Sort(lat)
	var perPhase string
	for ph := refused; ph <= healthy; ph++ {
		perPhase += fmt.Sprintf("%s:%d ", names[ph], byPhase[ph])
	}
	t.Logf("bad receiver's deliveries by the phase their event was sent in: %s; the black hole held %d connections; %d healthy deliveries arrived meanwhile", perPhase, held, inHole)
	summary(t, "outage", tl, fmt.Sprintf(" healthy_p50=%s healthy_p99=%s healthy_max=%s bad_drained=%s_after_recovery blackholed_conns=%d requests=%d",
		percentile(lat, 50).Round(time.Millisecond), percentile(lat, 99).Round(time.Millisecond), percentile(lat, 100).Round(time.Millisecond),
		lastBad.Sub(healedAt).Round(10*time.Millisecond), held, tl.requests))
}
