// Package queue defines the durable delivery queue that every backend
// implements, split in two halves:
//
//   - [Work] is the delivery path: enqueue one event envelope (the event and
//     all its rendered deliveries, atomically, with its dedup key); lease due
//     deliveries with a declarative [LeaseRequest] as a long poll; record
//     each attempt's outcome against the lease's [Token], so a holder whose
//     lease expired cannot overwrite a newer attempt.
//   - [Store] is the operator's side: get, list (indexed, paged, bounded),
//     stats, retry and delete dead deliveries, stored events for replay,
//     pauses, and the retention prune. Attempt history and response excerpts
//     are kept apart from the work item, so leasing never reads them.
//
// Every backend runs the conformance suite in package queuetest unchanged.
//
// # Semantics every backend keeps
//
//   - Enqueue is all or none and returns only once the envelope is durable.
//     A dedup key seen within the dedup window stores nothing and returns the
//     first envelope's event ID and refs.
//   - A delivery is leased by at most one holder at a time. A lease that is
//     not acked, retried, killed, released or extended before it ends makes
//     the delivery due again; outcomes with the old token then fail with
//     [ErrStaleLease].
//   - Leasing is fair: a destination or webhook whose budget in the request
//     is used up, or a paused webhook, is skipped in constant time whatever
//     its backlog, and never delays deliveries for others.
//   - Ordering: deliveries that share a non-empty [Delivery.OrderKey] are
//     leased one at a time in enqueue order; the next one becomes eligible
//     when the earlier one is delivered or dead.
//   - After a crash every delivery that was not acknowledged is due again,
//     at the latest when its lease would have ended (at least once). An
//     outcome may be lost in a crash (the delivery is then attempted once
//     more); a backend makes it durable shortly after it returns.
//   - A lease that ended without an outcome is not an attempt: it does not
//     count against max_attempts.
//   - IDs of deliveries and events are new (callers make random 128-bit
//     ones): reusing one is a caller's bug that a backend may refuse
//     (storing nothing of the envelope) or may not detect.
//   - A backend may cap pending plus leased deliveries (max_pending): over
//     the cap Enqueue stores nothing and returns ErrFull. Deliveries stored
//     dead or delivered on arrival do not count.
//   - Pauses are stored by the backend (SetPause) and applied by the
//     holder, which passes them in every LeaseRequest.Paused; a backend
//     shared by several holders (nodes) may also skip webhooks paused in
//     its store, since a holder knows its own node's pauses first.
//   - Close is idempotent, ends a waiting Lease, and makes every later call
//     return ErrClosed.
//
// # Where a backend shared by several nodes may bend
//
// A backend whose work is split among nodes (package queue/natswq) keeps
// every promise above across nodes, and bends these on purpose:
//
//   - Deliveries that share an OrderKey share their CallID (the handler's
//     keys are target/webhook/call), so a backend may keep a call's work in
//     one partition and order it there. Keys that span calls are not
//     ordered with each other.
//   - Stats and the max_pending cap count the partitions a node does not
//     own as their owners last published them (at most about a second old).
//   - List merges what each partition's owner answers; a partition between
//     owners (for a few seconds after a node died) is left out of one page.
//   - Leases live in the owner's memory: Get on another node shows a leased
//     delivery as pending. Prune removes what the partitions a node owns no
//     longer keep (every node runs it).
//
// # Mapping onto NATS JetStream
//
// Package queue/natswq implements the contract on partition streams (see
// its package doc for the details):
//
//   - Enqueue: one atomic batch of the event and every delivery
//     (create-only, so a reused ID stores nothing) into the partition of the
//     event's call, after a create-only write of the dedup key (with the
//     dedup window as a per-message TTL, never the stream's in-memory
//     duplicate window) to a meta stream.
//   - Lease: each partition is owned by one node (a lock with a TTL in the
//     meta stream); the owner reads it with a watch, in stream order, into
//     lanes per (destination, webhook); Lease skips blocked lanes in
//     constant time and writes nothing: the lease is the owner's memory.
//   - Token = partition, the record's revision when leased, and a nonce the
//     owner holds; outcomes write the record (and its history, one atomic
//     batch) expecting that revision: the fencing.
//   - OrderKey: the owner applies writes in stream order, so a call's
//     deliveries are leased one at a time in the order stored, whichever
//     node stored each.
//   - Store: Get reads the stream from any node; List, Stats and RetryDead
//     read the owners' indexes; pauses are records of the meta stream,
//     applied on every node.
package queue

