// Package queue defines the durable delivery queue that every backend implements.
//
// The interface is deliberately small so that a distributed backend on an
// existing engine can implement it: enqueue an event's deliveries atomically
// with its dedup key, lease due work, record an attempt's outcome (ack,
// reschedule, dead), list, get, and put dead deliveries back.
package queue

import (
	"context"
	"errors"
	"time"
)

// State is where a delivery is in its life.
type State string

const (
	Pending   State = "pending"   // waiting for its next attempt (includes leased ones)
	Delivered State = "delivered" // a 2xx was received
	Dead      State = "dead"      // gave up; kept and retryable by hand
)

// Request is the outbound HTTP request, rendered once at ingest and stored.
// Only the webhook-timestamp and webhook-signature headers are added per attempt.
type Request struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	// Header holds the config headers and Content-Type, in order. Values may hold
	// secrets (Authorization); never log them.
	Header [][2]string `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// Policy is the webhook's delivery settings at render time. It travels with
// the delivery so queued work goes out with the settings it was rendered with,
// whatever reloads happen in between.
type Policy struct {
	Timeout     time.Duration `json:"timeout"`
	MaxAttempts int           `json:"max_attempts"`
	BackoffMin  time.Duration `json:"backoff_min"`
	BackoffMax  time.Duration `json:"backoff_max"`
	MaxAge      time.Duration `json:"max_age"`
	// JSONRPC makes a 2xx response carrying an "error" member a failure.
	JSONRPC bool `json:"jsonrpc,omitempty"`
	// Secret signs each attempt (Standard Webhooks); empty means unsigned.
	Secret []byte `json:"secret,omitempty"`
	// TLS names the webhook's TLS settings (ca, client certificate, ...)
	// in the running config, which the sender looks up at each attempt;
	// empty means the system's defaults. No key material is queued.
	TLS string `json:"tls,omitempty"`
}

// Attempt is one try at sending a delivery.
type Attempt struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Status   int           `json:"status,omitempty"` // 0 when no response was received
	Error    string        `json:"error,omitempty"`
	// Response is the start of the response body (at most 64 KiB).
	Response []byte `json:"response,omitempty"`
}

// Delivery is one webhook request for one event.
type Delivery struct {
	ID      string `json:"id"`
	Target  string `json:"target"`
	Event   string `json:"event"`
	CallID  string `json:"call_id"`
	Webhook string `json:"webhook"`
	// Destination groups deliveries that hit the same receiver (scheme://host:port),
	// so one slow receiver can be kept from taking every worker.
	Destination string `json:"destination"`

	Request Request `json:"request"`
	Policy  Policy  `json:"policy"`

	State     State     `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	// NextAttempt is when the delivery is due (pending), or when its lease
	// expires (leased).
	NextAttempt time.Time `json:"next_attempt"`
	// LeasedUntil is non-zero while a worker holds the delivery.
	LeasedUntil time.Time `json:"leased_until,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	// LastError is the reason of the last failure (or the render error of a
	// delivery that was dead on arrival).
	LastError string `json:"last_error,omitempty"`
	// Attempts is the attempt history, oldest first. Backends may keep only
	// the newest 50. Attempts that started before CreatedAt belong to an
	// earlier life of the delivery: a manual retry sets CreatedAt anew.
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Ref names a delivery in an ingest answer.
type Ref struct {
	ID      string `json:"id"`
	Webhook string `json:"webhook"`
}

// Filter selects deliveries for List. Empty fields match everything.
type Filter struct {
	State   State
	Webhook string
	Event   string
	CallID  string
	Target  string
	Limit   int    // 0 means a backend default (100)
	Cursor  string // opaque; from the previous page
}

// Stats counts deliveries by state. Pending excludes leased deliveries
// (those an attempt is running for), which Leased counts.
type Stats struct {
	Pending   int `json:"pending"`
	Leased    int `json:"leased"`
	Delivered int `json:"delivered"`
	Dead      int `json:"dead"`
}

// Errors a backend returns; callers test them with errors.Is.
var (
	// ErrFull means the queue cannot take more work now (cap reached, disk
	// full); ingest answers 503 with Retry-After.
	ErrFull = errors.New("queue is full")
	// ErrNotFound means no delivery has that ID.
	ErrNotFound = errors.New("delivery not found")
	// ErrClosed means the queue was closed.
	ErrClosed = errors.New("queue is closed")
)

// Queue is a durable delivery queue. All methods are safe for concurrent use.
type Queue interface {
	// Enqueue stores all deliveries of one event atomically together with its
	// dedup key, and returns only once they are durable (fsync'd). If dedupKey
	// was seen within the dedup window, nothing is stored and the refs of the
	// original deliveries are returned with dup == true. Deliveries whose State
	// is Dead are stored dead (render errors) and never leased.
	Enqueue(ctx context.Context, dedupKey string, ds []*Delivery) (refs []Ref, dup bool, err error)

	// Lease hands out up to max pending deliveries that are due at now, marks
	// them leased until now+lease, and skips those whose Destination makes
	// skip return true (it may be nil). A leased delivery that is neither
	// acked, rescheduled nor killed before its lease ends is due again.
	Lease(ctx context.Context, now time.Time, max int, lease time.Duration, skip func(destination string) bool) ([]*Delivery, error)

	// Ack records a successful attempt: the delivery is delivered.
	Ack(ctx context.Context, id string, a Attempt) error
	// Reschedule records a failed attempt and makes the delivery due at next.
	Reschedule(ctx context.Context, id string, a Attempt, next time.Time) error
	// Kill records a final failed attempt (a may be zero when there was none)
	// and marks the delivery dead with reason.
	Kill(ctx context.Context, id string, a Attempt, reason string) error
	// Release ends a lease without an attempt (shutdown): due again at next.
	Release(ctx context.Context, id string, next time.Time) error

	// NextDue is the earliest NextAttempt among pending deliveries, and false
	// when there is none. Dispatchers sleep until then.
	NextDue(ctx context.Context) (time.Time, bool, error)

	Get(ctx context.Context, id string) (*Delivery, error)
	// List returns deliveries matching f, newest first, and the cursor of the
	// next page ("" at the end).
	List(ctx context.Context, f Filter) ([]*Delivery, string, error)
	// RetryDead makes dead deliveries pending again, due now, with a fresh
	// attempt budget. No ids means every dead delivery. It returns how many.
	RetryDead(ctx context.Context, ids ...string) (int, error)
	Stats(ctx context.Context) (Stats, error)

	// Prune removes delivered deliveries finished before deliveredBefore and
	// dedup keys created before dedupBefore.
	Prune(ctx context.Context, deliveredBefore, dedupBefore time.Time) error

	Close() error
}
