package queuetest_test

// memQueue is a deliberately simple in-memory reference backend: one mutex,
// maps and linear scans. It exists only to check the suite itself; it is not
// shipped and not fast (its Lease is O(n), which the suite's fairness test
// cannot tell from O(1) at 5,000 deliveries in memory).
//
// The -break flag makes it wrong in one named way, to show that the suite
// catches it:
//
//	go test ./module/queue/queuetest/ -args -break=tokens
//
// budgets: ignore destination and webhook budgets
// paused: ignore LeaseRequest.Paused
// tokens: accept any token of the delivery while it is leased
// token-reset: lease numbers (and so tokens) restart on reopen
// atomic: enqueue piece by piece, leaving a partial envelope on failure
// order: ignore OrderKey
// reopen-leases: forget lease ends on reopen (leased deliveries stay leased)
// scan-limit: Lease looks at the 1,000 earliest due deliveries only
// cursor-offset: List cursors are offsets, so inserts shift pages
// dedup-refs: a duplicate returns its own refs instead of the first's
// no-wake: a long poll does not wake for new work, only at its end
// prune-events: Prune removes old events whatever their deliveries
// retry-count: RetryDead keeps the attempt count
// ignore-due: Lease ignores NextAttempt

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/queuetest"
)

var breakFlag = flag.String("break", "", "break the reference backend in one named way (see memqueue_test.go)")

func broken(what string) bool { return *breakFlag == what }

func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, dir string, o queuetest.Options) queue.Queue {
		return openMem(dir, o)
	})
}

var (
	registryMu sync.Mutex
	registry   = map[string]*memStore{}
)

type memRec struct {
	d   queue.Delivery
	seq int64
	// orderSeq is the place in its order key: seq, or a later one after
	// a retry by hand.
	orderSeq int64
	token    queue.Token
	leases   int
}

type dedupRec struct {
	eventID string
	refs    []queue.Ref
	at      time.Time
}

type memStore struct {
	mu     sync.Mutex
	recs   map[string]*memRec
	events map[string]*queue.Event
	dedup  map[string]dedupRec
	pauses map[string]queue.Pause
	seq    int64
	wake   chan struct{}
}

type memQueue struct {
	s         *memStore
	window    time.Duration
	max       int
	closed    atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
}

var _ queuetest.Crasher = (*memQueue)(nil)

func openMem(dir string, o queuetest.Options) *memQueue {
	registryMu.Lock()
	s := registry[dir]
	if s == nil {
		s = &memStore{recs: map[string]*memRec{}, events: map[string]*queue.Event{},
			dedup: map[string]dedupRec{}, pauses: map[string]queue.Pause{}, wake: make(chan struct{})}
		registry[dir] = s
	} else {
		s.recover()
	}
	registryMu.Unlock()
	w := o.DedupWindow
	if w == 0 {
		w = 24 * time.Hour
	}
	return &memQueue{s: s, window: w, max: o.MaxPending, done: make(chan struct{})}
}

// recover is what a restart does: every lease is void.
func (s *memStore) recover() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, r := range s.recs {
		if broken("token-reset") {
			r.leases = 0
		}
		if r.d.State != queue.Leased {
			continue
		}
		if broken("reopen-leases") {
			r.d.LeasedUntil = time.Time{}
			continue
		}
		r.d.State, r.d.NextAttempt, r.d.LeasedUntil, r.token = queue.Pending, now, time.Time{}, ""
	}
}

func (s *memStore) notify() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (q *memQueue) check(ctx context.Context) error {
	if q.closed.Load() {
		return queue.ErrClosed
	}
	return ctx.Err()
}

func clone(d *queue.Delivery, attempts bool) *queue.Delivery {
	c := *d
	c.Request.Header = slices.Clone(d.Request.Header)
	c.Request.Body = slices.Clone(d.Request.Body)
	c.Policy.SealedSecret = slices.Clone(d.Policy.SealedSecret)
	c.Attempts = nil
	if attempts {
		for _, a := range d.Attempts {
			a.Response = slices.Clone(a.Response)
			c.Attempts = append(c.Attempts, a)
		}
	}
	return &c
}

