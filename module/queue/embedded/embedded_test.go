package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Backend-specific behaviour; the contract itself is checked by the
// conformance suite (queuetest) in conformance_test.go.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, Options{})
	_, err := Open(Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second open: %v", err)
	}
}

func TestDirectoryPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	openT(t, dir, Options{})
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("queue directory mode %v, %v; want 0700 (records hold secrets)", fi.Mode().Perm(), err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Error("empty dir accepted")
	}
	if _, err := Open(Options{Dir: t.TempDir(), MaxPending: -1}); err == nil {
		t.Error("negative max pending accepted")
	}
	dir := t.TempDir()
	q := openT(t, dir, Options{})
	q.Close()
	// A store of another format version is refused, not read.
	db := openT(t, dir, Options{})
	db.db.Set(metaVersion, u64(99), nil)
	db.Close()
	if _, err := Open(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "format version 99") {
		t.Fatalf("other format version: %v", err)
	}
}

// TestDurableWithoutClose copies the store while it is open, as a crash
// would leave it: everything Enqueue answered for is in the copy.
func TestDurableWithoutClose(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir, Options{})
	for i := range 50 {
		if _, err := q.Enqueue(ctx, env(fmt.Sprint(i), dl(fmt.Sprint("d", i), "a"))); err != nil {
			t.Fatal(err)
		}
	}
	crash := filepath.Join(t.TempDir(), "copy")
	copyDir(t, dir, crash)
	c := openT(t, crash, Options{})
	st, err := c.Stats(ctx)
	if err != nil || st.Pending != 50 {
		t.Fatalf("after a crash: %+v, %v; want 50 pending", st, err)
	}
	ls, err := c.Lease(ctx, queue.LeaseRequest{Max: 100, Lease: time.Minute})
	if err != nil || len(ls) != 50 {
		t.Fatalf("leased %d after a crash, %v", len(ls), err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "LOCK" || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGroupCommit: concurrent enqueuers share commits (and fsyncs).
func TestGroupCommit(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				id := fmt.Sprintf("%d-%d", w, i)
				if _, err := q.Enqueue(ctx, env(id, dl("d"+id, "a"))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	ops, syncs := q.committedOp.Load(), q.syncs.Load()
	if ops != 64*20 {
		t.Fatalf("%d ops committed", ops)
	}
	t.Logf("%d enqueues in %d synced commits (%.1f per fsync)", ops, syncs, float64(ops)/float64(syncs))
	if syncs*2 > ops {
		t.Errorf("%d fsyncs for %d concurrent enqueues: they are not grouped", syncs, ops)
	}
}

// TestOutcomesDoNotWaitForFsync: acks are committed without an fsync of
// their own, and reach the disk within outcomeSyncEvery.
func TestOutcomesDoNotWaitForFsync(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	if _, err := q.Enqueue(ctx, env("1", dl("d1", "a"))); err != nil {
		t.Fatal(err)
	}
	ls, _ := q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Minute})
	before := q.syncs.Load()
	if err := q.Ack(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 204}); err != nil {
		t.Fatal(err)
	}
	if q.syncs.Load() != before {
		t.Error("an ack waited for an fsync")
	}
	time.Sleep(3 * outcomeSyncEvery)
	if q.syncs.Load() != before+1 {
		t.Errorf("the ack was not synced within %s (%d syncs)", outcomeSyncEvery, q.syncs.Load()-before)
	}
}

// TestLowDiskRefusesNewWork: below MinFreeBytes Enqueue answers ErrFull
// and stores nothing; outcomes still go through.
func TestLowDiskRefusesNewWork(t *testing.T) {
	q := openT(t, t.TempDir(), Options{MinFreeBytes: 1 << 62})
	_, err := q.Enqueue(ctx, env("1", dl("d1", "a")))
	if !errors.Is(err, queue.ErrFull) || !strings.Contains(err.Error(), "free") {
		t.Fatalf("enqueue on a full disk: %v", err)
	}
	if st, _ := q.Stats(ctx); st != (queue.Stats{}) {
		t.Fatalf("stored something: %+v", st)
	}
}