import (
	"context"
	"errors"
	"time"
)

// State is where a delivery is in its life.
type State string

const (
	// Pending: waiting for its next attempt (due now, scheduled for later,
	// or held back behind an earlier delivery of its order key).
	Pending State = "pending"
	// Leased: a worker holds it and an attempt may be running.
	Leased State = "leased"
	// Delivered: a 2xx was received.
	Delivered State = "delivered"
	// Dead: gave up; kept and retryable by hand.
	Dead State = "dead"
)

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case Pending, Leased, Delivered, Dead:
		return true
	}
	return false
}

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
	// TLS names the webhook's TLS settings (ca, client certificate, ...)
	// in the running config, which the sender looks up at each attempt;
	// empty means the system's defaults. No key material is queued.
	TLS string `json:"tls,omitempty"`
	// SealedSecret is the webhook's signing secrets as they were when the
	// delivery was rendered, sealed (AES-256-GCM) under a key the queue
	// never holds: backends store ciphertext only. The sender signs with
	// the webhook's current secrets from the running config, and opens
	// this only for a webhook that is no longer in it. Empty: unsigned.
	SealedSecret []byte `json:"sealed_secret,omitempty"`
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
	EventID string `json:"event_id,omitempty"`
	Target  string `json:"target"`
	Event   string `json:"event"`
	CallID  string `json:"call_id"`
	Webhook string `json:"webhook"`
	// Destination groups deliveries that hit the same receiver (scheme://host:port),
	// so one slow receiver can be kept from taking every worker.
	Destination string `json:"destination"`
	// OrderKey, when set, makes the backend lease deliveries with the same
	// key one at a time, in enqueue order (the `ordered` webhook option).
	OrderKey string `json:"order_key,omitempty"`

	Request Request `json:"request"`
	Policy  Policy  `json:"policy"`

	State     State     `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	// RetriedAt is when the delivery was last put back by hand; attempts
	// before it belong to an earlier life and do not count against
	// max_attempts.
	RetriedAt time.Time `json:"retried_at,omitzero"`
	// NextAttempt is when the delivery is due (pending).
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// LeasedUntil is non-zero while a worker holds the delivery.
	LeasedUntil time.Time `json:"leased_until,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	// LastError is the reason of the last failure (or the render error of a
	// delivery that was dead on arrival). It is cleared on delivery.
	LastError string `json:"last_error,omitempty"`
	// AttemptCount is the number of attempts made in the current life (since
	// CreatedAt or RetriedAt), whether or not History is loaded.
	AttemptCount int `json:"attempt_count"`
	// Attempts is the attempt history, oldest first, filled by Store.Get
	// only. Backends keep at least the newest 50.
	Attempts []Attempt `json:"attempts,omitempty"`
}

// WebhookKey names a webhook across targets ("target/webhook"), the unit of
// per-webhook budgets and pauses.
func (d *Delivery) WebhookKey() string { return WebhookKey(d.Target, d.Webhook) }

// WebhookKey is the key of a webhook in budgets and pauses.
func WebhookKey(target, webhook string) string { return target + "/" + webhook }

// Ref names a delivery in an ingest answer.
type Ref struct {
	ID      string `json:"id"`
	Webhook string `json:"webhook"`
	State   State  `json:"state,omitempty"`
	// Error is the render error of a delivery that was dead on arrival.
	Error string `json:"error,omitempty"`
}

// Event is an accepted call event as it came in, kept for retention so a
// dead-on-arrival delivery can be rendered again and an event replayed.
type Event struct {
	ID         string    `json:"id"`
	Target     string    `json:"target"`
	Name       string    `json:"event"`
	CallID     string    `json:"call_id"`
	ReceivedAt time.Time `json:"received_at"`
	// Data is the decoded event (backend-opaque bytes; the handler's encoding).
	Data []byte `json:"data,omitempty"`
}

