//go:build linux

package faults

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chaos is a receiver that fails at random in every way the sender must
// survive: 503 and 500, 429 with Retry-After, an answer slower than the
// webhook's 1s timeout, and a connection dropped without an answer.
func chaos(int) reply {
	switch r := rand.IntN(100); {
	case r < 60:
		return reply{status: http.StatusOK, delay: time.Duration(rand.IntN(30)) * time.Millisecond}
	case r < 78:
		return reply{status: http.StatusServiceUnavailable}
	case r < 82:
		return reply{status: http.StatusTooManyRequests, retryAfter: "1"}
	case r < 88:
		return reply{status: http.StatusOK, delay: 1500 * time.Millisecond}
	case r < 94:
		return reply{drop: true}
	default:
		return reply{status: http.StatusInternalServerError}
	}
}

// sample is one look at the process.
type sample struct {
	goroutines, files int
	heap, rss         uint64
	queueFile         int64
}

func (s sample) String() string {
	return fmt.Sprintf("goroutines=%d heap=%.1fMiB rss=%.1fMiB open_files=%d queue_file=%.1fMiB",
		s.goroutines, float64(s.heap)/(1<<20), float64(s.rss)/(1<<20), s.files, float64(s.queueFile)/(1<<20))
}

func look(t *testing.T, p *caddyProc) sample {
	t.Helper()
	var s sample
	var err error
	if s.goroutines, err = p.goroutines(); err != nil {
		t.Fatalf("soak: %v", err)
	}
	if s.files, err = p.openFiles(); err != nil {
		t.Fatalf("soak: %v", err)
	}
	if s.heap, err = p.heapAlloc(); err != nil {
		t.Fatalf("soak: %v", err)
	}
	if s.rss, err = p.rss(); err != nil {
		t.Fatalf("soak: %v", err)
	}
	_ = filepath.WalkDir(filepath.Join(p.home, "queue", "queue"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				s.queueFile += fi.Size()
			}
		}
		return nil
	})
	return s
}

// TestSoak runs for -soak (e.g. 10m): a moderate steady load against two
// receivers that fail at random, a look at the process every minute, and at
// the end the same checks as every scenario (nothing lost) plus flat
// goroutines, open files and heap. It is not run without -soak:
//
//	go test ./faults -run TestSoak -soak=10m -timeout 30m -v
func TestSoak(t *testing.T) {
	if *soak <= 0 {
		t.Skip("soak: not run without -soak (go test ./faults -run TestSoak -soak=10m -timeout 30m)")
	}
	const (
		rate           = 20 // events per second, 3 deliveries each
		goroutineSlack = 20
		fileSlack      = 10
	)
	every := min(time.Minute, *soak/5)
	a, b := newSink(t, chaos), newSink(t, chaos)
	a.timeout, b.timeout = time.Second, time.Second // the webhooks' timeout below
	p := newCaddy(t, portsSoak)
	p.start(site{
		globals: "workers 32",
		hooks: hook("a", a.url(), "timeout 1s") +
			hook("b", b.url(), "timeout 1s", "format form") +
			hook("c", b.url(), "timeout 1s", "format xml", "method PUT"),
	})
	led := newLedger()
	post := newPoster(t, p.base(), led)

	var seq atomic.Int64
	load := func(d time.Duration) error {
		var (
			wg   sync.WaitGroup
			once sync.Once
			ferr error
		)
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		end := time.Now().Add(d)
		for now := range tick.C {
			if now.After(end) {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := post.send(fmt.Sprintf("soak-%d", seq.Add(1)), 200, time.Now().Add(time.Minute)); err != nil {
					once.Do(func() { ferr = err })
				}
			}()
		}
		wg.Wait()
		return ferr
	}
	report := func(label string, s sample) {
		tl := count(led, a, b)
		line := fmt.Sprintf("faults: soak %s: %s accepted=%d delivered=%d waiting=%d requests=%d", label, s, tl.accepted, tl.delivered, len(tl.missing), tl.requests)
		t.Log(line)
		fmt.Println(line)
	}

	// Baseline after a short warm-up that has been fully delivered.
	if err := load(min(20*time.Second, *soak/10)); err != nil {
		t.Fatal(err)
	}
	if tl := waitDelivered(led, 3*time.Minute, a, b); len(tl.missing) > 0 {
		verify(t, "soak", led, tl, a, b)
		t.FailNow()
	}
	settle(t, p, post, a, b)
	base := look(t, p)
	report("baseline", base)

	start := time.Now()
	for elapsed := time.Duration(0); elapsed < *soak; elapsed = time.Since(start) {
		if err := load(min(every, *soak-elapsed)); err != nil {
			t.Fatal(err)
		}
		report(time.Since(start).Round(time.Second).String(), look(t, p))
	}

	tl := waitDelivered(led, 5*time.Minute, a, b)
	verify(t, "soak", led, tl, a, b)
	settle(t, p, post, a, b)
	end := look(t, p)
	report("end", end)
	if end.goroutines > base.goroutines+goroutineSlack {
		t.Errorf("soak: %d goroutines at the end, %d at the start (slack %d)\n%s", end.goroutines, base.goroutines, goroutineSlack, p.goroutineDump())
	}
	if end.files > base.files+fileSlack {
		t.Errorf("soak: %d open files at the end, %d at the start (slack %d)", end.files, base.files, fileSlack)
	}
	// The live heap after a GC; the queue file is mapped, not on the heap.
	if limit := base.heap + base.heap/2 + 16<<20; end.heap > limit {
		t.Errorf("soak: live heap %d bytes at the end, %d at the start (limit %d)", end.heap, base.heap, limit)
	}
	_, abandonedA := a.overlapping()
	_, abandonedB := b.overlapping()
	summary(t, "soak", tl, fmt.Sprintf(" duration=%s requests=%d resent_before_hangup_seen=%d goroutines=%d->%d open_files=%d->%d heap=%.1f->%.1fMiB rss=%.1f->%.1fMiB queue_file=%.1f->%.1fMiB",
		*soak, tl.requests, abandonedA+abandonedB, base.goroutines, end.goroutines, base.files, end.files,
		float64(base.heap)/(1<<20), float64(end.heap)/(1<<20), float64(base.rss)/(1<<20), float64(end.rss)/(1<<20),
		float64(base.queueFile)/(1<<20), float64(end.queueFile)/(1<<20)))
}
