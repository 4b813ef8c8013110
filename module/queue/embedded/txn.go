package embedded

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"

	"github.com/callhook/caddy-callhook/module/queue"
)

var (
	bucketDeliveries = []byte("deliveries")
	bucketDue        = []byte("due")
	bucketLeased     = []byte("leased")
	bucketDone       = []byte("done")
	bucketPending    = []byte("state_pending")
	bucketDelivered  = []byte("state_delivered")
	bucketDead       = []byte("state_dead")
	bucketDedup      = []byte("dedup")
	bucketDedupTime  = []byte("dedup_time")
	bucketMeta       = []byte("meta")

	allBuckets = [][]byte{
		bucketDeliveries, bucketDue, bucketLeased, bucketDone,
		bucketPending, bucketDelivered, bucketDead,
		bucketDedup, bucketDedupTime, bucketMeta,
	}

	keyVersion   = []byte("version")
	keyPending   = []byte("pending")
	keyLeased    = []byte("leased")
	keyDelivered = []byte("delivered")
	keyDead      = []byte("dead")
)

type buckets struct {
	deliveries, due, leased, done *bbolt.Bucket
	pending, delivered, dead      *bbolt.Bucket
	dedup, dedupTime, meta        *bbolt.Bucket
}

func openBuckets(tx *bbolt.Tx) buckets {
	return buckets{
		deliveries: tx.Bucket(bucketDeliveries),
		due:        tx.Bucket(bucketDue),
		leased:     tx.Bucket(bucketLeased),
		done:       tx.Bucket(bucketDone),
		pending:    tx.Bucket(bucketPending),
		delivered:  tx.Bucket(bucketDelivered),
		dead:       tx.Bucket(bucketDead),
		dedup:      tx.Bucket(bucketDedup),
		dedupTime:  tx.Bucket(bucketDedupTime),
		meta:       tx.Bucket(bucketMeta),
	}
}

// counts are the Stats counters. Pending excludes leased deliveries.
type counts struct {
	pending, leased, delivered, dead int64
}

func readCounts(meta *bbolt.Bucket) counts {
	return counts{
		pending:   int64(getU64(meta.Get(keyPending))),
		leased:    int64(getU64(meta.Get(keyLeased))),
		delivered: int64(getU64(meta.Get(keyDelivered))),
		dead:      int64(getU64(meta.Get(keyDead))),
	}
}

// txn wraps a read-write transaction shared by a batch of ops.
type txn struct {
	tx *bbolt.Tx
	b  buckets
	c  counts
	// cLoaded/cDirty: the counters are read once per transaction and written
	// once at its end.
	cLoaded, cDirty bool
	// dirty reports whether anything was written.
	dirty bool
	// err is the first write error; it rolls back the whole transaction.
	err error
}

func newTxn(tx *bbolt.Tx) *txn {
	return &txn{tx: tx, b: openBuckets(tx)}
}

// apply runs an op's fn. A panic in it (say in a caller's skip function)
// fails that op and rolls back the transaction instead of killing the
// committer, which would hang every later op.
func (t *txn) apply(fn func(t *txn) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			t.err = fmt.Errorf("panic in queue operation: %v", r)
		}
	}()
	return fn(t)
}

func (t *txn) put(b *bbolt.Bucket, k, v []byte) {
	if t.err != nil {
		return
	}
	t.dirty = true
	if err := b.Put(k, v); err != nil {
		t.err = err
	}
}

func (t *txn) del(b *bbolt.Bucket, k []byte) {
	if t.err != nil {
		return
	}
	t.dirty = true
	if err := b.Delete(k); err != nil {
		t.err = err
	}
}

func (t *txn) counts() *counts {
	if !t.cLoaded {
		t.c = readCounts(t.b.meta)
		t.cLoaded = true
	}
	return &t.c
}

// flush writes the counters if they changed.
func (t *txn) flush() error {
	if !t.cDirty {
		return t.err
	}
	t.put(t.b.meta, keyPending, u64(uint64(t.c.pending)))
	t.put(t.b.meta, keyLeased, u64(uint64(t.c.leased)))
	t.put(t.b.meta, keyDelivered, u64(uint64(t.c.delivered)))
	t.put(t.b.meta, keyDead, u64(uint64(t.c.dead)))
	return t.err
}

