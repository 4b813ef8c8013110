package embedded

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// The record encoding is a compact, versioned binary one: uvarint lengths
// and numbers, times as unix nanoseconds. It replaced JSON because every
// state change used to decode and re-encode the whole record; now the
// small mutable state lives in its own record and is the only thing an
// outcome rewrites.

const codecVersion = 1

var errCorrupt = errors.New("corrupt record")

type enc struct{ b []byte }

func (e *enc) u(v uint64)    { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) i(v int64)     { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) s(v string)    { e.u(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) by(v []byte)   { e.u(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) t(v time.Time) { e.i(timeNano(v)) }
func (e *enc) d(v time.Duration) {
	e.i(int64(v))
}
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *dec) u() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) i() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) raw() []byte {
	n := d.u()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) s() string  { return string(d.raw()) }
func (d *dec) by() []byte { v := d.raw(); return append([]byte(nil), v...) }
func (d *dec) t() time.Time {
	return nanoTime(d.i())
}
func (d *dec) d() time.Duration { return time.Duration(d.i()) }
func (d *dec) bool() bool {
	if len(d.b) < 1 {
		d.fail()
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

// timeNano maps zero to 0 and clamps to what fits, so a zero time survives
// a round trip.
func timeNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	const minNano, maxNano = 1, math.MaxInt64
	u := t.Unix()
	switch {
	case u < 0:
		return minNano
	case u > math.MaxInt64/1_000_000_000-1:
		return maxNano
	}
	return t.UnixNano()
}

func nanoTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// static is the part of a delivery that never changes after enqueue (but
// for Redeliver): header fields first, so listing can filter on them and
// stop decoding before the request body.
type static struct {
	eventID, target, event, callID, webhook, destination, orderKey string
	created                                                        time.Time
}

func encodeStatic(d *queue.Delivery) []byte {
	e := enc{b: make([]byte, 0, 128+len(d.Request.URL)+len(d.Request.Body))}
	e.u(codecVersion)
	e.s(d.EventID)
	e.s(d.Target)
	e.s(d.Event)
	e.s(d.CallID)
	e.s(d.Webhook)
	e.s(d.Destination)
	e.s(d.OrderKey)
	e.t(d.CreatedAt)
	// the request and policy
	e.s(d.Request.Method)
	e.s(d.Request.URL)
	e.u(uint64(len(d.Request.Header)))
	for _, h := range d.Request.Header {
		e.s(h[0])
		e.s(h[1])
	}
	e.by(d.Request.Body)
	p := d.Policy
	e.d(p.Timeout)
	e.i(int64(p.MaxAttempts))
	e.d(p.BackoffMin)
	e.d(p.BackoffMax)
	e.d(p.MaxAge)
	e.bool(p.JSONRPC)
	e.by(p.SealedSecret)
	e.s(p.TLS)
	return e.b
}

// decodeStaticHead decodes the header fields only.
func decodeStaticHead(b []byte) (static, *dec, error) {
	d := &dec{b: b}
	if v := d.u(); v != codecVersion && d.err == nil {
		return static{}, nil, errCorrupt
	}
	s := static{
		eventID: d.s(), target: d.s(), event: d.s(), callID: d.s(),
		webhook: d.s(), destination: d.s(), orderKey: d.s(), created: d.t(),
	}
	return s, d, d.err
}

// decodeStatic fills out's static fields, request and policy.
func decodeStatic(b []byte, out *queue.Delivery) error {
	s, d, err := decodeStaticHead(b)
	if err != nil {
		return err
	}
	out.EventID, out.Target, out.Event, out.CallID = s.eventID, s.target, s.event, s.callID
	out.Webhook, out.Destination, out.OrderKey, out.CreatedAt = s.webhook, s.destination, s.orderKey, s.created
	out.Request.Method = d.s()
	out.Request.URL = d.s()
	n := d.u()
	if n > uint64(len(d.b)) {
		return errCorrupt
	}
	out.Request.Header = nil
	if n > 0 {
		out.Request.Header = make([][2]string, n)
		for i := range out.Request.Header {
			out.Request.Header[i] = [2]string{d.s(), d.s()}
		}
	}
	out.Request.Body = d.by()
	if len(out.Request.Body) == 0 {
		out.Request.Body = nil
	}
	out.Policy.Timeout = d.d()
	out.Policy.MaxAttempts = int(d.i())
	out.Policy.BackoffMin = d.d()
	out.Policy.BackoffMax = d.d()
	out.Policy.MaxAge = d.d()
	out.Policy.JSONRPC = d.bool()
	out.Policy.SealedSecret = d.by()
	if len(out.Policy.SealedSecret) == 0 {
		out.Policy.SealedSecret = nil
	}
	out.Policy.TLS = d.s()
	return d.err
}

// mutable is the small record an outcome rewrites.
type mutable struct {
	state     queue.State
	next      time.Time // due time (pending)
	retried   time.Time
	finished  time.Time
	lastError string
	count     int    // attempts in this life
	hist      uint32 // attempt records ever written (next attempt key)
	seq       uint64 // the due-index tiebreaker (enqueue order)
	orderSeq  uint64 // key in the order index while it is in it, else 0
	gated     bool   // pending but held behind an earlier delivery of its order key
}

func stateByte(s queue.State) byte {
	switch s {
	case queue.Pending:
		return 'p'
	case queue.Delivered:
		return 'o'
	case queue.Dead:
		return 'x'
	}
	return '?'
}

func byteState(b byte) queue.State {
	switch b {
	case 'p':
		return queue.Pending
	case 'o':
		return queue.Delivered
	case 'x':
		return queue.Dead
	}
	return ""
}

func encodeMutable(m *mutable) []byte {
	e := enc{b: make([]byte, 0, 48+len(m.lastError))}
	e.b = append(e.b, stateByte(m.state))
	e.t(m.next)
	e.t(m.retried)
	e.t(m.finished)
	e.s(m.lastError)
	e.u(uint64(m.count))
	e.u(uint64(m.hist))
	e.u(m.seq)
	e.u(m.orderSeq)
	e.bool(m.gated)
	return e.b
}

func decodeMutable(b []byte) (mutable, error) {
	if len(b) < 1 {
		return mutable{}, errCorrupt
	}
	m := mutable{state: byteState(b[0])}
	d := &dec{b: b[1:]}
	m.next = d.t()
	m.retried = d.t()
	m.finished = d.t()
	m.lastError = d.s()
	m.count = int(d.u())
	m.hist = uint32(d.u())
	m.seq = d.u()
	m.orderSeq = d.u()
	m.gated = d.bool()
	if m.state == "" {
		return m, errCorrupt
	}
	return m, d.err
}

func encodeAttempt(a queue.Attempt) []byte {
	e := enc{b: make([]byte, 0, 24+len(a.Error)+len(a.Response))}
	e.t(a.Start)
	e.d(a.Duration)
	e.i(int64(a.Status))
	e.s(a.Error)
	e.by(a.Response)
	return e.b
}

func decodeAttempt(b []byte) (queue.Attempt, error) {
	d := &dec{b: b}
	a := queue.Attempt{Start: d.t(), Duration: d.d(), Status: int(d.i()), Error: d.s(), Response: d.by()}
	if len(a.Response) == 0 {
		a.Response = nil
	}
	return a, d.err
}

func encodeEvent(ev *queue.Event) []byte {
	e := enc{b: make([]byte, 0, 64+len(ev.Data))}
	e.u(codecVersion)
	e.s(ev.ID)
	e.s(ev.Target)
	e.s(ev.Name)
	e.s(ev.CallID)
	e.t(ev.ReceivedAt)
	e.by(ev.Data)
	return e.b
}

func decodeEvent(b []byte) (*queue.Event, error) {
	d := &dec{b: b}
	if v := d.u(); v != codecVersion {
		return nil, errCorrupt
	}
	ev := &queue.Event{ID: d.s(), Target: d.s(), Name: d.s(), CallID: d.s(), ReceivedAt: d.t(), Data: d.by()}
	return ev, d.err
}

// dedupRecord is what a dedup key remembers: the first event and its refs.
func encodeDedup(created time.Time, eventID string, refs []queue.Ref) []byte {
	e := enc{}
	e.t(created)
	e.s(eventID)
	e.u(uint64(len(refs)))
	for _, r := range refs {
		e.s(r.ID)
		e.s(r.Webhook)
		e.s(string(r.State))
		e.s(r.Error)
	}
	return e.b
}

func decodeDedup(b []byte) (time.Time, string, []queue.Ref, error) {
	d := &dec{b: b}
	created := d.t()
	eventID := d.s()
	n := d.u()
	if n > uint64(len(d.b)) {
		return time.Time{}, "", nil, errCorrupt
	}
	refs := make([]queue.Ref, n)
	for i := range refs {
		refs[i] = queue.Ref{ID: d.s(), Webhook: d.s(), State: queue.State(d.s()), Error: d.s()}
	}
	return created, eventID, refs, d.err
}
