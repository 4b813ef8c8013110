package natswq

import (
	"container/heap"
	"encoding/base64"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// rec is the mirror's copy of one delivery record.
type rec struct {
	id      string
	d       queue.Delivery // Attempts is never set
	nonce   string         // the lease's, held in memory only
	chunks  int            // blobs holding the body (the body here is empty)
	pos     uint64         // place in its order key
	rev     uint64
	created int64 // CreatedAt in ns, the list order

	lane     *lane
	heapIdx  int // in lane.h, or -1
	ageIdx   int // in mirror.age, or -1
	claiming bool
	inOrder  bool
	// stale is a revision another node's write is known to have replaced
	// (our claim of it was refused): the record stays out of its lane until
	// a newer revision arrives.
	stale uint64
}

func (r *rec) final() bool { return r.d.State == queue.Delivered || r.d.State == queue.Dead }

// due is when the delivery can be leased: its next attempt, or the end of
// the lease that holds it.
func (r *rec) due() time.Time {
	if r.d.State == queue.Leased {
		return r.d.LeasedUntil
	}
	return r.d.NextAttempt
}

// lane is the due work of one (destination, webhook) pair.
type lane struct {
	dest, hook string
	h          laneHeap
}

type laneHeap []*rec

func (h laneHeap) Len() int { return len(h) }
func (h laneHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if da, db := a.due(), b.due(); !da.Equal(db) {
		return da.Before(db)
	}
	if a.pos != b.pos {
		return a.pos < b.pos
	}
	return a.id < b.id
}
func (h laneHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *laneHeap) Push(x any) { r := x.(*rec); r.heapIdx = len(*h); *h = append(*h, r) }
func (h *laneHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	r.heapIdx = -1
	return r
}

// ageHeap orders unfinished deliveries by CreatedAt, for OldestPending.
type ageHeap []*rec

func (h ageHeap) Len() int           { return len(h) }
func (h ageHeap) Less(i, j int) bool { return listLess(h[i], h[j]) }
func (h ageHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].ageIdx, h[j].ageIdx = i, j
}
func (h *ageHeap) Push(x any) { r := x.(*rec); r.ageIdx = len(*h); *h = append(*h, r) }
func (h *ageHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	r.ageIdx = -1
	return r
}

// index is a list index: records sorted by (CreatedAt, id), read from the
// end for newest first.
type index struct{ s []*rec }

func listLess(a, b *rec) bool {
	if a.created != b.created {
		return a.created < b.created
	}
	return a.id < b.id
}

func (ix *index) search(created int64, id string) int {
	return sort.Search(len(ix.s), func(i int) bool {
		r := ix.s[i]
		return r.created > created || r.created == created && r.id >= id
	})
}

func (ix *index) insert(r *rec) {
	i := ix.search(r.created, r.id)
	ix.s = slices.Insert(ix.s, i, r)
}

func (ix *index) remove(r *rec) {
	i := ix.search(r.created, r.id)
	if i < len(ix.s) && ix.s[i] == r {
		ix.s = slices.Delete(ix.s, i, i+1)
	}
}

type evMeta struct {
	rev      uint64
	received time.Time
	ids      []string
}

// mirror is this node's in-memory view of the bucket. Every change, from the
// watch or from this node's own writes, goes through apply*, which keep the
// newest revision of each key.
type mirror struct {
	mu sync.Mutex

	recs     map[string]*rec
	lanes    map[string]*lane
	laneList []*lane
	rr       int
	orders   map[string][]*rec // by position

	all     index
	byState map[queue.State]*index
	byField [5]map[string]*index // webhook, event, call_id, target, event_id
	counts  map[queue.State]int
	// tcounts counts each target's records by state, for TargetStats (the
	// customer portal's counts), without a walk of the target's records.
	tcounts map[string]*[4]int
	age     ageHeap

	events map[string]*evMeta
	pz     *pauseSet

	// tomb holds the revision of a key's deletion until the watch has gone
	// past it, so a late put of the same key cannot bring it back.
	tomb     map[string]uint64
	watchRev uint64

	n *notifier
}

const (
	fWebhook = iota
	fEvent
	fCall
	fTarget
	fEventID
)

func newMirror(pz *pauseSet, n *notifier) *mirror {
	m := &mirror{
		recs:    map[string]*rec{},
		lanes:   map[string]*lane{},
		orders:  map[string][]*rec{},
		byState: map[queue.State]*index{},
		counts:  map[queue.State]int{},
		tcounts: map[string]*[4]int{},
		events:  map[string]*evMeta{},
		pz:      pz,
		n:       n,
		tomb:    map[string]uint64{},
	}
	for i := range m.byField {
		m.byField[i] = map[string]*index{}
	}
	for _, s := range []queue.State{queue.Pending, queue.Leased, queue.Delivered, queue.Dead} {
		m.byState[s] = &index{}
	}
	return m
}

func fieldValues(d *queue.Delivery) [5]string {
	return [5]string{d.Webhook, d.Event, d.CallID, d.Target, d.EventID}
}

// signal wakes every waiting Lease.
func (m *mirror) signal() { m.n.signal() }

func (m *mirror) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.recs)
}

func untoken(tok string) string {
	if b, ok := strings.CutPrefix(tok, "="); ok {
		if id, err := base64.RawURLEncoding.DecodeString(b); err == nil {
			return string(id)
		}
	}
	return tok
}