// TestLaneSkipIsConstant: a lane whose destination budget is used up costs
// a lease nothing, whatever its backlog (the bug this store replaced:
// leasing stopped after 4096 skipped keys).
func TestLaneSkipIsConstant(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	const backlog = 20000
	var ds []*queue.Delivery
	for i := range backlog {
		ds = append(ds, dl(fmt.Sprint("slow", i), "slow"))
		if len(ds) == 500 {
			if _, err := q.Enqueue(ctx, env(fmt.Sprint(i), ds...)); err != nil {
				t.Fatal(err)
			}
			ds = nil
		}
	}
	if _, err := q.Enqueue(ctx, env("fast", dl("fast", "fast"))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, DestinationBudget: map[string]int{"slow": 0}})
	took := time.Since(start)
	if err != nil || len(ls) != 1 || ls[0].Delivery.ID != "fast" {
		t.Fatalf("leased %d (%v) past a capped backlog of %d", len(ls), err, backlog)
	}
	if took > 50*time.Millisecond {
		t.Errorf("a lease past a capped backlog of %d took %s", backlog, took)
	}
}

// TestDrainedLaneIsNotRescanned: after a lane drained, leasing it again
// starts past its tombstones.
func TestDrainedLaneIsNotRescanned(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	for i := range 20 {
		var ds []*queue.Delivery
		for j := range 500 {
			ds = append(ds, dl(fmt.Sprintf("d%d-%d", i, j), "a"))
		}
		if _, err := q.Enqueue(ctx, env(fmt.Sprint(i), ds...)); err != nil {
			t.Fatal(err)
		}
	}
	ackAll(t, q, 1000)
	if _, err := q.Enqueue(ctx, env("late", dl("late", "a"))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute})
	if err != nil || len(ls) != 1 {
		t.Fatal(len(ls), err)
	}
	q.sched.mu.Lock()
	lwm := q.sched.lanes[laneName("a", "t/w")].lwm()
	q.sched.mu.Unlock()
	if due, _, ok := parseDue(lwm, len(lanePrefix(laneName("a", "t/w")))); !ok || time.Since(due) > time.Minute {
		t.Errorf("the lane's low-water mark %x is not at its live key", lwm)
	}
	t.Logf("lease after draining 10 000: %s", time.Since(start))
}

func TestCorruptRecordsAreErrors(t *testing.T) {
	for _, b := range [][]byte{nil, {}, {'p'}, {'p', 0xff}} {
		if _, err := decodeMutable(b); err == nil {
			t.Errorf("decodeMutable(%x) accepted", b)
		}
	}
	d := &queue.Delivery{}
	if err := decodeStatic([]byte{codecVersion, 200}, d); err == nil {
		t.Error("truncated static record accepted")
	}
}

