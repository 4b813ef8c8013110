package embedded

import (
	"bytes"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/callhook/caddy-callhook/module/queue"
)

// TestLeaseOnlyInIndex: a lease is kept in the leased index, not in the
// record, and every way of reading the delivery still shows it.
func TestLeaseOnlyInIndex(t *testing.T) {
	q := open(t, Options{})
	enqueue(t, q, "k", delivery("d", "a"))
	now := time.Now()
	if got := lease(t, q, now, 1, nil); len(got) != 1 || !got[0].LeasedUntil.Equal(now.Add(time.Minute)) {
		t.Fatalf("leased %+v", got)
	}
	until := now.Add(time.Minute)
	err := q.db.View(func(tx *bbolt.Tx) error {
		if raw := tx.Bucket(bucketDeliveries).Get([]byte("d")); bytes.Contains(raw, []byte("leased_until")) {
			t.Errorf("record holds the lease: %s", raw)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := get(t, q, "d"); !d.LeasedUntil.Equal(until) || !d.NextAttempt.Equal(until) {
		t.Errorf("Get: leased %v next %v, want both %v", d.LeasedUntil, d.NextAttempt, until)
	}
	ds, _, err := q.List(ctx, queue.Filter{State: queue.Pending})
	if err != nil || len(ds) != 1 || !ds[0].LeasedUntil.Equal(until) {
		t.Errorf("List: %+v, %v", ds, err)
	}
	if s := stats(t, q); s != (queue.Stats{Leased: 1}) {
		t.Errorf("stats %+v, want 1 leased", s)
	}
	checkConsistency(t, q)

	// An expired lease taken again stays one leased delivery.
	if got := lease(t, q, until.Add(time.Second), 1, nil); len(got) != 1 {
		t.Fatalf("expired lease not taken again: %v", ids(got))
	}
	if s := stats(t, q); s != (queue.Stats{Leased: 1}) {
		t.Errorf("stats after re-lease %+v, want 1 leased", s)
	}
	checkConsistency(t, q)
	if err := q.Reschedule(ctx, "d", queue.Attempt{Status: 503}, until.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d := get(t, q, "d"); !d.LeasedUntil.IsZero() || !d.NextAttempt.Equal(until.Add(time.Hour)) {
		t.Errorf("after Reschedule: leased %v next %v", d.LeasedUntil, d.NextAttempt)
	}
	if s := stats(t, q); s != (queue.Stats{Pending: 1}) {
		t.Errorf("stats after Reschedule %+v, want 1 pending", s)
	}
}

// TestOldLeaseFormat: a file from before leases moved to the index (the
// record holds the lease, the index value is empty) is recovered at Open
// like any lease a dead process left.
func TestOldLeaseFormat(t *testing.T) {
	path := testPath(t)
	q := open(t, Options{Path: path})
	enqueue(t, q, "k", delivery("d", "a"))
	until := time.Now().Add(time.Hour)
	err := q.db.Update(func(tx *bbolt.Tx) error {
		tt := newTxn(tx)
		d, err := tt.load("d")
		if err != nil {
			return err
		}
		old := *d
		d.LeasedUntil, d.NextAttempt = until, until
		if err := tt.save(&old, d); err != nil {
			return err
		}
		// what the old Lease wrote: the lease in the record, nil in the index
		tt.put(tt.b.leased, []byte("d"), nil)
		if tt.err != nil {
			return tt.err
		}
		return tt.flush()
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := get(t, q, "d"); !d.LeasedUntil.Equal(until) {
		t.Fatalf("old-format lease not read: %v", d.LeasedUntil)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = open(t, Options{Path: path})
	if s := stats(t, q); s != (queue.Stats{Pending: 1}) {
		t.Errorf("stats after reopen %+v, want 1 pending", s)
	}
	if got := lease(t, q, time.Now(), 1, nil); len(got) != 1 {
		t.Errorf("old-format lease not recovered: leased %v", ids(got))
	}
}
