package embedded

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// never is the next-due time of a lane with nothing left to lease.
var never = time.Unix(1<<40, 0)

// lane is one (destination, webhook) due range and what is known of it.
//
// The lane keeps a window of its first due keys in memory: every live due
// key in [lwm, hi] is in win, sorted, so leasing reads no store while the
// window has work. Keys written into that range (enqueues, retries) go
// into the window as they are committed, with their records while the
// record cache has room, so a queue that keeps pace leases from memory.
// Keys past hi are on disk only; the window is refilled from hi when it
// runs out. hi == nil means the window holds every live key of the lane.
type lane struct {
	name string
	dest string
	hook string // queue.WebhookKey
	pfx  []byte
	end  []byte
	win  []winEntry
	// hi is the last key the window covers (nil: everything).
	hi []byte
	// loaded is false until the window was first filled from disk; seed
	// is where that first fill starts (the first key Open saw).
	loaded bool
	seed   []byte
	// next is the earliest due time of a key not leased, as far as known:
	// zero means unknown (look), never means nothing to lease.
	next time.Time
}

// winEntry is one due key in a lane's window.
type winEntry struct {
	key []byte
	id  string
	due time.Time
	// rec is the delivery's records as committed, when cached.
	rec *cachedRec
}

// cachedRec is a delivery's records kept with its due key, so leasing it
// needs no read.
type cachedRec struct {
	static []byte
	m      mutable
	ok     bool // m was read (prefetch)
}

const (
	// windowSize bounds each lane's window.
	windowSize = 2048
	// recordCacheBytes bounds the records kept in windows, all lanes
	// together; it keeps the heap flat whatever the backlog.
	recordCacheBytes = 4 << 20
)

func laneName(dest, hook string) string { return dest + "\x00" + hook }

// lwm is the key scans of the store start from: no live key of the lane
// sorts before it.
func (l *lane) lwm() []byte {
	if !l.loaded && l.seed != nil {
		return l.seed
	}
	if len(l.win) > 0 {
		return l.win[0].key
	}
	if l.hi != nil {
		return l.hi
	}
	return l.pfx
}

func (l *lane) find(key []byte) (int, bool) {
	return slices.BinarySearchFunc(l.win, key, func(e winEntry, k []byte) int { return bytes.Compare(e.key, k) })
}

// insert records a committed due key. It reports whether the window took
// the record.
func (s *scheduler) insert(l *lane, key []byte, id string, due time.Time, rec *cachedRec) {
	if !l.loaded {
		// Not read from disk yet: the first lease will, and will find it.
		l.next = time.Time{}
		return
	}
	if l.hi != nil && bytes.Compare(key, l.hi) > 0 {
		// Past the window: on disk, found by a refill.
		if !l.next.IsZero() && due.Before(l.next) {
			l.next = time.Time{}
		}
		return
	}
	i, found := l.find(key)
	if found {
		if l.win[i].rec == nil && rec != nil && s.cacheRec(rec) {
			l.win[i].rec = rec
		}
	} else {
		e := winEntry{key: key, id: id, due: due}
		if rec != nil && s.cacheRec(rec) {
			e.rec = rec
		}
		l.win = slices.Insert(l.win, i, e)
		if len(l.win) > windowSize {
			// Give the tail back to the disk.
			last := l.win[len(l.win)-1]
			s.dropRec(&l.win[len(l.win)-1])
			l.win = l.win[:len(l.win)-1]
			l.hi = l.win[len(l.win)-1].key
			_ = last
		}
	}
	if !l.next.IsZero() && due.Before(l.next) {
		l.next = due
	}
}

// remove forgets a due key the store no longer has.
func (s *scheduler) remove(l *lane, key []byte) {
	if i, ok := l.find(key); ok {
		s.dropRec(&l.win[i])
		l.win = slices.Delete(l.win, i, i+1)
	}
}

func (s *scheduler) cacheRec(r *cachedRec) bool {
	if s.cached+len(r.static) > recordCacheBytes {
		return false
	}
	s.cached += len(r.static)
	return true
}

func (s *scheduler) dropRec(e *winEntry) {
	if e.rec != nil {
		s.cached -= len(e.rec.static)
		e.rec = nil
	}
}

// leaseRec is one lease held in memory, with what its outcome needs to
// write without reading the records again.
type leaseRec struct {
	id        string
	epoch     uint64
	until     time.Time
	lane      *lane
	dueKey    []byte
	st        static
	raw       []byte // the static record as stored
	m         mutable
	finishing bool // an outcome for it is being committed
}

func (lr *leaseRec) token() queue.Token {
	return queue.Token(strconv.FormatUint(lr.epoch, 36) + "." + lr.id)
}