// Envelope is what one accepted event puts into the queue, all or none.
type Envelope struct {
	// Event is stored with the deliveries. An envelope whose Event.ID is
	// empty stores no event: its deliveries belong to one stored before
	// (their EventID names it), as sync calls recorded after their event.
	Event Event
	// DedupKey, when not empty, makes a second envelope with the same key
	// within the dedup window a duplicate.
	DedupKey string
	// DedupWindow is this envelope's window (the handler's dedup_window):
	// a key stored longer ago than that is not a repeat. Zero means the
	// backend's default (24h). Backends keep keys for at least
	// MaxDedupWindow.
	DedupWindow time.Duration
	Deliveries  []*Delivery
}

// MaxDedupWindow is the longest dedup window an envelope may ask for.
const MaxDedupWindow = 7 * 24 * time.Hour

// EnqueueResult answers Enqueue.
type EnqueueResult struct {
	// EventID is the stored event's ID: the new one, or on a duplicate the
	// first envelope's.
	EventID string
	Refs    []Ref
	// Duplicate is true when DedupKey was already known: nothing was stored.
	Duplicate bool
}

// LeaseRequest says declaratively what a holder can take now.
type LeaseRequest struct {
	// Max is the most deliveries to hand out (at least 1).
	Max int
	// Lease is the visibility timeout: how long the holder has before the
	// delivery is due again unless extended.
	Lease time.Duration
	// Wait is how long to wait for work when none can be handed out now (a
	// long poll); 0 returns at once. The call also returns when ctx ends,
	// with what it has (possibly nothing) and no error if it has some.
	Wait time.Duration

	// DestinationBudget is how many more deliveries per Destination the
	// holder can take (0 or less: none); a destination not in the map gets
	// DefaultDestinationBudget, where 0 means unlimited. Deliveries without
	// a Destination are not capped.
	DestinationBudget        map[string]int
	DefaultDestinationBudget int
	// WebhookBudget caps, per WebhookKey, how many more deliveries of that
	// webhook the holder can take (concurrency, rate tokens; 0 or less:
	// none); a webhook not in the map is unlimited.
	WebhookBudget map[string]int
	// Paused webhooks (by WebhookKey) are not leased at all.
	Paused map[string]bool
}

// Lease is one leased delivery. Delivery.Attempts is not loaded.
type Lease struct {
	Delivery *Delivery
	Token    Token
	Until    time.Time
}

// Token identifies one lease of one delivery; outcomes carry it so that a
// holder whose lease expired (and the delivery leased again) is refused.
// It is opaque to callers.
type Token string

// Filter selects deliveries for List. Empty fields match everything.
type Filter struct {
	State State
	// Webhook is a webhook's name, in whatever target (Target narrows it).
	Webhook string
	Event   string
	CallID  string
	Target  string
	EventID string
	Limit   int    // 0 means a backend default (100); at most 1000
	Cursor  string // opaque; from the previous page
}

// Page is one page of List.
type Page struct {
	Deliveries []*Delivery
	// Next is the cursor of the next page, "" at the end.
	Next string
}

// Stats counts deliveries by state.
type Stats struct {
	Pending   int `json:"pending"`
	Leased    int `json:"leased"`
	Delivered int `json:"delivered"`
	Dead      int `json:"dead"`
	// OldestPending is the CreatedAt of the oldest pending or leased
	// delivery, zero when there is none.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
}

// Pause records that a webhook is paused.
type Pause struct {
	Target  string    `json:"target"`
	Webhook string    `json:"webhook"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason"`
}

// PruneRequest says what the retention prune removes.
type PruneRequest struct {
	// DeliveredBefore removes delivered deliveries finished before it.
	DeliveredBefore time.Time
	// EventsBefore removes stored events received before it whose
	// deliveries are all delivered or gone.
	EventsBefore time.Time
	// DedupBefore forgets dedup keys created before it.
	DedupBefore time.Time
}

