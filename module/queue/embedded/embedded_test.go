package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/callhook/caddy-callhook/module/queue"
)

var ctx = context.Background()

// clock is a settable time source for the queue.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "sub", "queue.db")
}

// open opens a queue at path (a fresh one if empty) and closes it at the end
// of the test, checking its indexes and counters first.
func open(t testing.TB, opts Options) *Queue {
	t.Helper()
	if opts.Path == "" {
		opts.Path = testPath(t)
	}
	q, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if !q.isClosed() {
			checkConsistency(t, q)
		}
		if err := q.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

func (q *Queue) isClosed() bool {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.closed
}

func delivery(id, dest string) *queue.Delivery {
	return &queue.Delivery{
		ID:          id,
		Target:      "target-" + dest,
		Event:       "after_call",
		CallID:      "call-" + id,
		Webhook:     "hook-" + dest,
		Destination: "https://" + dest + ":443",
		Request: queue.Request{
			Method: "POST",
			URL:    "https://" + dest + "/hook",
			Header: [][2]string{{"Content-Type", "application/json"}},
			Body:   []byte(`{"id":"` + id + `"}`),
		},
		Policy: queue.Policy{Timeout: time.Second, MaxAttempts: 5},
	}
}

func enqueue(t testing.TB, q *Queue, key string, ds ...*queue.Delivery) []queue.Ref {
	t.Helper()
	refs, dup, err := q.Enqueue(ctx, key, ds)
	if err != nil {
		t.Fatalf("Enqueue(%q): %v", key, err)
	}
	if dup {
		t.Fatalf("Enqueue(%q): unexpected dup", key)
	}
	return refs
}

func get(t testing.TB, q *Queue, id string) *queue.Delivery {
	t.Helper()
	d, err := q.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%q): %v", id, err)
	}
	return d
}

func lease(t testing.TB, q *Queue, now time.Time, max int, skip func(string) bool) []*queue.Delivery {
	t.Helper()
	ds, err := q.Lease(ctx, now, max, time.Minute, skip)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	return ds
}