func live(s queue.State) bool { return s == queue.Pending || s == queue.Leased }

func (q *memQueue) Enqueue(ctx context.Context, env *queue.Envelope) (queue.EnqueueResult, error) {
	if err := q.check(ctx); err != nil {
		return queue.EnqueueResult{}, err
	}
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if k := env.DedupKey; k != "" {
		if dr, ok := s.dedup[k]; ok && now.Sub(dr.at) < q.window {
			res := queue.EnqueueResult{EventID: dr.eventID, Refs: slices.Clone(dr.refs), Duplicate: true}
			if broken("dedup-refs") {
				res.Refs = nil
				for _, d := range env.Deliveries {
					res.Refs = append(res.Refs, queue.Ref{ID: d.ID, Webhook: d.Webhook})
				}
			}
			return res, nil
		}
	}
	seen := map[string]bool{}
	newLive := 0
	for _, d := range env.Deliveries {
		if s.recs[d.ID] != nil || seen[d.ID] {
			return queue.EnqueueResult{}, fmt.Errorf("delivery id %q is not unique", d.ID)
		}
		seen[d.ID] = true
		if live(d.State) || d.State == "" {
			newLive++
		}
	}
	nLive := 0
	for _, r := range s.recs {
		if live(r.d.State) {
			nLive++
		}
	}
	full := fmt.Errorf("%w: limit %d", queue.ErrFull, q.max)
	if !broken("atomic") && q.max > 0 && nLive+newLive > q.max {
		return queue.EnqueueResult{}, full
	}
	ev := env.Event
	ev.Data = slices.Clone(ev.Data)
	s.events[ev.ID] = &ev
	res := queue.EnqueueResult{EventID: ev.ID}
	for _, d := range env.Deliveries {
		c := clone(d, true)
		if c.State != queue.Dead && c.State != queue.Delivered {
			c.State = queue.Pending
			if broken("atomic") && q.max > 0 && nLive >= q.max {
				s.notify()
				return queue.EnqueueResult{}, full
			}
			nLive++
		}
		c.LeasedUntil = time.Time{}
		s.seq++
		s.recs[c.ID] = &memRec{d: *c, seq: s.seq, orderSeq: s.seq}
		ref := queue.Ref{ID: c.ID, Webhook: c.Webhook, State: c.State}
		if c.State == queue.Dead {
			ref.Error = c.LastError
		}
		res.Refs = append(res.Refs, ref)
	}
	if env.DedupKey != "" {
		s.dedup[env.DedupKey] = dedupRec{eventID: ev.ID, refs: slices.Clone(res.Refs), at: now}
	}
	s.notify()
	return res, nil
}

// due is when r can be leased, and whether it can be at all.
func due(r *memRec) (time.Time, bool) {
	switch r.d.State {
	case queue.Pending:
		return r.d.NextAttempt, true
	case queue.Leased:
		return r.d.LeasedUntil, !r.d.LeasedUntil.IsZero()
	}
	return time.Time{}, false
}

