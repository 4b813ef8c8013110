//go:build linux

package faults

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rejection is one 503 answer and what came with it.
type rejection struct {
	call       string
	retryAfter string
	ctype      string
	errMsg     string
}

// checkRejections fails on a 503 without Retry-After or a JSON error.
func checkRejections(t *testing.T, name string, rs []rejection, wantInError string) {
	t.Helper()
	for _, r := range rs {
		if _, err := retryAfterSeconds(r.retryAfter); err != nil {
			t.Errorf("%s: 503 for %s has Retry-After %q, want seconds", name, r.call, r.retryAfter)
		}
		if r.ctype != "application/json" || !strings.Contains(r.errMsg, wantInError) {
			t.Errorf("%s: 503 for %s: Content-Type %q, error %q; want a JSON error mentioning %q", name, r.call, r.ctype, r.errMsg, wantInError)
		}
	}
}

// postBurst posts events concurrently, once each, and sorts the answers
// into accepted (the ledger) and 503s. Other answers fail the test.
func postBurst(t *testing.T, post *poster, prefix string, n, pad int) []rejection {
	t.Helper()
	var (
		mu  sync.Mutex
		rs  []rejection
		wg  sync.WaitGroup
		ids = make(chan int)
	)
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				call := fmt.Sprintf("%s-%d", prefix, i)
				status, a, h, err := post.post(call, pad)
				switch {
				case err != nil:
					t.Errorf("posting %s: %v", call, err)
				case status == http.StatusServiceUnavailable:
					post.led.reject(call)
					mu.Lock()
					rs = append(rs, rejection{call: call, retryAfter: h.Get("Retry-After"), ctype: h.Get("Content-Type"), errMsg: a.Error})
					mu.Unlock()
				case status != http.StatusAccepted:
					t.Errorf("posting %s: answer %d %s", call, status, a.Error)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		ids <- i
	}
	close(ids)
	wg.Wait()
	return rs
}