func ids(ds []*queue.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func stats(t testing.TB, q *Queue) queue.Stats {
	t.Helper()
	s, err := q.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return s
}

// checkConsistency recomputes every index entry and counter from the records
// with a full scan and compares them with what is stored.
func checkConsistency(t testing.TB, q *Queue) {
	t.Helper()
	err := q.db.View(func(tx *bbolt.Tx) error {
		b := openBuckets(tx)
		names := map[*bbolt.Bucket]string{
			b.due: "due", b.leased: "leased", b.done: "done",
			b.pending: "state_pending", b.delivered: "state_delivered", b.dead: "state_dead",
		}
		want := map[string]map[string]string{}
		for _, n := range names {
			want[n] = map[string]string{}
		}
		var c counts
		tt := &txn{b: b, cLoaded: true}
		err := b.deliveries.ForEach(func(k, v []byte) error {
			d, err := decode(string(k), v)
			if err != nil {
				return err
			}
			withLease(b.leased, d)
			if d.ID != string(k) {
				return fmt.Errorf("record %q holds id %q", k, d.ID)
			}
			if len(d.Attempts) > maxAttempts {
				return fmt.Errorf("record %q has %d attempts", k, len(d.Attempts))
			}
			for _, e := range tt.entries(d) {
				want[names[e.b]][string(e.k)] = string(e.v)
			}
			switch {
			case d.State == queue.Pending && d.LeasedUntil.IsZero():
				c.pending++
			case d.State == queue.Pending:
				c.leased++
			case d.State == queue.Delivered:
				c.delivered++
			case d.State == queue.Dead:
				c.dead++
			default:
				return fmt.Errorf("record %q has state %q", k, d.State)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for bk, n := range names {
			got := map[string]string{}
			_ = bk.ForEach(func(k, v []byte) error {
				got[string(k)] = string(v)
				return nil
			})
			if len(got) != len(want[n]) {
				return fmt.Errorf("bucket %s has %d keys, records imply %d", n, len(got), len(want[n]))
			}
			for k, v := range want[n] {
				if gv, ok := got[k]; !ok || gv != v {
					return fmt.Errorf("bucket %s key %x: got %q (present %v), want %q", n, k, gv, ok, v)
				}
			}
		}
		if got := readCounts(b.meta); got != c {
			return fmt.Errorf("counters %+v, full scan %+v", got, c)
		}
		// Every dedup key has exactly its time index entry.
		nd := 0
		err = b.dedup.ForEach(func(k, v []byte) error {
			nd++
			if b.dedupTime.Get(append(clone(v[:8]), k...)) == nil {
				return fmt.Errorf("dedup key %q has no time index entry", k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n := b.dedupTime.Stats().KeyN; n != nd {
			return fmt.Errorf("dedup_time has %d keys, dedup %d", n, nd)
		}
		return nil
	})
	if err != nil {
		t.Errorf("queue file is inconsistent: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	clk := newClock()
	failed := queue.Attempt{Start: clk.Now(), Duration: time.Second, Status: 503, Response: []byte("busy")}
	ok := queue.Attempt{Start: clk.Now(), Duration: time.Second, Status: 200}
	next := clk.Now().Add(time.Hour)

	tests := []struct {
		name  string
		do    func(q *Queue, id string) error
		state queue.State
		stats queue.Stats
		check func(t *testing.T, d *queue.Delivery)
	}{
		{
			name:  "ack",
			do:    func(q *Queue, id string) error { return q.Ack(ctx, id, ok) },
			state: queue.Delivered,
			stats: queue.Stats{Delivered: 1},
			check: func(t *testing.T, d *queue.Delivery) {
				if len(d.Attempts) != 1 || d.Attempts[0].Status != 200 {
					t.Errorf("attempts = %+v", d.Attempts)
				}
				if !d.FinishedAt.Equal(clk.Now()) {
					t.Errorf("FinishedAt = %v", d.FinishedAt)
				}
			},
		},
		{
			name:  "reschedule",
			do:    func(q *Queue, id string) error { return q.Reschedule(ctx, id, failed, next) },
			state: queue.Pending,
			stats: queue.Stats{Pending: 1},
			check: func(t *testing.T, d *queue.Delivery) {
				if !d.NextAttempt.Equal(next) {
					t.Errorf("NextAttempt = %v, want %v", d.NextAttempt, next)
				}
				if d.LastError != "receiver answered HTTP 503" {
					t.Errorf("LastError = %q", d.LastError)
				}
				if len(d.Attempts) != 1 || string(d.Attempts[0].Response) != "busy" {
					t.Errorf("attempts = %+v", d.Attempts)
				}
			},
		},
		{
			name:  "kill",
			do:    func(q *Queue, id string) error { return q.Kill(ctx, id, failed, "gave up after 5 attempts") },
			state: queue.Dead,
			stats: queue.Stats{Dead: 1},
			check: func(t *testing.T, d *queue.Delivery) {
				if d.LastError != "gave up after 5 attempts" || len(d.Attempts) != 1 {
					t.Errorf("LastError = %q, attempts %d", d.LastError, len(d.Attempts))
				}
			},
		},
		{
			name:  "kill without attempt",
			do:    func(q *Queue, id string) error { return q.Kill(ctx, id, queue.Attempt{}, "max age") },
			state: queue.Dead,
			stats: queue.Stats{Dead: 1},
			check: func(t *testing.T, d *queue.Delivery) {
				if len(d.Attempts) != 0 {
					t.Errorf("attempts = %+v", d.Attempts)
				}
			},
		},
		{
			name:  "release",
			do:    func(q *Queue, id string) error { return q.Release(ctx, id, next) },
			state: queue.Pending,
			stats: queue.Stats{Pending: 1},
			check: func(t *testing.T, d *queue.Delivery) {
				if !d.NextAttempt.Equal(next) || len(d.Attempts) != 0 {
					t.Errorf("NextAttempt = %v, attempts %d", d.NextAttempt, len(d.Attempts))
				}
			},
		},
	}
	for _, tc := range tests {
		for _, leased := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/leased=%v", tc.name, leased), func(t *testing.T) {
				q := open(t, Options{now: clk.Now})
				enqueue(t, q, "k", delivery("d1", "a"))
				if s := stats(t, q); s != (queue.Stats{Pending: 1}) {
					t.Fatalf("stats after enqueue = %+v", s)
				}
				if leased {
					got := lease(t, q, clk.Now(), 10, nil)
					if len(got) != 1 || got[0].ID != "d1" || got[0].State != queue.Pending {
						t.Fatalf("lease = %+v", got)
					}
					if want := clk.Now().Add(time.Minute); !got[0].LeasedUntil.Equal(want) || !got[0].NextAttempt.Equal(want) {
						t.Fatalf("leased until %v next %v, want %v", got[0].LeasedUntil, got[0].NextAttempt, want)
					}
					if s := stats(t, q); s != (queue.Stats{Leased: 1}) {
						t.Fatalf("stats after lease = %+v", s)
					}
					checkConsistency(t, q)
				}
				if err := tc.do(q, "d1"); err != nil {
					t.Fatal(err)
				}
				d := get(t, q, "d1")
				if d.State != tc.state {
					t.Errorf("state = %s, want %s", d.State, tc.state)
				}
				if !d.LeasedUntil.IsZero() {
					t.Errorf("LeasedUntil = %v, want zero", d.LeasedUntil)
				}
				tc.check(t, d)
				if s := stats(t, q); s != tc.stats {
					t.Errorf("stats = %+v, want %+v", s, tc.stats)
				}
				checkConsistency(t, q)
			})
		}
	}
}

func TestLateOutcomesChangeNothing(t *testing.T) {
	q := open(t, Options{})
	enqueue(t, q, "", delivery("d1", "a"))
	now := time.Now()
	lease(t, q, now, 1, nil)
	if err := q.Ack(ctx, "d1", queue.Attempt{Start: now, Status: 204}); err != nil {
		t.Fatal(err)
	}
	before := get(t, q, "d1")
	// A second worker whose lease expired reports late: at least once, so
	// every outcome after the first is ignored.
	a := queue.Attempt{Start: now, Status: 500}
	for name, err := range map[string]error{
		"ack":        q.Ack(ctx, "d1", a),
		"reschedule": q.Reschedule(ctx, "d1", a, now),
		"kill":       q.Kill(ctx, "d1", a, "x"),
		"release":    q.Release(ctx, "d1", now),
	} {
		if err != nil {
			t.Errorf("%s of delivered: %v", name, err)
		}
	}
	after := get(t, q, "d1")
	if after.State != queue.Delivered || len(after.Attempts) != len(before.Attempts) || after.LastError != before.LastError {
		t.Errorf("delivered delivery changed: %+v", after)
	}
	for name, err := range map[string]error{
		"ack":        q.Ack(ctx, "nope", a),
		"reschedule": q.Reschedule(ctx, "nope", a, now),
		"kill":       q.Kill(ctx, "nope", a, "x"),
		"release":    q.Release(ctx, "nope", now),
	} {
		if !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("%s of unknown id: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := q.Get(ctx, "nope"); !errors.Is(err, queue.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Get unknown: %v", err)
	}
}

func TestAttemptsKeepNewest(t *testing.T) {
	q := open(t, Options{})
	enqueue(t, q, "", delivery("d1", "a"))
	start := time.Now()
	for i := range maxAttempts + 10 {
		a := queue.Attempt{Start: start.Add(time.Duration(i) * time.Second), Status: 500 + i}
		if err := q.Reschedule(ctx, "d1", a, start); err != nil {
			t.Fatal(err)
		}
	}
	d := get(t, q, "d1")
	if len(d.Attempts) != maxAttempts {
		t.Fatalf("attempts = %d, want %d", len(d.Attempts), maxAttempts)
	}
	if d.Attempts[0].Status != 510 || d.Attempts[maxAttempts-1].Status != 559 {
		t.Errorf("kept attempts %d..%d, want the newest", d.Attempts[0].Status, d.Attempts[maxAttempts-1].Status)
	}
}

func TestEnqueueDefaults(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now})
	created := clk.Now().Add(-time.Hour)
	in := []*queue.Delivery{delivery("plain", "a"), delivery("created", "a"), delivery("dead", "a"), delivery("later", "a")}
	in[0].State = "leased" // ignored: everything but dead or delivered (sync calls) starts pending
	in[0].LeasedUntil = clk.Now()
	in[1].CreatedAt = created
	in[2].State = queue.Dead
	in[2].LastError = "template: bad field"
	in[3].NextAttempt = clk.Now().Add(time.Hour)
	snapshot := *in[0]
	refs := enqueue(t, q, "", in...)
	if len(refs) != 4 || refs[2] != (queue.Ref{ID: "dead", Webhook: "hook-a"}) {
		t.Errorf("refs = %+v", refs)
	}
	if in[0].State != snapshot.State || !in[0].CreatedAt.IsZero() {
		t.Errorf("Enqueue modified its argument: %+v", in[0])
	}

	d := get(t, q, "plain")
	if d.State != queue.Pending || !d.CreatedAt.Equal(clk.Now()) || !d.NextAttempt.Equal(clk.Now()) || !d.LeasedUntil.IsZero() {
		t.Errorf("plain = %+v", d)
	}
	d = get(t, q, "created")
	if !d.CreatedAt.Equal(created) || !d.NextAttempt.Equal(created) {
		t.Errorf("created = %+v", d)
	}
	d = get(t, q, "dead")
	if d.State != queue.Dead || !d.FinishedAt.Equal(clk.Now()) || d.LastError != "template: bad field" {
		t.Errorf("dead = %+v", d)
	}
	if s := stats(t, q); s != (queue.Stats{Pending: 3, Dead: 1}) {
		t.Errorf("stats = %+v", s)
	}
	got := lease(t, q, clk.Now().Add(time.Minute), 10, nil)
	if strings.Join(ids(got), ",") != "created,plain" {
		t.Errorf("leased %v, want created,plain (dead never, later not yet)", ids(got))
	}
	if due, ok, err := q.NextDue(ctx); err != nil || !ok || !due.Equal(clk.Now().Add(2*time.Minute)) {
		t.Errorf("NextDue = %v %v %v, want the end of the leases", due, ok, err)
	}
}

func TestEnqueueValidation(t *testing.T) {
	q := open(t, Options{})
	tests := []struct {
		name string
		ds   []*queue.Delivery
		key  string
		want string
	}{
		{"nil", []*queue.Delivery{nil}, "", "is nil"},
		{"no id", []*queue.Delivery{delivery("", "a")}, "", "has no id"},
		{"twice", []*queue.Delivery{delivery("x", "a"), delivery("x", "b")}, "", "appears twice"},
		{"long id", []*queue.Delivery{delivery(strings.Repeat("x", maxIDLen+1), "a")}, "", "bytes"},
		{"long key", []*queue.Delivery{delivery("x", "a")}, strings.Repeat("k", maxDedupKeyLen+1), "dedup key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := q.Enqueue(ctx, tc.key, tc.ds)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if s := stats(t, q); s != (queue.Stats{}) {
		t.Errorf("stats = %+v", s)
	}
}

func TestDedup(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now, DedupWindow: time.Hour})
	orig := enqueue(t, q, "evt-1", delivery("a1", "a"), delivery("b1", "b"))

	refs, dup, err := q.Enqueue(ctx, "evt-1", []*queue.Delivery{delivery("a2", "a"), delivery("b2", "b")})
	if err != nil || !dup {
		t.Fatalf("second Enqueue: dup=%v err=%v", dup, err)
	}
	if fmt.Sprint(refs) != fmt.Sprint(orig) {
		t.Errorf("refs = %v, want the original %v", refs, orig)
	}
	if _, err := q.Get(ctx, "a2"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("duplicate stored a delivery: %v", err)
	}
	// Even colliding ids are fine on a dup: nothing is stored.
	if _, dup, err := q.Enqueue(ctx, "evt-1", []*queue.Delivery{delivery("a1", "a")}); err != nil || !dup {
		t.Errorf("dup with existing id: dup=%v err=%v", dup, err)
	}
	if s := stats(t, q); s.Pending != 2 {
		t.Errorf("stats = %+v", s)
	}

	// Past the window the key is absent even before Prune removes it.
	clk.Add(time.Hour)
	refs, dup, err = q.Enqueue(ctx, "evt-1", []*queue.Delivery{delivery("a3", "a")})
	if err != nil || dup || len(refs) != 1 || refs[0].ID != "a3" {
		t.Fatalf("Enqueue after window: refs=%v dup=%v err=%v", refs, dup, err)
	}
	// ...and now the new one is what dedups.
	refs, dup, _ = q.Enqueue(ctx, "evt-1", []*queue.Delivery{delivery("a4", "a")})
	if !dup || len(refs) != 1 || refs[0].ID != "a3" {
		t.Errorf("refs = %v dup=%v, want a3", refs, dup)
	}
	// No key: no dedup.
	enqueue(t, q, "", delivery("n1", "a"))
	enqueue(t, q, "", delivery("n2", "a"))
}

func TestEnqueueAllOrNone(t *testing.T) {
	q := open(t, Options{})
	enqueue(t, q, "first", delivery("taken", "a"))

	_, _, err := q.Enqueue(ctx, "second", []*queue.Delivery{delivery("new1", "a"), delivery("taken", "b"), delivery("new2", "c")})
	if err == nil || !strings.Contains(err.Error(), `"taken" already exists`) {
		t.Fatalf("err = %v, want id collision", err)
	}
	for _, id := range []string{"new1", "new2"} {
		if _, err := q.Get(ctx, id); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("%s stored after a failed Enqueue", id)
		}
	}
	// The dedup key was not stored either: a retry with fixed ids works.
	refs := enqueue(t, q, "second", delivery("new1", "a"), delivery("new2", "c"))
	if len(refs) != 2 {
		t.Errorf("refs = %v", refs)
	}
	if s := stats(t, q); s.Pending != 3 {
		t.Errorf("stats = %+v", s)
	}
}

func TestMaxPending(t *testing.T) {
	q := open(t, Options{MaxPending: 3})
	enqueue(t, q, "1", delivery("a", "x"), delivery("b", "x"))
	_, _, err := q.Enqueue(ctx, "2", []*queue.Delivery{delivery("c", "x"), delivery("d", "x")})
	if !errors.Is(err, queue.ErrFull) {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	if _, err := q.Get(ctx, "c"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("c stored over the cap")
	}
	// Dead on arrival does not count against the cap.
	dead := delivery("dead", "x")
	dead.State = queue.Dead
	enqueue(t, q, "3", dead)
	// Leased ones count.
	lease(t, q, time.Now(), 1, nil)
	enqueue(t, q, "4", delivery("c", "x"))
	if _, _, err := q.Enqueue(ctx, "5", []*queue.Delivery{delivery("e", "x")}); !errors.Is(err, queue.ErrFull) {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	// Room again after an ack; the refused dedup key was not stored.
	if err := q.Ack(ctx, "a", queue.Attempt{}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, q, "5", delivery("e", "x"))
}

func TestLeaseSkipAndBound(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now})
	base := clk.Now()
	const backlog = leaseScanLimit + 100
	for i := 0; i < backlog; i += 500 {
		var ds []*queue.Delivery
		for j := i; j < min(i+500, backlog); j++ {
			d := delivery(fmt.Sprintf("slow-%05d", j), "slow")
			d.CreatedAt = base.Add(time.Duration(j) * time.Millisecond)
			ds = append(ds, d)
		}
		enqueue(t, q, "", ds...)
	}
	fast := delivery("fast-1", "fast")
	fast.CreatedAt = base.Add(time.Hour)
	enqueue(t, q, "", fast)
	early := delivery("fast-0", "fast")
	early.CreatedAt = base.Add(time.Duration(leaseScanLimit/2) * time.Millisecond)
	enqueue(t, q, "", early)

	calls := 0
	skipSlow := func(dest string) bool {
		calls++
		return dest == "https://slow:443"
	}
	now := base.Add(2 * time.Hour)
	got := lease(t, q, now, 10, skipSlow)
	if strings.Join(ids(got), ",") != "fast-0" {
		t.Errorf("leased %v, want only fast-0 (fast-1 is past the scan bound)", ids(got))
	}
	if calls != leaseScanLimit {
		t.Errorf("skip called %d times, want the scan bound %d", calls, leaseScanLimit)
	}

	// skip is asked once per delivery taken, so it can count them.
	taken := 0
	limitTwo := func(string) bool {
		if taken == 2 {
			return true
		}
		taken++
		return false
	}
	got = lease(t, q, now, 10, limitTwo)
	if strings.Join(ids(got), ",") != "slow-00000,slow-00001" {
		t.Errorf("leased %v", ids(got))
	}
	// Not due yet: nothing, and nothing examined past the first later key.
	calls = 0
	if got := lease(t, q, base.Add(-time.Second), 10, skipSlow); len(got) != 0 || calls != 0 {
		t.Errorf("lease before due: %v, %d skip calls", ids(got), calls)
	}
	if _, err := q.Lease(ctx, now, 1, 0, nil); err == nil {
		t.Error("Lease with zero lease duration succeeded")
	}
	if got, err := q.Lease(ctx, now, 0, time.Second, nil); err != nil || got != nil {
		t.Errorf("Lease max 0 = %v, %v", got, err)
	}
}

func TestLeaseExpiry(t *testing.T) {
	q := open(t, Options{})
	now := time.Now().Truncate(time.Second)
	d := delivery("d1", "a")
	d.CreatedAt = now
	enqueue(t, q, "", d)

	if got, _ := q.Lease(ctx, now, 10, 10*time.Second, nil); len(got) != 1 {
		t.Fatalf("first lease = %v", ids(got))
	}
	if due, ok, _ := q.NextDue(ctx); !ok || !due.Equal(now.Add(10*time.Second)) {
		t.Errorf("NextDue = %v %v, want the lease end", due, ok)
	}
	if got, _ := q.Lease(ctx, now.Add(5*time.Second), 10, 10*time.Second, nil); len(got) != 0 {
		t.Fatalf("leased twice within the lease: %v", ids(got))
	}
	got, _ := q.Lease(ctx, now.Add(11*time.Second), 10, 10*time.Second, nil)
	if len(got) != 1 || !got[0].LeasedUntil.Equal(now.Add(21*time.Second)) {
		t.Fatalf("lease after expiry = %+v", got)
	}
	// The first worker's late ack still counts.
	if err := q.Ack(ctx, "d1", queue.Attempt{Start: now, Status: 200}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := q.NextDue(ctx); ok {
		t.Error("NextDue reports work after the ack")
	}
	if s := stats(t, q); s != (queue.Stats{Delivered: 1}) {
		t.Errorf("stats = %+v", s)
	}
}

func TestReopenResetsLeases(t *testing.T) {
	path := testPath(t)
	q, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		enqueue(t, q, fmt.Sprint("k", i), delivery(fmt.Sprint("d", i), "a"))
	}
	now := time.Now()
	if got := lease(t, q, now, 3, nil); len(got) != 3 {
		t.Fatalf("leased %d", len(got))
	}
	if err := q.Ack(ctx, "d4", queue.Attempt{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	core, logs := observer.New(zapcore.InfoLevel)
	before := time.Now()
	q = open(t, Options{Path: path, Logger: zap.New(core)})
	if s := stats(t, q); s != (queue.Stats{Pending: 4, Delivered: 1}) {
		t.Errorf("stats after reopen = %+v", s)
	}
	entries := logs.FilterMessage("recovered leased deliveries").All()
	if len(entries) != 1 || entries[0].ContextMap()["count"] != int64(3) {
		t.Errorf("log = %+v", logs.All())
	}
	for i := range 3 {
		d := get(t, q, fmt.Sprint("d", i))
		if !d.LeasedUntil.IsZero() || d.NextAttempt.Before(before) || d.NextAttempt.After(time.Now()) {
			t.Errorf("d%d after reopen: leased %v next %v", i, d.LeasedUntil, d.NextAttempt)
		}
	}
	if got := lease(t, q, time.Now(), 10, nil); len(got) != 4 {
		t.Errorf("leased %v after reopen, want all 4 pending", ids(got))
	}
	if _, dup, _ := q.Enqueue(ctx, "k1", []*queue.Delivery{delivery("x", "a")}); !dup {
		t.Error("dedup key lost across reopen")
	}
}

func TestLocked(t *testing.T) {
	path := testPath(t)
	open(t, Options{Path: path})
	_, err := Open(Options{Path: path, lockTimeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Error("Open without path succeeded")
	}
	notDB := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(notDB, bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Path: notDB}); err == nil || !strings.Contains(err.Error(), notDB) {
		t.Errorf("Open of a non-bbolt file: %v", err)
	}
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	open(t, Options{Path: filepath.Join(dir, "q.db")})
	for path, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, "q.db"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&^0o022 != want&^0o022 || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode = %v, want %v", path, fi.Mode(), want)
		}
	}
}

// TestDurableWithoutClose copies the file right after Enqueue returned, as if
// the process had died then, and opens the copy.
func TestDurableWithoutClose(t *testing.T) {
	q := open(t, Options{})
	enqueue(t, q, "evt", delivery("d1", "a"), delivery("d2", "b"))
	lease(t, q, time.Now(), 1, nil)

	crash := filepath.Join(t.TempDir(), "crash.db")
	copyFile(t, q.path, crash)

	c := open(t, Options{Path: crash})
	for _, id := range []string{"d1", "d2"} {
		if d := get(t, c, id); d.State != queue.Pending || !d.LeasedUntil.IsZero() {
			t.Errorf("%s in copy: %+v", id, d)
		}
	}
	if s := stats(t, c); s != (queue.Stats{Pending: 2}) {
		t.Errorf("stats in copy = %+v", s)
	}
	if _, dup, _ := c.Enqueue(ctx, "evt", nil); !dup {
		t.Error("dedup key missing in copy")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentEnqueueGroupCommit(t *testing.T) {
	q := open(t, Options{})
	const workers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				ds := []*queue.Delivery{delivery(id+"-a", "a"), delivery(id+"-b", "b"), delivery(id+"-c", "c")}
				if _, _, err := q.Enqueue(ctx, id, ds); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := stats(t, q); s.Pending != workers*each*3 {
		t.Errorf("pending = %d, want %d", s.Pending, workers*each*3)
	}
	commits, ops := q.commits.Load(), q.committedOp.Load()
	t.Logf("%d ops in %d transactions (%.1f per fsync)", ops, commits, float64(ops)/float64(commits))
	if ops != workers*each {
		t.Errorf("committed ops = %d, want %d", ops, workers*each)
	}
	if commits*2 > ops {
		t.Errorf("%d transactions for %d ops; group commit is not sharing fsyncs", commits, ops)
	}
}

// block holds the committer until the returned func is called, so that the
// ops sent meanwhile share the next transaction.
func block(t *testing.T, q *Queue) (release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- q.write(ctx, func(*txn) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	<-started
	return func() {
		close(unblock)
		if err := <-done; err != nil {
			t.Errorf("blocking op: %v", err)
		}
	}
}

// waitQueued waits until n ops wait for the committer.
func waitQueued(t *testing.T, q *Queue, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(q.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d ops queued, want %d", len(q.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBatchIsolation(t *testing.T) {
	q := open(t, Options{MaxPending: 4})
	enqueue(t, q, "old", delivery("taken", "a"))
	release := block(t, q)
	commits := q.commits.Load()

	type result struct {
		name string
		err  error
		dup  bool
	}
	calls := []struct {
		name string
		key  string
		ds   []*queue.Delivery
		want func(r result) bool
	}{
		{"ok", "k1", []*queue.Delivery{delivery("ok1", "a"), delivery("ok2", "a")}, func(r result) bool { return r.err == nil && !r.dup }},
		{"same key in batch", "k1", []*queue.Delivery{delivery("x1", "a")}, func(r result) bool { return r.err == nil && r.dup }},
		{"dup old", "old", []*queue.Delivery{delivery("x2", "a")}, func(r result) bool { return r.err == nil && r.dup }},
		{"id taken", "k2", []*queue.Delivery{delivery("x3", "a"), delivery("taken", "a")}, func(r result) bool { return r.err != nil && !errors.Is(r.err, queue.ErrFull) }},
		{"full", "k3", []*queue.Delivery{delivery("x4", "a"), delivery("x5", "a")}, func(r result) bool { return errors.Is(r.err, queue.ErrFull) }},
		{"ok last", "k4", []*queue.Delivery{delivery("ok3", "a")}, func(r result) bool { return r.err == nil && !r.dup }},
	}
	results := make(chan result, len(calls))
	for i, c := range calls {
		go func() {
			_, dup, err := q.Enqueue(ctx, c.key, c.ds)
			results <- result{c.name, err, dup}
		}()
		// Keep the order, so the batch runs them in this order.
		waitQueued(t, q, i+1)
	}
	// A write that fails inside the transaction (an empty key) fails alone.
	poison := make(chan error, 1)
	go func() {
		poison <- q.write(ctx, func(t *txn) error {
			t.put(t.b.meta, nil, []byte("x"))
			return nil
		})
	}()
	waitQueued(t, q, len(calls)+1)
	release()

	for range calls {
		r := <-results
		for _, c := range calls {
			if c.name == r.name && !c.want(r) {
				t.Errorf("%s: dup=%v err=%v", r.name, r.dup, r.err)
			}
		}
	}
	if err := <-poison; err == nil {
		t.Error("poisoned op succeeded")
	}
	// The blocking op wrote nothing (no commit); the batch rolled back once
	// for the poisoned op and then committed the rest in one transaction.
	if got := q.commits.Load() - commits; got != 1 {
		t.Errorf("%d commits, want 1", got)
	}
	for id, want := range map[string]bool{"ok1": true, "ok2": true, "ok3": true, "x1": false, "x2": false, "x3": false, "x4": false} {
		_, err := q.Get(ctx, id)
		if (err == nil) != want {
			t.Errorf("%s stored = %v, want %v", id, err == nil, want)
		}
	}
}

func TestDiskFull(t *testing.T) {
	q := open(t, Options{maxSize: 1 << 20})
	enqueue(t, q, "small", delivery("small", "a"))
	release := block(t, q)
	big := delivery("big", "a")
	big.Request.Body = bytes.Repeat([]byte("x"), 2<<20)
	errs := make(chan error, 2)
	go func() {
		_, _, err := q.Enqueue(ctx, "big", []*queue.Delivery{big})
		errs <- err
	}()
	waitQueued(t, q, 1)
	go func() {
		_, _, err := q.Enqueue(ctx, "other", []*queue.Delivery{delivery("other", "a")})
		errs <- err
	}()
	waitQueued(t, q, 2)
	release()
	for range 2 {
		if err := <-errs; !errors.Is(err, queue.ErrFull) || !strings.Contains(err.Error(), "free disk space") {
			t.Errorf("err = %v, want ErrFull about disk space", err)
		}
	}
	for _, id := range []string{"big", "other"} {
		if _, err := q.Get(ctx, id); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("%s stored by a failed transaction", id)
		}
	}
	// The queue still works and the keys were not stored.
	enqueue(t, q, "other", delivery("other", "a"))
	if s := stats(t, q); s.Pending != 2 {
		t.Errorf("stats = %+v", s)
	}
}

func TestIsDiskFull(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&os.PathError{Op: "write", Path: "q.db", Err: syscall.ENOSPC}, true},
		{errors.New("file resize error: write q.db: no space left on device"), true},
		{errors.New("mmap allocate error: cannot allocate memory"), true},
		{errors.New("fdatasync: input/output error"), false},
	} {
		if got := isDiskFull(tc.err); got != tc.want {
			t.Errorf("isDiskFull(%v) = %v", tc.err, got)
		}
	}
}

func TestContextCancel(t *testing.T) {
	q := open(t, Options{})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := q.Enqueue(cctx, "k", []*queue.Delivery{delivery("d", "a")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with cancelled ctx: %v", err)
	}

	// Cancelled while waiting for the committer: the op is dropped.
	release := block(t, q)
	cctx, cancel = context.WithCancel(ctx)
	errs := make(chan error, 1)
	go func() {
		_, _, err := q.Enqueue(cctx, "k", []*queue.Delivery{delivery("d", "a")})
		errs <- err
	}()
	waitQueued(t, q, 1)
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
	release()
	if _, err := q.Get(ctx, "d"); !errors.Is(err, queue.ErrNotFound) {
		t.Error("cancelled Enqueue was stored")
	}
	enqueue(t, q, "k", delivery("d", "a"))
}

func TestList(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now})
	base := clk.Now()
	var all []string // newest first
	for i := range 30 {
		d := delivery(fmt.Sprintf("d%02d", i), []string{"a", "b", "c"}[i%3])
		d.CreatedAt = base.Add(time.Duration(i) * time.Second)
		if i%5 == 0 {
			d.Event = "before_call"
		}
		enqueue(t, q, "", d)
		all = append([]string{d.ID}, all...)
	}
	// Some delivered, some dead.
	for _, id := range []string{"d03", "d06", "d09"} {
		if err := q.Ack(ctx, id, queue.Attempt{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"d04", "d08"} {
		if err := q.Kill(ctx, id, queue.Attempt{}, "no"); err != nil {
			t.Fatal(err)
		}
	}
	filter := func(keep func(i int) bool) []string {
		var out []string
		for _, id := range all {
			var i int
			fmt.Sscanf(id, "d%d", &i)
			if keep(i) {
				out = append(out, id)
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    queue.Filter
		want []string
	}{
		{"all", queue.Filter{}, all},
		{"delivered", queue.Filter{State: queue.Delivered}, []string{"d09", "d06", "d03"}},
		{"dead", queue.Filter{State: queue.Dead}, []string{"d08", "d04"}},
		{"pending", queue.Filter{State: queue.Pending}, filter(func(i int) bool { return i != 3 && i != 6 && i != 9 && i != 4 && i != 8 })},
		{"webhook", queue.Filter{Webhook: "hook-b"}, filter(func(i int) bool { return i%3 == 1 })},
		{"target", queue.Filter{Target: "target-c"}, filter(func(i int) bool { return i%3 == 2 })},
		{"event", queue.Filter{Event: "before_call"}, filter(func(i int) bool { return i%5 == 0 })},
		{"call", queue.Filter{CallID: "call-d07"}, []string{"d07"}},
		{"pending webhook", queue.Filter{State: queue.Pending, Webhook: "hook-a"}, filter(func(i int) bool { return i%3 == 0 && i != 3 && i != 6 && i != 9 })},
		{"none", queue.Filter{Webhook: "nope"}, nil},
	}
	for _, tc := range tests {
		for _, limit := range []int{0, 1, 4, 7} {
			t.Run(fmt.Sprintf("%s/limit=%d", tc.name, limit), func(t *testing.T) {
				f := tc.f
				f.Limit = limit
				var got []string
				for page := 0; ; page++ {
					ds, next, err := q.List(ctx, f)
					if err != nil {
						t.Fatal(err)
					}
					if limit > 0 && len(ds) > limit {
						t.Fatalf("page of %d, limit %d", len(ds), limit)
					}
					got = append(got, ids(ds)...)
					if next == "" {
						break
					}
					if page > 100 {
						t.Fatal("no end of pages")
					}
					f.Cursor = next
				}
				if strings.Join(got, ",") != strings.Join(tc.want, ",") {
					t.Errorf("got  %v\nwant %v", got, tc.want)
				}
			})
		}
	}

	if _, _, err := q.List(ctx, queue.Filter{Cursor: "!!"}); err == nil {
		t.Error("bad cursor accepted")
	}
	if _, _, err := q.List(ctx, queue.Filter{State: "leased"}); err == nil {
		t.Error("unknown state accepted")
	}
	ds, next, err := q.List(ctx, queue.Filter{Limit: 5000})
	if err != nil || len(ds) != 30 || next != "" {
		t.Errorf("big limit: %d %q %v", len(ds), next, err)
	}
	if ds[0].Request.URL == "" || ds[0].Policy.MaxAttempts != 5 {
		t.Errorf("List returned partial records: %+v", ds[0])
	}
}

func TestListLimitClamp(t *testing.T) {
	q := open(t, Options{})
	var ds []*queue.Delivery
	for i := range maxListLimit + 5 {
		ds = append(ds, delivery(fmt.Sprint("d", i), "a"))
	}
	enqueue(t, q, "", ds...)
	for limit, want := range map[int]int{0: defaultListLimit, 5000: maxListLimit} {
		got, next, err := q.List(ctx, queue.Filter{Limit: limit})
		if err != nil || len(got) != want || next == "" {
			t.Errorf("limit %d: %d, next %q, %v", limit, len(got), next, err)
		}
	}
}

func TestRetryDead(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now})
	for i := range 5 {
		enqueue(t, q, "", delivery(fmt.Sprint("d", i), "a"))
	}
	a := queue.Attempt{Start: clk.Now(), Status: 500}
	for i := range 4 {
		if err := q.Kill(ctx, fmt.Sprint("d", i), a, "gave up"); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(time.Hour)

	n, err := q.RetryDead(ctx, "d0", "d0")
	if err != nil || n != 1 {
		t.Fatalf("RetryDead(d0) = %d, %v", n, err)
	}
	d := get(t, q, "d0")
	if d.State != queue.Pending || !d.NextAttempt.Equal(clk.Now()) || !d.CreatedAt.Equal(clk.Now()) ||
		!d.FinishedAt.IsZero() || d.LastError != "gave up" || len(d.Attempts) != 1 {
		t.Errorf("d0 after retry = %+v", d)
	}
	if s := stats(t, q); s != (queue.Stats{Pending: 2, Dead: 3}) {
		t.Errorf("stats = %+v", s)
	}

	for _, tc := range []struct {
		ids  []string
		want string
		is   error
	}{
		{[]string{"d1", "nope"}, `"nope"`, queue.ErrNotFound},
		{[]string{"d1", "d4"}, `"d4" is pending, not dead`, nil},
	} {
		n, err := q.RetryDead(ctx, tc.ids...)
		if err == nil || n != 0 || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("RetryDead(%v) = %d, %v", tc.ids, n, err)
		}
	}
	if get(t, q, "d1").State != queue.Dead {
		t.Error("a failed RetryDead changed d1")
	}

	n, err = q.RetryDead(ctx)
	if err != nil || n != 3 {
		t.Fatalf("RetryDead() = %d, %v", n, err)
	}
	if s := stats(t, q); s != (queue.Stats{Pending: 5}) {
		t.Errorf("stats = %+v", s)
	}
	if n, err := q.RetryDead(ctx); err != nil || n != 0 {
		t.Errorf("RetryDead() with none dead = %d, %v", n, err)
	}
	if got := lease(t, q, clk.Now(), 10, nil); len(got) != 5 {
		t.Errorf("leased %d after retry", len(got))
	}
}

func TestRetryDeadManyChunks(t *testing.T) {
	q := open(t, Options{})
	const n = chunk*2 + 7
	for i := 0; i < n; i += 500 {
		var ds []*queue.Delivery
		for j := i; j < min(i+500, n); j++ {
			d := delivery(fmt.Sprint("d", j), "a")
			d.State = queue.Dead
			ds = append(ds, d)
		}
		enqueue(t, q, "", ds...)
	}
	got, err := q.RetryDead(ctx)
	if err != nil || got != n {
		t.Fatalf("RetryDead() = %d, %v", got, err)
	}
	if s := stats(t, q); s != (queue.Stats{Pending: n}) {
		t.Errorf("stats = %+v", s)
	}
}

func TestPrune(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now, DedupWindow: 100 * time.Hour})
	start := clk.Now()
	for i := range 6 {
		enqueue(t, q, fmt.Sprint("k", i), delivery(fmt.Sprint("d", i), "a"))
		clk.Add(time.Hour)
	}
	// d0..d2 delivered at hours 6, 7, 8; d3 dead; d4, d5 pending.
	for i := range 3 {
		if err := q.Ack(ctx, fmt.Sprint("d", i), queue.Attempt{}); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Hour)
	}
	if err := q.Kill(ctx, "d3", queue.Attempt{}, "x"); err != nil {
		t.Fatal(err)
	}

	if err := q.Prune(ctx, start.Add(7*time.Hour+time.Minute), start.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"d0": false, "d1": false, "d2": true, "d3": true, "d4": true, "d5": true} {
		if _, err := q.Get(ctx, id); (err == nil) != want {
			t.Errorf("%s kept = %v, want %v", id, err == nil, want)
		}
	}
	if s := stats(t, q); s != (queue.Stats{Pending: 2, Delivered: 1, Dead: 1}) {
		t.Errorf("stats = %+v", s)
	}
	// k0, k1 are gone; k2 is not.
	for key, wantDup := range map[string]bool{"k0": false, "k1": false, "k2": true} {
		_, dup, err := q.Enqueue(ctx, key, []*queue.Delivery{delivery("new-"+key, "a")})
		if err != nil || dup != wantDup {
			t.Errorf("Enqueue(%s) dup=%v err=%v, want dup %v", key, dup, err, wantDup)
		}
	}
}

func TestPruneManyChunks(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now})
	const n = chunk + 300
	var ds []*queue.Delivery
	for i := range n {
		ds = append(ds, delivery(fmt.Sprint("d", i), "a"))
	}
	enqueue(t, q, "", ds...)
	// Ack them and add dedup keys in one transaction; one by one would cost
	// thousands of fsyncs.
	err := q.write(ctx, func(t *txn) error {
		for i := range n {
			id := fmt.Sprint("d", i)
			d, err := t.load(id)
			if err != nil {
				return err
			}
			old := *d
			d.State, d.FinishedAt = queue.Delivered, clk.Now()
			if err := t.save(&old, d); err != nil {
				return err
			}
			key := "k" + id
			t.put(t.b.dedup, []byte(key), append(u64(nanos(clk.Now())), "[]"...))
			t.put(t.b.dedupTime, timeKey(clk.Now(), key), nil)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkConsistency(t, q)
	clk.Add(time.Second)
	if err := q.Prune(ctx, clk.Now(), clk.Now()); err != nil {
		t.Fatal(err)
	}
	if s := stats(t, q); s != (queue.Stats{}) {
		t.Errorf("stats = %+v", s)
	}
	err = q.db.View(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if string(b) == "meta" {
				continue
			}
			if k, _ := tx.Bucket(b).Cursor().First(); k != nil {
				t.Errorf("bucket %s not empty", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestClose(t *testing.T) {
	q, err := Open(Options{Path: testPath(t)})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, q, "", delivery("d", "a"))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := q.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	now := time.Now()
	checks := map[string]error{}
	_, _, checks["enqueue"] = q.Enqueue(ctx, "", []*queue.Delivery{delivery("e", "a")})
	_, checks["lease"] = q.Lease(ctx, now, 1, time.Second, nil)
	checks["ack"] = q.Ack(ctx, "d", queue.Attempt{})
	checks["reschedule"] = q.Reschedule(ctx, "d", queue.Attempt{}, now)
	checks["kill"] = q.Kill(ctx, "d", queue.Attempt{}, "")
	checks["release"] = q.Release(ctx, "d", now)
	_, _, checks["nextdue"] = q.NextDue(ctx)
	_, checks["get"] = q.Get(ctx, "d")
	_, _, checks["list"] = q.List(ctx, queue.Filter{})
	_, checks["retry"] = q.RetryDead(ctx)
	_, checks["stats"] = q.Stats(ctx)
	checks["prune"] = q.Prune(ctx, now, now)
	for name, err := range checks {
		if !errors.Is(err, queue.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

// TestCloseFinishesQueuedOps: ops handed to the committer before Close are
// committed, not dropped.
func TestCloseFinishesQueuedOps(t *testing.T) {
	path := testPath(t)
	q, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	release := block(t, q)
	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, _, err := q.Enqueue(ctx, "", []*queue.Delivery{delivery(fmt.Sprint("d", i), "a")})
			errs <- err
		}()
	}
	waitQueued(t, q, 10)
	closed := make(chan error)
	go func() { closed <- q.Close() }()
	time.Sleep(10 * time.Millisecond) // let Close mark the queue closed
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	q = open(t, Options{Path: path})
	if s := stats(t, q); s.Pending != 10 {
		t.Errorf("stats = %+v", s)
	}
}

// TestMain fails the package if any test leaves a goroutine behind (the
// committer must stop on Close).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNoGoroutineLeak(t *testing.T) {
	for range 5 {
		q, err := Open(Options{Path: testPath(t)})
		if err != nil {
			t.Fatal(err)
		}
		enqueue(t, q, "k", delivery("d", "a"))
		lease(t, q, time.Now(), 1, nil)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	goleak.VerifyNone(t)
}

func TestEmptyLeaseCostsNoCommit(t *testing.T) {
	q := open(t, Options{})
	before := q.commits.Load()
	for range 10 {
		lease(t, q, time.Now(), 10, nil)
	}
	if got := q.commits.Load() - before; got != 0 {
		t.Errorf("%d commits for empty leases", got)
	}
}

// TestEnqueueDelivered: a delivery enqueued as delivered (a sync call
// already made) is stored as it is and never leased.
func TestEnqueueDelivered(t *testing.T) {
	clk := newClock()
	q := open(t, Options{now: clk.Now})
	d := delivery("sync", "a")
	d.State = queue.Delivered
	d.Attempts = []queue.Attempt{{Start: clk.Now(), Status: 200}}
	enqueue(t, q, "", d)
	got := get(t, q, "sync")
	if got.State != queue.Delivered || len(got.Attempts) != 1 || got.FinishedAt.IsZero() {
		t.Errorf("stored %+v", got)
	}
	if s := stats(t, q); s != (queue.Stats{Delivered: 1}) {
		t.Errorf("stats = %+v", s)
	}
	if l := lease(t, q, clk.Now().Add(time.Minute), 10, nil); len(l) != 0 {
		t.Errorf("leased %v", ids(l))
	}
}
