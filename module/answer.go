package callhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/callhook/caddy-callhook/internal/redact"
	"github.com/callhook/caddy-callhook/module/queue"
)

// answer is the body of 200 and 202 answers (SPEC §3).
type answer struct {
	EventID    string        `json:"event_id,omitempty"`
	Event      string        `json:"event"`
	Target     string        `json:"target"`
	Deliveries []deliveryRef `json:"deliveries"`
	// Sync holds each sync webhook's answer when the event has no reply.
	Sync map[string]*syncSummary `json:"sync,omitempty"`
}

// deliveryRef is one delivery in an answer: its ID, webhook and state,
// and the error of a delivery that is dead (a render error, or a failed
// sync call).
type deliveryRef struct {
	ID      string      `json:"id"`
	Webhook string      `json:"webhook"`
	State   queue.State `json:"state,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// answerRefs turns the queue's refs into the answer's. For a new event the
// state comes from the deliveries just stored (ds); for a repeat, whose
// refs name the first event's deliveries, from the queue as they are now.
//
// With queue v2, Enqueue returns refs that carry State and Error already;
// this then only copies them.
func (h *Handler) answerRefs(ctx context.Context, refs []queue.Ref, ds []*queue.Delivery, dup bool) []deliveryRef {
	out := make([]deliveryRef, 0, len(refs))
	byID := make(map[string]*queue.Delivery, len(ds))
	for _, d := range ds {
		byID[d.ID] = d
	}
	for _, r := range refs {
		ref := deliveryRef{ID: r.ID, Webhook: r.Webhook}
		d := byID[r.ID]
		if d == nil && dup {
			d = h.app.lookup(ctx, r.ID)
		}
		if d != nil {
			ref.State = d.State
			if d.State == queue.Dead {
				ref.Error = h.app.deadReason(d)
			}
		}
		out = append(out, ref)
	}
	return out
}

// deadReason is what the event's sender is told of a dead delivery (a
// repeat's refs can name one that died sending). A render error is shown,
// redacted like every other view; the error of a delivery that died
// sending is for operators only: it quotes the receiver's answer or what
// the SSRF guard resolved a {param.*} host to.
func (a *App) deadReason(d *queue.Delivery) string {
	if d.AttemptCount > 0 || len(d.Attempts) > 0 {
		return fmt.Sprintf("delivery failed after %d attempt(s); its last error is in the admin API and dashboard (delivery %s)", max(d.AttemptCount, len(d.Attempts)), d.ID)
	}
	var secrets [][]byte
	if e := a.loadEngine(); e != nil {
		secrets, _ = e.signingSecrets(d)
	}
	return redact.For(d, secrets...).Text(d.LastError)
}

// statusClientClosed is the status of a request its client gave up on
// (nginx's 499, which Caddy's reverse proxy uses too).
const statusClientClosed = 499

// clientGone reports whether the queue failed because the request's
// client went away (its context was cancelled): nothing is wrong with the
// queue, and nobody is left to answer. errNotStarted counts when the wait
// for Start was cut short by the client.
func clientGone(r *http.Request, err error) bool {
	return errors.Is(r.Context().Err(), context.Canceled) &&
		(errors.Is(err, context.Canceled) || errors.Is(err, errNotStarted))
}

// queueErrorStatus says how to answer an event the queue did not store:
// 503 with Retry-After only when the same request can succeed later (the
// queue is full, the disk is full, the queue is closing or not started
// yet), and 500 for anything else, which a retry would only repeat.
func queueErrorStatus(err error) (status int, msg string) {
	switch {
	case errors.Is(err, queue.ErrFull):
		return http.StatusServiceUnavailable, "the delivery queue is full; retry later"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusServiceUnavailable, "the delivery queue's disk is full; retry later"
	case errors.Is(err, queue.ErrUnavailable):
		return http.StatusServiceUnavailable, "the delivery queue cannot be reached right now; retry later"
	case errors.Is(err, queue.ErrClosed), errors.Is(err, errNotStarted),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.EIO), errors.Is(err, syscall.EAGAIN):
		return http.StatusServiceUnavailable, "the delivery queue cannot accept events right now; retry later"
	}
	return http.StatusInternalServerError, "internal error: the event could not be stored and retrying will not help; the server log has the details"
}

// Bounds of drainBody.
const (
	maxDrain     = 8 << 20
	drainTimeout = 5 * time.Second
)

// drainBody answers first and then reads and discards what is left of a
// body callhook refused (413), within maxDrain bytes and drainTimeout.
// A client that sends its whole body before reading the answer (Python's
// urllib, many PBX scripts) would otherwise have its connection reset
// under it by the unread data and never see the 413.
func drainBody(w http.ResponseWriter, r *http.Request, write func() error) error {
	rc := http.NewResponseController(w)
	// Without full duplex, net/http gives up on a body it has not read
	// once the answer is written, and closes the connection.
	_ = rc.EnableFullDuplex()
	err := write()
	if r.Body == nil || r.Body == http.NoBody {
		return err
	}
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.CopyN(io.Discard, r.Body, maxDrain)
	return err
}

// syncSummary is a sync webhook's answer in the default JSON answer: its
// status and decoded JSON body; null when it did not answer 2xx in time.
type syncSummary struct {
	Status int `json:"status"`
	JSON   any `json:"json"`
}