// partial lists events with some but not all of their webhooks delivered,
// and rejected events any of whose webhooks reached a receiver.
func partial(led *ledger, hooks int, sinks ...*sink) []string {
	byCall := map[string]map[string]bool{}
	for _, s := range sinks {
		for _, h := range s.got() {
			if byCall[h.Call] == nil {
				byCall[h.Call] = map[string]bool{}
			}
			byCall[h.Call][h.Hook] = true
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	var out []string
	for call := range led.calls {
		if n := len(byCall[call]); n != hooks {
			out = append(out, fmt.Sprintf("accepted %s reached %d of %d webhooks", call, n, hooks))
		}
	}
	for call := range led.rejected {
		if n := len(byCall[call]); n != 0 {
			out = append(out, fmt.Sprintf("rejected %s reached %d webhooks", call, n))
		}
	}
	return out
}

// TestQueueCap fills the queue to its max_pending with the receiver down.
// Over the cap, ingest must answer 503 with Retry-After and a JSON error,
// and store nothing of the event: an event has three webhooks and the cap
// is not a multiple of three, so a partial store would show. When the
// receiver comes back the queue drains and ingest accepts again by itself.
func TestQueueCap(t *testing.T) {
	const (
		maxPending = 32 // 10 events of 3 fit, the 11th would need 33
		hooks      = 3
	)
	rc := newSink(t, nil)
	rc.down()
	p := newCaddy(t, portsCap)
	p.start(site{
		queue: fmt.Sprintf("max_pending %d", maxPending),
		hooks: hook("crm", rc.url()) + hook("erp", rc.url()) + hook("billing", rc.url()),
	})
	led := newLedger()
	post := newPoster(t, p.base(), led)

	rs := postBurst(t, post, "cap", 40, 32)
	full := led.eventCount()
	if full != maxPending/hooks {
		t.Errorf("cap: %d events accepted with max_pending %d and %d webhooks each, want %d", full, maxPending, hooks, maxPending/hooks)
	}
	if len(rs) != 40-full {
		t.Errorf("cap: %d answers 503 and %d accepted of 40", len(rs), full)
	}
	checkRejections(t, "cap", rs, "full")

	// Retries against the dead receiver must not change what the cap counts.
	time.Sleep(time.Second)
	more := postBurst(t, post, "cap-more", 6, 32)
	if len(more) != 6 {
		t.Errorf("cap: %d of 6 events accepted while the queue was still full", 6-len(more))
	}
	checkRejections(t, "cap", more, "full")
	rs = append(rs, more...)

	// The receiver comes back; without any help ingest accepts again once
	// the queue has drained.
	rc.up()
	upAt := time.Now()
	recovered := time.Time{}
	for i := 0; time.Since(upAt) < time.Minute; i++ {
		status, a, _, err := post.post(fmt.Sprintf("cap-after-%d", i), 32)
		if err != nil {
			t.Fatal(err)
		}
		if status == http.StatusAccepted {
			recovered = time.Now()
			break
		}
		if status != http.StatusServiceUnavailable {
			t.Fatalf("cap: answer %d while draining: %s", status, a.Error)
		}
		post.led.reject(fmt.Sprintf("cap-after-%d", i))
		time.Sleep(20 * time.Millisecond)
	}
	if recovered.IsZero() {
		t.Fatalf("cap: ingest still answers 503 a minute after the receiver came back")
	}
	// Once drained, it takes a full load again.
	if tl := waitDelivered(led, 60*time.Second, rc); len(tl.missing) > 0 {
		t.Fatalf("cap: %d deliveries still waiting a minute after the receiver came back", len(tl.missing))
	}
	if rs := postBurst(t, post, "cap-again", 10, 32); len(rs) > 0 {
		t.Errorf("cap: %d of 10 events rejected after the queue drained: %s", len(rs), rs[0].errMsg)
	}

	tl := waitDelivered(led, 60*time.Second, rc)
	verify(t, "cap", led, tl, rc)
	if events := led.eventCount(); tl.delivered != hooks*events {
		t.Errorf("cap: %d deliveries arrived for %d accepted events with %d webhooks each", tl.delivered, events, hooks)
	}
	if bad := partial(led, hooks, rc); len(bad) > 0 {
		t.Errorf("cap: events stored in part: %v", bad[:min(5, len(bad))])
	}
	summary(t, "cap", tl, fmt.Sprintf(" max_pending=%d events_at_cap=%d rejected_503=%d ingest_recovered=%s_after_receiver requests=%d",
		maxPending, full, len(rs), recovered.Sub(upAt).Round(10*time.Millisecond), tl.requests))
}

// TestDiskFull puts the queue on a small tmpfs and fills it. Ingest must
// answer 503 (the queue refuses new work while less than 16 MiB are free,
// because its store cannot survive a failed log write), store nothing of a
// rejected event, and accept again as soon as there is room; everything
// accepted must arrive. Mounting needs root (CAP_SYS_ADMIN): where that is
// not allowed the test is skipped, and the cap (max_pending) is the guard.
func TestDiskFull(t *testing.T) {
	const hooks = 3
	caddyBinary(t) // skips with -short before anything is mounted
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=40m,mode=0700"); err != nil {
		t.Skipf("disk full: cannot mount a small tmpfs for the queue (%v; needs root or CAP_SYS_ADMIN); skipping, max_pending is the documented guard", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
		}
	})

	// Attempts take 3s, so that those running when the disk fills finish
	// after room is made. An outcome that cannot be recorded leaves its
	// delivery leased until the lease runs out (the attempt timeout plus
	// 30s, at least 40s), which this test would otherwise wait for.
	rc := newSink(t, func(int) reply { return reply{status: http.StatusOK, delay: 3 * time.Second} })
	p := newCaddy(t, portsDiskFull)
	p.start(site{
		queueDir: filepath.Join(mnt, "queue"),
		hooks:    hook("crm", rc.url()) + hook("erp", rc.url()) + hook("billing", rc.url()),
	})
	led := newLedger()
	post := newPoster(t, p.base(), led)

	var rs []rejection
	for round := 0; round < 400 && len(rs) == 0; round++ {
		rs = postBurst(t, post, fmt.Sprintf("disk-%d", round), 16, 4000)
	}
	if len(rs) == 0 {
		t.Fatal("disk full: the 40m tmpfs never filled up")
	}
	filledAt := led.eventCount()
	checkRejections(t, "disk full", rs, "full")
	if !strings.Contains(p.logTail(200000), "MiB free on the disk") {
		t.Errorf("disk full: Caddy's log does not say the disk is full")
	}

	// Make room: grow the tmpfs, as freeing disk space would.
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, "size=128m,mode=0700"); err != nil {
		t.Fatalf("growing the tmpfs: %v", err)
	}
	rc.setPolicy(okReply)
	if rs := postBurst(t, post, "disk-after", 10, 4000); len(rs) > 0 {
		t.Errorf("disk full: %d of 10 events rejected after room was made: %s", len(rs), rs[0].errMsg)
	}

	tl := waitDelivered(led, 90*time.Second, rc)
	verify(t, "diskfull", led, tl, rc)
	if bad := partial(led, hooks, rc); len(bad) > 0 {
		t.Errorf("disk full: events stored in part: %v", bad[:min(5, len(bad))])
	}
	summary(t, "diskfull", tl, fmt.Sprintf(" events_before_full=%d rejected_503=%d stuck_outcomes=%d requests=%d",
		filledAt, len(rs), p.logCount("cannot record webhook delivery outcome"), tl.requests))
}