// TestLaneWindow drives one lane well past its in-memory window: enqueues
// while it drains, retries that land inside and past the window, a restart
// in the middle. Every delivery must be leased, and none twice at once.
func TestLaneWindow(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir, Options{})
	const total = 3*windowSize + 500
	n := 0
	enqueueSome := func(k int) {
		e := env(fmt.Sprint("w", n))
		for range k {
			e.Deliveries = append(e.Deliveries, dl(fmt.Sprint("d", n), "a"))
			n++
		}
		if _, err := q.Enqueue(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	enqueueSome(2 * windowSize)
	delivered := map[string]int{}
	retried := map[string]bool{}
	held := map[string]bool{}
	for round := 0; len(delivered) < total; round++ {
		if round > 2000 {
			t.Fatalf("stuck: %d of %d delivered", len(delivered), total)
		}
		if n < total {
			enqueueSome(min(300, total-n))
		}
		if round == 5 {
			q.Close()
			q = openT(t, dir, Options{})
			held = map[string]bool{}
		}
		ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 250, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range ls {
			id := l.Delivery.ID
			if held[id] {
				t.Fatalf("%s leased twice at once", id)
			}
			switch {
			case !retried[id] && i%7 == 0:
				retried[id] = true
				if err := q.Retry(ctx, l.Token, queue.Attempt{Start: time.Now(), Status: 500}, time.Now().Add(-time.Millisecond), "http 500"); err != nil {
					t.Fatal(err)
				}
			default:
				if err := q.Ack(ctx, l.Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
					t.Fatal(err)
				}
				delivered[id]++
			}
		}
	}
	for id, c := range delivered {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
	if st, _ := q.Stats(ctx); st.Pending != 0 || st.Delivered != total {
		t.Fatalf("stats %+v, want %d delivered", st, total)
	}
	q.sched.mu.Lock()
	cached := q.sched.cached
	q.sched.mu.Unlock()
	if cached != 0 {
		t.Errorf("%d bytes of records still cached with nothing pending", cached)
	}
}

// TestPruneCostsWhatItRemoves: events kept because their deliveries are
// pending are not looked at again by every prune, and a pruned range's
// tombstones are not walked again.
func TestPruneCostsWhatItRemoves(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	old := time.Now().Add(-time.Hour)
	for i := range 40 {
		e := env(fmt.Sprint("p", i))
		e.Event.ReceivedAt = old
		for j := range 500 {
			e.Deliveries = append(e.Deliveries, dl(fmt.Sprintf("p%d-%d", i, j), "a"))
		}
		if _, err := q.Enqueue(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	req := queue.PruneRequest{DeliveredBefore: time.Now(), EventsBefore: time.Now(), DedupBefore: time.Now().Add(-time.Hour)}
	if err := q.Prune(ctx, req); err != nil {
		t.Fatal(err)
	}
	before, commits := q.pruneExamined.Load(), q.commits.Load()
	for range 20 {
		if err := q.Prune(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if n := q.pruneExamined.Load() - before; n > 0 {
		t.Errorf("20 prunes with nothing to remove looked at %d keys: they look at the 40 kept events again", n)
	}
	if n := q.commits.Load() - commits; n > 0 {
		t.Errorf("20 prunes with nothing to remove made %d commits", n)
	}
	if _, err := q.GetEvent(ctx, "ev-p3"); err != nil {
		t.Fatalf("an event with pending deliveries was pruned: %v", err)
	}
}

// TestRecordRoundTrip: every field of a delivery survives the store.
func TestRecordRoundTrip(t *testing.T) {
	d := &queue.Delivery{ID: "rt", EventID: "ev", Target: "t", Event: "after_call", CallID: "c", Webhook: "w",
		Destination: "https://x:443", OrderKey: "k", CreatedAt: time.Unix(1700000000, 5).UTC(),
		Request: queue.Request{Method: "PUT", URL: "https://x/a?b=c", Header: [][2]string{{"A", "1"}, {"B", "2"}}, Body: []byte("{}")},
		Policy: queue.Policy{Timeout: time.Second, MaxAttempts: 3, BackoffMin: time.Millisecond, BackoffMax: time.Minute,
			MaxAge: time.Hour, JSONRPC: true, SealedSecret: []byte("s"), TLS: "t/w"}}
	var got queue.Delivery
	if err := decodeStatic(encodeStatic(d), &got); err != nil {
		t.Fatal(err)
	}
	got.ID = d.ID
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", *d) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *d)
	}
}

// TestOrderedOutcomeIsSynced: finishing an ordered delivery releases the
// next one only through a synced commit, so a crash cannot lose the first
// one's outcome after the next one went out.
func TestOrderedOutcomeIsSynced(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	a, b := dl("a", "x"), dl("b", "x")
	a.OrderKey, b.OrderKey = "call-1", "call-1"
	if _, err := q.Enqueue(ctx, env("1", a, b)); err != nil {
		t.Fatal(err)
	}
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute})
	if err != nil || len(ls) != 1 || ls[0].Delivery.ID != "a" {
		t.Fatalf("leased %d, %v", len(ls), err)
	}
	before := q.syncs.Load()
	if err := q.Ack(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
		t.Fatal(err)
	}
	if q.syncs.Load() == before {
		t.Fatal("the ack that released the next ordered delivery was not synced")
	}
}