// counter is the Stats counter d is counted in.
func (t *txn) counter(d *queue.Delivery) *int64 {
	c := t.counts()
	switch d.State {
	case queue.Pending:
		if d.LeasedUntil.IsZero() {
			return &c.pending
		}
		return &c.leased
	case queue.Delivered:
		return &c.delivered
	case queue.Dead:
		return &c.dead
	}
	return nil
}

// load reads and decodes a record; nil if there is none.
func (t *txn) load(id string) (*queue.Delivery, error) {
	v := t.b.deliveries.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	d, err := decode(id, v)
	if err != nil {
		return nil, err
	}
	withLease(t.b.leased, d)
	return d, nil
}

// withLease sets d's lease from the leased index. Lease records a lease
// there only, not in the record, so leasing costs the committer no JSON;
// whoever reads a record must add it. A record written before that (an
// older file) carries its own lease, and its index value is empty.
func withLease(leased *bbolt.Bucket, d *queue.Delivery) {
	if v := leased.Get([]byte(d.ID)); len(v) == 8 {
		until := keyTime(v)
		d.LeasedUntil, d.NextAttempt = until, until
	}
}

func decode(id string, v []byte) (*queue.Delivery, error) {
	d := new(queue.Delivery)
	if err := json.Unmarshal(v, d); err != nil {
		return nil, fmt.Errorf("queue record %q is corrupt: %w", id, err)
	}
	return d, nil
}

// entry is one index key a delivery has.
type entry struct {
	b    *bbolt.Bucket
	k, v []byte
}

// entries lists the index keys of d in its state.
func (t *txn) entries(d *queue.Delivery) []entry {
	es := make([]entry, 0, 3)
	created := timeKey(d.CreatedAt, d.ID)
	switch d.State {
	case queue.Pending:
		es = append(es,
			entry{t.b.pending, created, nil},
			entry{t.b.due, timeKey(d.NextAttempt, d.ID), []byte(d.Destination)})
		if !d.LeasedUntil.IsZero() {
			es = append(es, entry{t.b.leased, []byte(d.ID), u64(nanos(d.LeasedUntil))})
		}
	case queue.Delivered:
		es = append(es,
			entry{t.b.delivered, created, nil},
			entry{t.b.done, timeKey(d.FinishedAt, d.ID), u64(nanos(d.CreatedAt))})
	case queue.Dead:
		es = append(es, entry{t.b.dead, created, nil})
	}
	return es
}

func hasEntry(es []entry, e entry, withValue bool) bool {
	for _, x := range es {
		if x.b == e.b && bytes.Equal(x.k, e.k) && (!withValue || bytes.Equal(x.v, e.v)) {
			return true
		}
	}
	return false
}

// save writes d, moving its index entries and counters from old (nil for a
// new record). It returns only encoding errors; write errors go to t.err.
func (t *txn) save(old, d *queue.Delivery) error {
	enc, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encoding delivery %q: %w", d.ID, err)
	}
	t.saveEncoded(old, d, enc)
	return nil
}

func (t *txn) saveEncoded(old, d *queue.Delivery, enc []byte) {
	news := t.entries(d)
	var olds []entry
	if old != nil {
		olds = t.entries(old)
		for _, e := range olds {
			if !hasEntry(news, e, false) {
				t.del(e.b, e.k)
			}
		}
		if c := t.counter(old); c != nil {
			*c--
		}
	}
	for _, e := range news {
		if !hasEntry(olds, e, true) {
			t.put(e.b, e.k, e.v)
		}
	}
	if c := t.counter(d); c != nil {
		*c++
	}
	t.cDirty = true
	t.put(t.b.deliveries, []byte(d.ID), enc)
}

// remove deletes d and its index entries.
func (t *txn) remove(d *queue.Delivery) {
	for _, e := range t.entries(d) {
		t.del(e.b, e.k)
	}
	if c := t.counter(d); c != nil {
		*c--
		t.cDirty = true
	}
	t.del(t.b.deliveries, []byte(d.ID))
}

var maxKeyTime = time.Unix(0, math.MaxInt64)

// nanos maps t to key order; times outside what int64 nanoseconds hold are
// clamped so they still sort at the right end.
func nanos(t time.Time) uint64 {
	if t.Before(time.Unix(0, 0)) {
		return 0
	}
	if t.After(maxKeyTime) {
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

func timeKey(t time.Time, id string) []byte {
	k := make([]byte, 8+len(id))
	binary.BigEndian.PutUint64(k, nanos(t))
	copy(k[8:], id)
	return k
}

func keyTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
}

func u64(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

func getU64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func clone(b []byte) []byte {
	return append([]byte(nil), b...)
}