// apply routes one change of a bucket key. Called with mu held.
func (m *mirror) apply(key string, rev uint64, val []byte, deleted bool) {
	if t, ok := m.tomb[key]; ok && rev <= t {
		return
	}
	switch {
	case strings.HasPrefix(key, kDelivery):
		m.applyDelivery(key, untoken(key[len(kDelivery):]), rev, val, deleted)
	case strings.HasPrefix(key, kEvent):
		m.applyEvent(key, untoken(key[len(kEvent):]), rev, val, deleted)
	default:
		return
	}
	if deleted {
		m.tomb[key] = rev
	}
	m.signal()
}

// watched records how far the watch has come and forgets tombstones it has
// passed. Called with mu held.
func (m *mirror) watched(rev uint64) {
	if rev > m.watchRev {
		m.watchRev = rev
	}
	if len(m.tomb) > 256 {
		for k, t := range m.tomb {
			if t <= m.watchRev {
				delete(m.tomb, k)
			}
		}
	}
}

func (m *mirror) applyDelivery(key, id string, rev uint64, val []byte, deleted bool) {
	r := m.recs[id]
	if r != nil && rev <= r.rev {
		return
	}
	if deleted {
		if r != nil {
			m.drop(r)
		}
		return
	}
	rc, err := decodeRecord(val)
	if err != nil || rc.ID != id {
		return
	}
	if r == nil {
		r = &rec{id: id, heapIdx: -1, ageIdx: -1, d: rc.Delivery, created: rc.CreatedAt.UnixNano()}
		m.recs[id] = r
		m.all.insert(r)
		for i, v := range fieldValues(&r.d) {
			ix := m.byField[i][v]
			if ix == nil {
				ix = &index{}
				m.byField[i][v] = ix
			}
			ix.insert(r)
		}
	} else {
		m.detach(r)
	}
	r.d = rc.Delivery
	r.d.Attempts = nil
	r.nonce = ""
	r.chunks = rc.Chunks
	r.pos = rc.Pos
	if r.pos == 0 {
		r.pos = rev
	}
	r.rev = rev
	m.attach(r)
}

// attach adds r's state to counters, the state index, its lane and order.
func (m *mirror) attach(r *rec) {
	m.counts[r.d.State]++
	m.countTarget(r, 1)
	if ix := m.byState[r.d.State]; ix != nil {
		ix.insert(r)
	}
	if r.final() {
		return
	}
	heap.Push(&m.age, r)
	if r.lane == nil {
		r.lane = m.laneFor(r.d.Destination, r.d.WebhookKey())
	}
	if k := r.d.OrderKey; k != "" {
		q := m.orders[k]
		i := sort.Search(len(q), func(i int) bool { return q[i].pos > r.pos || q[i].pos == r.pos && q[i].id >= r.id })
		m.orders[k] = slices.Insert(q, i, r)
		r.inOrder = true
		m.settleOrder(k)
		return
	}
	m.settle(r)
}

// detach undoes attach.
func (m *mirror) detach(r *rec) {
	m.counts[r.d.State]--
	m.countTarget(r, -1)
	if ix := m.byState[r.d.State]; ix != nil {
		ix.remove(r)
	}
	if r.ageIdx >= 0 {
		heap.Remove(&m.age, r.ageIdx)
	}
	if r.heapIdx >= 0 {
		heap.Remove(&r.lane.h, r.heapIdx)
	}
	if r.inOrder {
		k := r.d.OrderKey
		q := m.orders[k]
		if i := slices.Index(q, r); i >= 0 {
			q = slices.Delete(q, i, i+1)
		}
		r.inOrder = false
		if len(q) == 0 {
			delete(m.orders, k)
		} else {
			m.orders[k] = q
			m.settleOrder(k)
		}
	}
}

func (m *mirror) drop(r *rec) {
	m.detach(r)
	m.all.remove(r)
	for i, v := range fieldValues(&r.d) {
		if ix := m.byField[i][v]; ix != nil {
			ix.remove(r)
			if len(ix.s) == 0 {
				delete(m.byField[i], v)
			}
		}
	}
	delete(m.recs, r.id)
}

// settle puts r in its lane's heap exactly when it can be leased by time:
// unfinished, not being claimed, and first of its order key.
func (m *mirror) settle(r *rec) {
	want := !r.final() && !r.claiming && r.stale != r.rev && r.lane != nil && m.recs[r.id] == r
	if want && r.inOrder {
		q := m.orders[r.d.OrderKey]
		want = len(q) > 0 && q[0] == r
	}
	switch {
	case want && r.heapIdx < 0:
		heap.Push(&r.lane.h, r)
	case !want && r.heapIdx >= 0:
		heap.Remove(&r.lane.h, r.heapIdx)
	}
}

// settleOrder settles the first two of an order key: a change can only make
// the head a new one or the old one the second.
func (m *mirror) settleOrder(k string) {
	q := m.orders[k]
	for i := 0; i < len(q) && i < 2; i++ {
		m.settle(q[i])
	}
}

func (m *mirror) laneFor(dest, hook string) *lane {
	k := dest + "\x00" + hook
	l := m.lanes[k]
	if l == nil {
		l = &lane{dest: dest, hook: hook}
		m.lanes[k] = l
		m.laneList = append(m.laneList, l)
	}
	return l
}

func (m *mirror) applyEvent(key, id string, rev uint64, val []byte, deleted bool) {
	e := m.events[id]
	if e != nil && rev <= e.rev {
		return
	}
	if deleted {
		delete(m.events, id)
		return
	}
	er, err := decodeEvent(val)
	if err != nil || er.ID != id {
		return
	}
	m.events[id] = &evMeta{rev: rev, received: er.ReceivedAt, ids: er.Deliveries}
}

// copyOut returns the delivery as callers see it.
func (r *rec) copyOut() *queue.Delivery {
	d := r.d
	return &d
}
