package embedded

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// never is the next-due time of a lane with nothing left to lease.
var never = time.Unix(1<<40, 0)

// lane is one (destination, webhook) due range and what is known of it.
type lane struct {
	name string
	dest string
	hook string // queue.WebhookKey
	pfx  []byte
	end  []byte
	// lwm is a key no live key of the lane sorts before: scans start here,
	// not at pfx, so they never walk the tombstones of a drained range.
	lwm []byte
	// next is the earliest due time of a key not leased, as far as known:
	// zero means unknown (scan), never means nothing to lease.
	next time.Time
}

func laneName(dest, hook string) string { return dest + "\x00" + hook }

// touch records a key written into the lane with due time due.
func (l *lane) touch(key []byte, due time.Time) {
	if l.lwm == nil || bytes.Compare(key, l.lwm) < 0 {
		l.lwm = append(l.lwm[:0:0], key...)
	}
	if !l.next.IsZero() && due.Before(l.next) {
		l.next = due
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
	l := &lane{name: name, dest: dest, hook: hook, pfx: pfx, end: prefixEnd(pfx)}
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

func (s *scheduler) unclaim(lr *leaseRec) {
	s.mu.Lock()
	lr.finishing = false
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
				s.lane(e.lane).touch(e.key, e.due)
				wake = true
			case fxUnlease:
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
			lr.lane.touch(lr.dueKey, time.Time{})
			lr.lane.next = time.Time{}
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