// leaseLocked hands out what it can now and says when the next delivery not
// yet due will be.
func (s *memStore) leaseLocked(req queue.LeaseRequest, now time.Time) ([]queue.Lease, time.Time) {
	heads := map[string]int64{}
	if !broken("order") {
		for _, r := range s.recs {
			if k := r.d.OrderKey; k != "" && live(r.d.State) {
				if h, ok := heads[k]; !ok || r.orderSeq < h {
					heads[k] = r.orderSeq
				}
			}
		}
	}
	var cands []*memRec
	var next time.Time
	for _, r := range s.recs {
		at, ok := due(r)
		if !ok {
			continue
		}
		if at.After(now) && !broken("ignore-due") {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		if k := r.d.OrderKey; k != "" && !broken("order") && heads[k] != r.orderSeq {
			continue
		}
		cands = append(cands, r)
	}
	slices.SortFunc(cands, func(a, b *memRec) int {
		da, _ := due(a)
		db, _ := due(b)
		if c := da.Compare(db); c != 0 {
			return c
		}
		return int(a.seq - b.seq)
	})
	if broken("scan-limit") && len(cands) > 1000 {
		cands = cands[:1000]
	}
	takenDest, takenHook := map[string]int{}, map[string]int{}
	var out []queue.Lease
	for _, r := range cands {
		if len(out) >= max(req.Max, 1) {
			break
		}
		d := &r.d
		key := d.WebhookKey()
		if req.Paused[key] && !broken("paused") {
			continue
		}
		if !broken("budgets") {
			if dest := d.Destination; dest != "" {
				b, ok := req.DestinationBudget[dest]
				if !ok {
					b = req.DefaultDestinationBudget
					ok = b != 0
				}
				if ok && takenDest[dest] >= b {
					continue
				}
			}
			if b, ok := req.WebhookBudget[key]; ok && takenHook[key] >= b {
				continue
			}
		}
		takenDest[d.Destination]++
		takenHook[key]++
		r.leases++
		r.token = queue.Token(d.ID + "#" + strconv.Itoa(r.leases))
		d.State = queue.Leased
		d.LeasedUntil = now.Add(req.Lease)
		out = append(out, queue.Lease{Delivery: clone(d, false), Token: r.token, Until: d.LeasedUntil})
	}
	return out, next
}

func (q *memQueue) Lease(ctx context.Context, req queue.LeaseRequest) ([]queue.Lease, error) {
	deadline := time.Now().Add(req.Wait)
	for {
		if err := q.check(ctx); err != nil {
			return nil, err
		}
		now := time.Now()
		q.s.mu.Lock()
		ls, next := q.s.leaseLocked(req, now)
		wake := q.s.wake
		q.s.mu.Unlock()
		if len(ls) > 0 || !now.Before(deadline) {
			return ls, nil
		}
		wait := deadline.Sub(now)
		if !next.IsZero() && next.Sub(now) < wait && !broken("no-wake") {
			wait = next.Sub(now)
		}
		timer := time.NewTimer(wait)
		select {
		case <-wakeOrNil(wake):
		case <-timer.C:
		case <-ctx.Done():
		case <-q.done:
		}
		timer.Stop()
	}
}

func wakeOrNil(c chan struct{}) chan struct{} {
	if broken("no-wake") {
		return nil
	}
	return c
}

// held finds the leased record t names.
func (s *memStore) held(t queue.Token) (*memRec, error) {
	id, _, ok := strings.Cut(string(t), "#")
	if !ok {
		return nil, queue.ErrNotFound
	}
	r := s.recs[id]
	if r == nil {
		return nil, queue.ErrNotFound
	}
	if r.d.State != queue.Leased || r.token != t && !broken("tokens") {
		return nil, queue.ErrStaleLease
	}
	return r, nil
}

func (q *memQueue) outcome(ctx context.Context, t queue.Token, f func(r *memRec, now time.Time)) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	r, err := q.s.held(t)
	if err != nil {
		return err
	}
	f(r, time.Now())
	if r.d.State != queue.Leased {
		r.token = ""
		r.d.LeasedUntil = time.Time{}
	}
	q.s.notify()
	return nil
}

func record(r *memRec, a queue.Attempt) {
	a.Response = slices.Clone(a.Response)
	r.d.Attempts = append(r.d.Attempts, a)
	if n := len(r.d.Attempts); n > 50 {
		r.d.Attempts = r.d.Attempts[n-50:]
	}
	r.d.AttemptCount++
}

func (q *memQueue) Ack(ctx context.Context, t queue.Token, a queue.Attempt) error {
	return q.outcome(ctx, t, func(r *memRec, now time.Time) {
		record(r, a)
		r.d.State, r.d.FinishedAt, r.d.LastError, r.d.NextAttempt = queue.Delivered, now, "", time.Time{}
	})
}

func (q *memQueue) Retry(ctx context.Context, t queue.Token, a queue.Attempt, next time.Time, reason string) error {
	return q.outcome(ctx, t, func(r *memRec, now time.Time) {
		record(r, a)
		r.d.State, r.d.NextAttempt, r.d.LastError = queue.Pending, next, reason
	})
}