func parseToken(t queue.Token) (uint64, string, bool) {
	e, id, ok := strings.Cut(string(t), ".")
	if !ok {
		return 0, "", false
	}
	n, err := strconv.ParseUint(e, 36, 64)
	return n, id, err == nil
}

// scheduler is the in-memory half of the queue.
type scheduler struct {
	mu         sync.Mutex
	lanes      map[string]*lane
	ring       []*lane
	rr         int
	leases     map[string]*leaseRec
	epoch      uint64
	nextExpiry time.Time
	// changed is closed (and replaced) when work may have become due.
	changed chan struct{}
	// pendingLWM is the low-water mark of the pending state index.
	pendingLWM []byte
	// cached is the bytes of records held in lane windows.
	cached int
	// opened is set once Open has found the lanes on disk: a lane made
	// after that has nothing on disk yet, so its window starts complete.
	opened bool
}

func (s *scheduler) init() {
	s.lanes = make(map[string]*lane)
	s.leases = make(map[string]*leaseRec)
	s.changed = make(chan struct{})
}

func (s *scheduler) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakeLocked()
}

// lane returns (creating) the lane called name. Callers hold mu or own s.
func (s *scheduler) lane(name string) *lane {
	if l := s.lanes[name]; l != nil {
		return l
	}
	dest, hook, _ := strings.Cut(name, "\x00")
	pfx := lanePrefix(name)
	l := &lane{name: name, dest: dest, hook: hook, pfx: pfx, end: prefixEnd(pfx), loaded: s.opened}
	s.lanes[name] = l
	s.ring = append(s.ring, l)
	return l
}

func (s *scheduler) wakeLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// claim checks that t is the live lease and marks it finishing, so it
// neither expires nor takes a second outcome while its write commits.
func (s *scheduler) claim(t queue.Token, now time.Time) (*leaseRec, error) {
	epoch, id, ok := parseToken(t)
	if !ok {
		return nil, queue.ErrStaleLease
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lr := s.leases[id]
	if lr == nil || lr.epoch != epoch || lr.finishing || !now.Before(lr.until) {
		return nil, queue.ErrStaleLease
	}
	lr.finishing = true
	return lr, nil
}

// unclaim hands a lease back after its outcome failed to commit. A sweep
// while it was finishing skipped it and may have left no next expiry, so
// it is put back: else the lease could outlive its end until another
// lease or a restart.
func (s *scheduler) unclaim(lr *leaseRec) {
	s.mu.Lock()
	lr.finishing = false
	if s.leases[lr.id] == lr && (s.nextExpiry.IsZero() || lr.until.Before(s.nextExpiry)) {
		s.nextExpiry = lr.until
	}
	s.mu.Unlock()
}

// extend moves a live lease's end.
func (s *scheduler) extend(t queue.Token, now, until time.Time) error {
	epoch, id, ok := parseToken(t)
	if !ok {
		return queue.ErrStaleLease
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lr := s.leases[id]
	if lr == nil || lr.epoch != epoch || lr.finishing || !now.Before(lr.until) {
		return queue.ErrStaleLease
	}
	lr.until = until
	return nil
}

// apply runs the effects of committed ops.
func (s *scheduler) apply(ops []*op) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wake := false
	for _, o := range ops {
		if o.err != nil {
			continue
		}
		for _, e := range o.fx {
			switch e.kind {
			case fxDue:
				s.insert(s.lane(e.lane), e.key, e.id, e.due, e.rec)
				wake = true
			case fxUnlease:
				s.remove(e.lease.lane, e.lease.dueKey)
				if cur := s.leases[e.lease.id]; cur == e.lease {
					delete(s.leases, e.lease.id)
				}
				wake = true // a lane blocked on its leased head may go on
			case fxWake:
				wake = true
			case fxPendingIndex:
				if s.pendingLWM == nil || bytes.Compare(e.key, s.pendingLWM) < 0 {
					s.pendingLWM = e.key
				}
			}
		}
	}
	if wake {
		s.wakeLocked()
	}
}

// sweep drops expired leases (unless their outcome is being committed) and
// makes their lanes scan again.
func (s *scheduler) sweep(now time.Time) {
	if s.nextExpiry.IsZero() || now.Before(s.nextExpiry) {
		return
	}
	var next time.Time
	for id, lr := range s.leases {
		if lr.finishing {
			continue
		}
		if !now.Before(lr.until) {
			delete(s.leases, id)
			lr.lane.next = time.Time{} // its key is in the window again
			continue
		}
		if next.IsZero() || lr.until.Before(next) {
			next = lr.until
		}
	}
	s.nextExpiry = next
}

func (s *scheduler) addLease(lr *leaseRec) {
	s.epoch++
	lr.epoch = s.epoch
	s.leases[lr.id] = lr
	if s.nextExpiry.IsZero() || lr.until.Before(s.nextExpiry) {
		s.nextExpiry = lr.until
	}
}
