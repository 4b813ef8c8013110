package embedded

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/callhook/caddy-callhook/module/queue"
)

// keysUnder lists the live keys of the store with prefix p.
func keysUnder(t *testing.T, q *Queue, p []byte) [][]byte {
	t.Helper()
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, slices.Clone(it.Key()))
	}
	return out
}

// TestWriteSet: a delivered delivery keeps four index keys and no state
// key; a dead one has the dead state key as well, so it can be listed and
// retried; the whole record set of a delivered one is a handful of keys.
func TestWriteSet(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	ok, dead := dl("ok", "a"), dl("dead", "a")
	e := env("1", ok, dead)
	ok.CallID, dead.CallID = e.Event.CallID, e.Event.CallID
	if _, err := q.Enqueue(ctx, e); err != nil {
		t.Fatal(err)
	}
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute})
	if err != nil || len(ls) != 2 {
		t.Fatalf("leased %d, %v", len(ls), err)
	}
	for _, l := range ls {
		a := queue.Attempt{Start: time.Now(), Status: 200}
		if l.Delivery.ID == "dead" {
			a.Status = 410
			err = q.Dead(ctx, l.Token, a, "http 410")
		} else {
			err = q.Ack(ctx, l.Token, a)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	count := func(id string) (index, state, other int) {
		for _, k := range keysUnder(t, q, []byte{pIndex}) {
			v, _, err := q.db.Get(k)
			if err != nil {
				t.Fatal(err)
			}
			if string(v) == id {
				if k[1] == ixState {
					state++
				} else {
					index++
				}
			}
		}
		for _, p := range []byte{pStatic, pMutable, pAttempt, pDue, pOrder, pFinished} {
			for _, k := range keysUnder(t, q, []byte{p}) {
				if bytes.Contains(k, []byte(id)) {
					other++
				} else if p == pFinished || p == pDue || p == pOrder {
					v, _, _ := q.db.Get(k)
					if string(v) == id {
						other++
					}
				}
			}
		}
		return index, state, other
	}
	if i, s, o := count("ok"); i != 4 || s != 0 || o != 4 {
		t.Errorf("delivered delivery: %d index keys, %d state keys, %d records; want 4, 0 and 4 (static, mutable, attempt, finished)", i, s, o)
	}
	if i, s, o := count("dead"); i != 4 || s != 1 || o != 3 {
		t.Errorf("dead delivery: %d index keys, %d state keys, %d records; want 4, 1 and 3 (static, mutable, attempt)", i, s, o)
	}
	// The dead one is what List(dead) and RetryDead() find.
	p, err := q.List(ctx, queue.Filter{State: queue.Dead})
	if err != nil || len(p.Deliveries) != 1 || p.Deliveries[0].ID != "dead" {
		t.Fatalf("List(dead) = %v, %v", p.Deliveries, err)
	}
}

// v2IndexKey is a List index key of format version 2.
func v2IndexKey(field byte, value string, created time.Time, seq uint64) []byte {
	b := appendTime(appendStr([]byte{pIndex, field}, value), created)
	return binary.BigEndian.AppendUint64(b, seq)
}

// TestUpgradeFromV2: a store written with version 2's seven index keys
// per delivery opens with its deliveries listable by every filter, in
// this version's layout, and none of the old keys left.
func TestUpgradeFromV2(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir, Options{})
	var ids []string
	for i, dest := range []string{"a", "b", "a"} {
		d := dl("d"+string(rune('0'+i)), dest)
		d.Webhook = "w" + dest
		e := env(d.ID, d)
		d.CallID = e.Event.CallID
		if _, err := q.Enqueue(ctx, e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Minute})
	if err != nil || len(ls) != 1 {
		t.Fatalf("leased %d, %v", len(ls), err)
	}
	if err := q.Dead(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 410}, "gone"); err != nil {
		t.Fatal(err)
	}
	deadID := ls[0].Delivery.ID
	want := map[string][]string{}
	for _, f := range []queue.Filter{{}, {State: queue.Pending}, {State: queue.Dead}, {Webhook: "wa"}, {Target: "t"},
		{CallID: "c-d1"}, {EventID: "ev-d2"}, {Target: "t", Webhook: "wb"}} {
		p, err := q.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Deliveries {
			want[filterKey(f)] = append(want[filterKey(f)], d.ID)
		}
	}
	if len(want[filterKey(queue.Filter{})]) != 3 || len(want[filterKey(queue.Filter{State: queue.Dead})]) != 1 {
		t.Fatalf("before the downgrade: %v", want)
	}
	// Rewrite the indexes as version 2 wrote them.
	if err := q.db.DeleteRange([]byte{pIndex}, []byte{pIndex + 1}, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		d, err := q.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		mv, _ := q.getRaw(mutableKey(id))
		m, _ := decodeMutable(mv)
		state := byte('p')
		if id == deadID {
			state = 'x'
		}
		for _, kv := range []struct {
			f byte
			v string
		}{{'s', string(state)}, {'w', d.Webhook}, {'t', d.Target}, {'e', d.Event}, {'c', d.CallID}, {'v', d.EventID}, {'a', ""}} {
			if err := q.db.Set(v2IndexKey(kv.f, kv.v, d.CreatedAt, m.seq), []byte(id), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	q.db.Set(metaVersion, u64(2), pebble.Sync)
	q.Close()

	q = openT(t, dir, Options{})
	if v, _ := q.getRaw(metaVersion); getU64(v) != formatVersion {
		t.Fatalf("format version after the upgrade: %d", getU64(v))
	}
	for _, f := range []queue.Filter{{}, {State: queue.Pending}, {State: queue.Dead}, {Webhook: "wa"}, {Target: "t"},
		{CallID: "c-d1"}, {EventID: "ev-d2"}, {Target: "t", Webhook: "wb"}} {
		p, err := q.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range p.Deliveries {
			got = append(got, d.ID)
		}
		if !slices.Equal(got, want[filterKey(f)]) {
			t.Errorf("List(%s) after the upgrade = %v, want %v", filterKey(f), got, want[filterKey(f)])
		}
	}
	for _, old := range []byte{'w', 't', 'e'} {
		if ks := keysUnder(t, q, []byte{pIndex, old}); len(ks) > 0 {
			t.Errorf("%d version 2 index keys %q left after the upgrade", len(ks), old)
		}
	}
	if ks := keysUnder(t, q, statePrefix(queue.Pending)); len(ks) != 2 {
		t.Errorf("%d pending state keys after the upgrade, want 2", len(ks))
	}
	if st, err := q.Stats(ctx); err != nil || st.Pending != 2 || st.Dead != 1 || st.OldestPending.IsZero() {
		t.Errorf("Stats after the upgrade = %+v, %v", st, err)
	}
}

func filterKey(f queue.Filter) string {
	return string(f.State) + "|" + f.Webhook + "|" + f.Target + "|" + f.CallID + "|" + f.EventID
}

// TestDrainedAndPrunedLeavesNothing: once every delivery is delivered and
// the prune has passed retention and the dedup window, no record, index
// or dedup key of them is left, only the queue's meta values.
func TestDrainedAndPrunedLeavesNothing(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	for i := range 20 {
		e := env(string(rune('a' + i)))
		for j := range 10 {
			d := dl(e.Event.ID+"-"+string(rune('a'+j)), "a")
			d.Webhook = "w" + string(rune('a'+j%3))
			e.Deliveries = append(e.Deliveries, d)
		}
		if _, err := q.Enqueue(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	ackAll(t, q, 50)
	now := time.Now().Add(time.Second)
	if err := q.Prune(ctx, queue.PruneRequest{DeliveredBefore: now, EventsBefore: now, DedupBefore: now}); err != nil {
		t.Fatal(err)
	}
	for p := byte(0); p < 0xff; p++ {
		if p == pMeta {
			continue
		}
		if ks := keysUnder(t, q, []byte{p}); len(ks) > 0 {
			t.Errorf("%d keys %q left after the drain and the prune, e.g. %q", len(ks), p, ks[0])
		}
	}
}

// ackAll leases (max at a time) and acks until nothing is due.
func ackAll(t testing.TB, q *Queue, max int) {
	t.Helper()
	for {
		ls, err := q.Lease(ctx, queue.LeaseRequest{Max: max, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) == 0 {
			return
		}
		for _, l := range ls {
			if err := q.Ack(ctx, l.Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestListManyTargets: a webhook filter over more targets than one List
// merges walks the all-index instead, and still finds every match, newest
// first, across pages.
func TestListManyTargets(t *testing.T) {
	q := openT(t, t.TempDir(), Options{})
	var want []string
	for i := range maxSubranges + 10 {
		d := dl("d"+strconv.Itoa(i), "a")
		d.Target = "t" + strconv.Itoa(i)
		if i%3 == 0 {
			d.Webhook = "x"
			want = append(want, d.ID)
		}
		if _, err := q.Enqueue(ctx, env(d.ID, d)); err != nil {
			t.Fatal(err)
		}
	}
	slices.Reverse(want)
	var got []string
	f := queue.Filter{Webhook: "x", Limit: 7}
	for {
		p, err := q.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Deliveries {
			got = append(got, d.ID)
		}
		if p.Next == "" {
			break
		}
		f.Cursor = p.Next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List(webhook x) over %d targets = %d deliveries, want %d", maxSubranges+10, len(got), len(want))
	}
}