func (q *memQueue) Dead(ctx context.Context, t queue.Token, a queue.Attempt, reason string) error {
	return q.outcome(ctx, t, func(r *memRec, now time.Time) {
		if !a.Start.IsZero() || a.Duration != 0 || a.Status != 0 || a.Error != "" || len(a.Response) > 0 {
			record(r, a)
		}
		r.d.State, r.d.FinishedAt, r.d.LastError, r.d.NextAttempt = queue.Dead, now, reason, time.Time{}
	})
}

func (q *memQueue) Release(ctx context.Context, t queue.Token, next time.Time) error {
	return q.outcome(ctx, t, func(r *memRec, now time.Time) {
		r.d.State, r.d.NextAttempt = queue.Pending, next
	})
}

func (q *memQueue) Extend(ctx context.Context, t queue.Token, until time.Time) error {
	return q.outcome(ctx, t, func(r *memRec, now time.Time) { r.d.LeasedUntil = until })
}

func (q *memQueue) Get(ctx context.Context, id string) (*queue.Delivery, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	r := q.s.recs[id]
	if r == nil {
		return nil, queue.ErrNotFound
	}
	return clone(&r.d, true), nil
}

func (q *memQueue) List(ctx context.Context, f queue.Filter) (queue.Page, error) {
	if err := q.check(ctx); err != nil {
		return queue.Page{}, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	var rs []*memRec
	for _, r := range q.s.recs {
		d := &r.d
		if (f.State == "" || d.State == f.State) && (f.Webhook == "" || d.Webhook == f.Webhook) &&
			(f.Event == "" || d.Event == f.Event) && (f.CallID == "" || d.CallID == f.CallID) &&
			(f.Target == "" || d.Target == f.Target) && (f.EventID == "" || d.EventID == f.EventID) {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *memRec) int {
		if c := b.d.CreatedAt.Compare(a.d.CreatedAt); c != 0 {
			return c
		}
		return int(b.seq - a.seq)
	})
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	start := 0
	if f.Cursor != "" {
		if broken("cursor-offset") {
			start, _ = strconv.Atoi(f.Cursor)
		} else {
			ns, seq, ok := strings.Cut(f.Cursor, ":")
			if !ok {
				return queue.Page{}, errors.New("bad cursor")
			}
			n, _ := strconv.ParseInt(ns, 10, 64)
			sq, _ := strconv.ParseInt(seq, 10, 64)
			c := time.Unix(0, n)
			start = len(rs)
			for i, r := range rs {
				if r.d.CreatedAt.Before(c) || r.d.CreatedAt.Equal(c) && r.seq < sq {
					start = i
					break
				}
			}
		}
	}
	start = min(start, len(rs))
	end := min(start+limit, len(rs))
	var p queue.Page
	for _, r := range rs[start:end] {
		p.Deliveries = append(p.Deliveries, clone(&r.d, false))
	}
	if end < len(rs) {
		last := rs[end-1]
		p.Next = fmt.Sprintf("%d:%d", last.d.CreatedAt.UnixNano(), last.seq)
		if broken("cursor-offset") {
			p.Next = strconv.Itoa(end)
		}
	}
	return p, nil
}

func (q *memQueue) Stats(ctx context.Context) (queue.Stats, error) {
	if err := q.check(ctx); err != nil {
		return queue.Stats{}, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	var st queue.Stats
	for _, r := range q.s.recs {
		tally(&st, r.d.State)
		if live(r.d.State) && (st.OldestPending.IsZero() || r.d.CreatedAt.Before(st.OldestPending)) {
			st.OldestPending = r.d.CreatedAt
		}
	}
	return st, nil
}

func (q *memQueue) TargetStats(ctx context.Context, target string) (queue.Stats, error) {
	if err := q.check(ctx); err != nil {
		return queue.Stats{}, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	var st queue.Stats
	for _, r := range q.s.recs {
		if r.d.Target == target || broken("target-stats") {
			tally(&st, r.d.State)
		}
	}
	return st, nil
}

// tally counts one delivery in state s.
func tally(st *queue.Stats, s queue.State) {
	switch s {
	case queue.Pending:
		st.Pending++
	case queue.Leased:
		st.Leased++
	case queue.Delivered:
		st.Delivered++
	case queue.Dead:
		st.Dead++
	}
}

// dead returns the dead records ids name (all of them when none).
func (s *memStore) dead(ids []string) []*memRec {
	var out []*memRec
	if len(ids) == 0 {
		for _, r := range s.recs {
			if r.d.State == queue.Dead {
				out = append(out, r)
			}
		}
		return out
	}
	for _, id := range ids {
		if r := s.recs[id]; r != nil && r.d.State == queue.Dead {
			out = append(out, r)
		}
	}
	return out
}

func revive(r *memRec, now time.Time) {
	r.d.State, r.d.RetriedAt, r.d.NextAttempt = queue.Pending, now, now
	if !broken("retry-count") {
		r.d.AttemptCount = 0
	}
	r.d.FinishedAt, r.d.LeasedUntil, r.token = time.Time{}, time.Time{}, ""
}

func (q *memQueue) RetryDead(ctx context.Context, ids ...string) (int, error) {
	if err := q.check(ctx); err != nil {
		return 0, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	rs := q.s.dead(ids)
	now := time.Now()
	for _, r := range rs {
		revive(r, now)
		q.s.seq++
		r.orderSeq = q.s.seq // the back of its order key
	}
	q.s.notify()
	return len(rs), nil
}

func (q *memQueue) Redeliver(ctx context.Context, d *queue.Delivery) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	r := q.s.recs[d.ID]
	if r == nil {
		return queue.ErrNotFound
	}
	if r.d.State != queue.Dead {
		return queue.ErrNotDead
	}
	c := clone(d, false)
	r.d.Request, r.d.Policy, r.d.Destination, r.d.OrderKey = c.Request, c.Policy, c.Destination, c.OrderKey
	revive(r, time.Now())
	q.s.seq++
	r.orderSeq = q.s.seq // the back of its order key
	q.s.notify()
	return nil
}

func (q *memQueue) DeleteDead(ctx context.Context, ids ...string) (int, error) {
	if err := q.check(ctx); err != nil {
		return 0, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	rs := q.s.dead(ids)
	for _, r := range rs {
		delete(q.s.recs, r.d.ID)
	}
	return len(rs), nil
}

func (q *memQueue) GetEvent(ctx context.Context, id string) (*queue.Event, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	e := q.s.events[id]
	if e == nil {
		return nil, queue.ErrNotFound
	}
	c := *e
	c.Data = slices.Clone(e.Data)
	return &c, nil
}

func (q *memQueue) SetPause(ctx context.Context, target, webhook string, p *queue.Pause) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	key := queue.WebhookKey(target, webhook)
	if p == nil {
		delete(q.s.pauses, key)
		return nil
	}
	c := *p
	c.Target, c.Webhook = target, webhook
	q.s.pauses[key] = c
	return nil
}

func (q *memQueue) Pauses(ctx context.Context) ([]queue.Pause, error) {
	if err := q.check(ctx); err != nil {
		return nil, err
	}
	q.s.mu.Lock()
	defer q.s.mu.Unlock()
	var out []queue.Pause
	for _, p := range q.s.pauses {
		out = append(out, p)
	}
	return out, nil
}

func (q *memQueue) Prune(ctx context.Context, pr queue.PruneRequest) error {
	if err := q.check(ctx); err != nil {
		return err
	}
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, r := range s.recs {
		if r.d.State == queue.Delivered && r.d.FinishedAt.Before(pr.DeliveredBefore) {
			delete(s.recs, id)
		}
	}
	for id, e := range s.events {
		if !e.ReceivedAt.Before(pr.EventsBefore) {
			continue
		}
		done := true
		for _, r := range s.recs {
			if broken("prune-events") {
				break
			}
			if r.d.EventID == id && r.d.State != queue.Delivered {
				done = false
				break
			}
		}
		if done {
			delete(s.events, id)
		}
	}
	for k, dr := range s.dedup {
		if dr.at.Before(pr.DedupBefore) {
			delete(s.dedup, k)
		}
	}
	return nil
}

func (q *memQueue) Close() error {
	q.closeOnce.Do(func() {
		q.closed.Store(true)
		close(q.done)
	})
	return nil
}

// SimulateCrash is Close: nothing in memory needs flushing.
func (q *memQueue) SimulateCrash() error { return q.Close() }