// Errors a backend returns; callers test them with errors.Is.
var (
	// ErrFull means the queue cannot take more work now (cap reached, disk
	// full); ingest answers 503 with Retry-After.
	ErrFull = errors.New("queue is full")
	// ErrUnavailable means the backend cannot be reached now; ingest answers
	// 503 with Retry-After.
	ErrUnavailable = errors.New("queue is unavailable")
	// ErrNotFound means no delivery (or event) has that ID.
	ErrNotFound = errors.New("not found")
	// ErrStaleLease means the token's lease ended and the delivery was
	// leased again or finished: the outcome is not recorded.
	ErrStaleLease = errors.New("lease is no longer held")
	// ErrNotDead means a dead-only operation met a delivery in another state.
	ErrNotDead = errors.New("delivery is not dead")
	// ErrClosed means the queue was closed.
	ErrClosed = errors.New("queue is closed")
)

// Work is the delivery path.
type Work interface {
	// Enqueue stores the envelope atomically and returns once it is durable.
	// Deliveries whose State is Dead (render errors) or Delivered (sync
	// calls, recorded with their one attempt in Attempts) are stored as they
	// are and never leased; the others are pending, due at their NextAttempt
	// (zero: now).
	Enqueue(ctx context.Context, env *Envelope) (EnqueueResult, error)

	// Lease hands out every due delivery the request's budgets allow, up to
	// req.Max. If there is none it waits up to req.Wait for one to be
	// enqueued, released, retried or to become due; when ctx ends first it
	// returns ctx.Err() (an empty, nil-error answer means Wait ran out).
	Lease(ctx context.Context, req LeaseRequest) ([]Lease, error)

	// Ack records a successful attempt: the delivery is delivered.
	Ack(ctx context.Context, t Token, a Attempt) error
	// Retry records a failed attempt with its reason and makes the delivery
	// due at next.
	Retry(ctx context.Context, t Token, a Attempt, next time.Time, reason string) error
	// Dead records a final failed attempt (a may be zero when there was
	// none) and marks the delivery dead with reason.
	Dead(ctx context.Context, t Token, a Attempt, reason string) error
	// Release ends a lease without an attempt (shutdown, over budget): due
	// again at next.
	Release(ctx context.Context, t Token, next time.Time) error
	// Extend moves the lease's end to until.
	Extend(ctx context.Context, t Token, until time.Time) error
}

// Store is the operator's side.
type Store interface {
	// Get returns one delivery with its attempt history.
	Get(ctx context.Context, id string) (*Delivery, error)
	// List returns deliveries matching f, newest first. It reads an index
	// (never every record), honours ctx, and bounds the work of one call: a
	// page may come back short with a Next cursor.
	List(ctx context.Context, f Filter) (Page, error)
	Stats(ctx context.Context) (Stats, error)
	// TargetStats counts the deliveries of one target by state, as Stats
	// counts all of them, in constant time whatever the target's backlog
	// (kept counters, never a scan of the target's records): the
	// customer portal shows it on every page view. OldestPending is left
	// zero. An unknown target counts nothing.
	TargetStats(ctx context.Context, target string) (Stats, error)

	// RetryDead makes dead deliveries pending again, due now, with a fresh
	// attempt budget (RetriedAt set, CreatedAt, LastError and the history
	// kept; an ordered one goes to the back of its order key). No ids means
	// every dead delivery. Named ones that are not dead, or unknown, are
	// skipped. It returns how many.
	RetryDead(ctx context.Context, ids ...string) (int, error)
	// Redeliver replaces a dead delivery's request, policy, destination
	// and order key with a newly rendered one's and makes it pending, as
	// RetryDead does (an ordered one at the back of its order key); d.ID
	// names it.
	// ErrNotFound for an unknown ID, ErrNotDead for one not dead.
	Redeliver(ctx context.Context, d *Delivery) error
	// DeleteDead removes dead deliveries (no ids: every dead one), skipping
	// named ones that are not dead or unknown; it returns how many.
	DeleteDead(ctx context.Context, ids ...string) (int, error)

	// GetEvent returns a stored event.
	GetEvent(ctx context.Context, id string) (*Event, error)

	// SetPause pauses (p != nil) or resumes (p == nil) a webhook. Pauses
	// survive restarts.
	SetPause(ctx context.Context, target, webhook string, p *Pause) error
	// Pauses lists paused webhooks.
	Pauses(ctx context.Context) ([]Pause, error)

	// Prune removes what retention no longer keeps.
	Prune(ctx context.Context, r PruneRequest) error
}

// Queue is a durable delivery queue. All methods are safe for concurrent use.
type Queue interface {
	Work
	Store
	Close() error
}
