package callhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// adminService is the one operator layer over the queue store: the admin
// API (admin.go), the dashboard (dashboard.go) and, through the admin API,
// the `caddy callhook` subcommands (command_admin.go) are thin adapters
// over it. It finds the running engine, bounds every call in time, turns
// queue errors into answers with the right status (caddy.APIError: 400 bad
// input, 404 unknown, 409 wrong state, 503 try again later) and logs what
// an operator changed. It renders nothing: the views are in admin_view.go.
type adminService struct {
	// app is the config's callhook app, nil when the config has none.
	app    *App
	logger *zap.Logger
}

// newAdminService looks up the config's callhook app, if it has one. The
// app is only looked up: ctx.App would create and start one, opening a
// queue, in configs that do not use callhook at all.
func newAdminService(ctx caddy.Context, logger *zap.Logger) *adminService {
	s := &adminService{logger: logger}
	if app, err := ctx.AppIfConfigured("callhook"); err == nil {
		s.app, _ = app.(*App)
	}
	return s
}

// Limits of the operator layer.
const (
	defaultAdminLimit = 100
	maxAdminLimit     = 1000
	// adminTimeout bounds one admin request's queue work, so a wedged
	// queue answers 503 instead of holding the connection forever.
	adminTimeout = 30 * time.Second
	// listResponseBytes is how much of each attempt's response body a list
	// shows; GET of one delivery shows all that was kept (64 KiB).
	listResponseBytes = 1024
)

// bound gives one operation its deadline.
func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, adminTimeout)
}

// engine is the running engine to work on: the one of the config's own
// app, or else, while that app is not started (a reload in progress, a
// config that failed to start, handlers without the global option), the
// only open one. It never waits for a stopped engine: a closed queue
// answers queue.ErrClosed at once.
func (s *adminService) engine() (*engine, string, error) {
	if s.app != nil {
		if e := s.app.loadEngine(); e != nil {
			return e, s.app.backend.Key(), nil
		}
	}
	var (
		open []*engine
		keys []string
	)
	engines.Range(func(k, v any) bool {
		if e, ok := v.(*engine); ok {
			open = append(open, e)
			keys = append(keys, fmt.Sprint(k))
		}
		return true
	})
	switch {
	case len(open) == 1:
		return open[0], keys[0], nil
	case len(open) > 1:
		return nil, "", apiError(http.StatusServiceUnavailable, "more than one callhook queue is open while a config change finishes (%s); try again in a moment", strings.Join(keys, ", "))
	case s.app == nil:
		return nil, "", apiError(http.StatusServiceUnavailable, "callhook is not running: the current config has no callhook handler or app")
	}
	return nil, "", apiError(http.StatusServiceUnavailable, "the callhook app is not running: it is starting, or it failed to start (see Caddy's log)")
}

// list is one page of deliveries, each with its attempt history.
func (s *adminService) list(ctx context.Context, f queue.Filter) ([]*queue.Delivery, string, error) {
	e, _, err := s.engine()
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	page, err := e.q.List(ctx, f)
	if err != nil {
		// The cursor is opaque to us; a backend that cannot read it says so
		// in its error, which is the client's mistake, not ours.
		if f.Cursor != "" && strings.Contains(err.Error(), "cursor") {
			return nil, "", apiError(http.StatusBadRequest, "cursor: %v", err)
		}
		return nil, "", queueError(err, "listing deliveries")
	}
	out := make([]*queue.Delivery, 0, len(page.Deliveries))
	for _, d := range page.Deliveries {
		// A list page shows each delivery's attempts; the queue's List
		// leaves the history out, so a page costs one read per row.
		if full, err := e.q.Get(ctx, d.ID); err == nil {
			full.State, full.LeasedUntil = d.State, d.LeasedUntil
			d = full
		}
		out = append(out, d)
	}
	return out, page.Next, nil
}

// get is one delivery with its attempt history.
func (s *adminService) get(ctx context.Context, id string) (*queue.Delivery, error) {
	e, _, err := s.engine()
	if err != nil {
		return nil, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	return s.getFrom(ctx, e, id)
}

func (s *adminService) getFrom(ctx context.Context, e *engine, id string) (*queue.Delivery, error) {
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return nil, deliveryError(e, id, err)
	}
	return d, nil
}

// secretsOf are the secrets that sign d, for the views to scrub.
func (s *adminService) secretsOf(d *queue.Delivery) [][]byte {
	e, _, err := s.engine()
	if err != nil {
		return nil // no engine, no key: the sealed secret stays sealed
	}
	secrets, _ := e.signingSecrets(d)
	return secrets
}

// stats are the queue's counts and the settings in force.
func (s *adminService) stats(ctx context.Context) (statsView, error) {
	e, key, err := s.engine()
	if err != nil {
		return statsView{}, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	st, err := e.q.Stats(ctx)
	if err != nil {
		return statsView{}, queueError(err, "reading queue stats")
	}
	e.mu.Lock()
	set := e.settings
	e.mu.Unlock()
	return statsView{
		Queue:          key,
		Stats:          st,
		Workers:        set.workers,
		PerDestination: set.perDestination,
		Retention:      set.retention.String(),
		DrainTimeout:   set.drain.String(),
	}, nil
}

// retry puts one dead delivery back in the queue and returns it. It
// answers 409 for a delivery in another state and 404 for an unknown one.
func (s *adminService) retry(ctx context.Context, id string) (*queue.Delivery, error) {
	e, _, err := s.engine()
	if err != nil {
		return nil, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	d, err := e.retryDelivery(ctx, id)
	if err != nil {
		return nil, s.stateError(ctx, e, id, err, "retried")
	}
	e.pool.Notify()
	s.log(ctx).Info("dead delivery put back in the queue by hand", operatorFields(d)...)
	return d, nil
}

// stateError explains why an action on one dead delivery failed: 404 for
// an unknown one, 409 (saying what state it is in) for one not dead.
func (s *adminService) stateError(ctx context.Context, e *engine, id string, err error, done string) error {
	switch {
	case errors.Is(err, queue.ErrNotFound):
		return deliveryError(e, id, err)
	case errors.Is(err, queue.ErrNotDead):
		d, gerr := e.q.Get(ctx, id)
		if gerr != nil {
			return deliveryError(e, id, gerr)
		}
		if d.State == queue.Dead {
			// Dead again by now: someone retried it and it failed at once.
			return apiError(http.StatusConflict, "delivery %s changed while it was being %s; try again", id, done)
		}
		return notDead(d, done)
	}
	return recoveryError(err, "delivery "+id)
}

// deadCount previews an action on the dead deliveries matching f.
type deadCount struct {
	// Dead is how many dead deliveries match.
	Dead int `json:"dead"`
	// Retryable is how many of them POST /callhook/dead/retry would put
	// back in the queue: all but the failed sync calls.
	Retryable int `json:"retryable"`
	// SyncCalls counts failed sync webhook calls, which are not retried.
	SyncCalls int `json:"sync_calls,omitempty"`
	// NeverRendered counts those whose webhook failed to render: a retry
	// renders them again from the stored event with the running config
	// (one that still fails stays dead and is counted as skipped).
	NeverRendered int `json:"never_rendered"`
}

// eachDead calls fn for every page of dead deliveries matching f. Pages
// follow the cursor (a position in the dead index), so deliveries that fn
// retries or deletes, which leave that index, do not shift the next page.
func eachDead(ctx context.Context, e *engine, f queue.Filter, fn func([]*queue.Delivery) error) error {
	f.State, f.Limit, f.Cursor = queue.Dead, maxAdminLimit, ""
	for {
		page, err := e.q.List(ctx, f)
		if err != nil {
			return err
		}
		var ds []*queue.Delivery
		for _, d := range page.Deliveries {
			if d.State == queue.Dead {
				ds = append(ds, d)
			}
		}
		if err := fn(ds); err != nil {
			return err
		}
		if page.Next == "" {
			return nil
		}
		f.Cursor = page.Next
	}
}

// previewDead counts the dead deliveries matching f: what retrying or
// deleting all of them would touch.
func (s *adminService) previewDead(ctx context.Context, f queue.Filter) (deadCount, error) {
	e, _, err := s.engine()
	if err != nil {
		return deadCount{}, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	var c deadCount
	err = eachDead(ctx, e, f, func(ds []*queue.Delivery) error {
		for _, d := range ds {
			c.Dead++
			if isSyncCall(d) {
				c.SyncCalls++
				continue
			}
			c.Retryable++
			if !rendered(d) {
				c.NeverRendered++
			}
		}
		return nil
	})
	if err != nil {
		return c, queueError(err, "counting dead deliveries")
	}
	return c, nil
}

// retryDead puts every dead delivery that matches f back in the queue.
// Deliveries that were never rendered are skipped and counted: retrying
// cannot fix them.
func (s *adminService) retryDead(ctx context.Context, f queue.Filter) (retryAnswer, error) {
	e, _, err := s.engine()
	if err != nil {
		return retryAnswer{}, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	var out retryAnswer
	err = eachDead(ctx, e, f, func(ds []*queue.Delivery) error {
		var ids []string
		for _, d := range ds {
			if isSyncCall(d) {
				out.SyncCalls++
				continue
			}
			if !rendered(d) {
				// Rendered again from the stored event with the running
				// config; one that still fails (or whose event is gone)
				// stays dead and is counted as skipped.
				if _, err := e.retryDelivery(ctx, d.ID); err != nil {
					out.Skipped++
				} else {
					out.Retried++
				}
				continue
			}
			ids = append(ids, d.ID)
		}
		n, err := retryIDs(ctx, e.q, ids)
		out.Retried += n
		return err
	})
	if out.Retried > 0 {
		e.pool.Notify()
	}
	if err != nil {
		return out, queueError(err, fmt.Sprintf("retrying dead deliveries (%d retried before the error)", out.Retried))
	}
	s.log(ctx).Info("dead deliveries put back in the queue by hand",
		append(filterFields(f), zap.Int("retried", out.Retried), zap.Int("skipped_never_rendered", out.Skipped), zap.Int("skipped_sync_calls", out.SyncCalls))...)
	return out, nil
}

// retryIDs retries ids in one step. If that fails because one of them
// changed meanwhile (another operator retried it), it goes one by one and
// skips those that are no longer dead.
func retryIDs(ctx context.Context, q queue.Queue, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := q.RetryDead(ctx, ids...)
	if err == nil || errors.Is(err, queue.ErrClosed) || ctx.Err() != nil {
		return n, err
	}
	n = 0
	for _, id := range ids {
		k, err := q.RetryDead(ctx, id)
		if err == nil {
			n += k
			continue
		}
		if errors.Is(err, queue.ErrNotFound) {
			continue
		}
		if d, gerr := q.Get(ctx, id); gerr == nil && d.State != queue.Dead {
			continue
		}
		return n, err
	}
	return n, nil
}

// remove deletes one dead delivery: 409 for one in another state, 404 for
// an unknown one.
func (s *adminService) remove(ctx context.Context, id string) error {
	e, _, err := s.engine()
	if err != nil {
		return err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return deliveryError(e, id, err)
	}
	if err := e.deleteDelivery(ctx, id); err != nil {
		return s.stateError(ctx, e, id, err, "deleted")
	}
	s.log(ctx).Info("dead delivery deleted by hand", operatorFields(d)...)
	return nil
}

// removeDead deletes every dead delivery matching f, rendered or not.
func (s *adminService) removeDead(ctx context.Context, f queue.Filter) (int, error) {
	e, _, err := s.engine()
	if err != nil {
		return 0, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	deleted := 0
	err = eachDead(ctx, e, f, func(ds []*queue.Delivery) error {
		if len(ds) == 0 {
			return nil
		}
		ids := make([]string, len(ds))
		for i, d := range ds {
			ids[i] = d.ID
		}
		n, err := e.q.DeleteDead(ctx, ids...)
		deleted += n
		return err
	})
	if err != nil {
		return deleted, queueError(err, fmt.Sprintf("deleting dead deliveries (%d deleted before the error)", deleted))
	}
	s.log(ctx).Info("dead deliveries deleted by hand", append(filterFields(f), zap.Int("deleted", deleted))...)
	return deleted, nil
}

// event is a stored event and its deliveries (newest first, at most
// maxAdminLimit).
func (s *adminService) event(ctx context.Context, id string) (*queue.Event, []*queue.Delivery, error) {
	e, _, err := s.engine()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	ev, err := e.q.GetEvent(ctx, id)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, nil, eventNotFound(e, id)
	}
	if err != nil {
		return nil, nil, queueError(err, "reading event "+id)
	}
	page, err := e.q.List(ctx, queue.Filter{EventID: id, Limit: maxAdminLimit})
	if err != nil {
		return nil, nil, queueError(err, "listing the deliveries of event "+id)
	}
	return ev, page.Deliveries, nil
}

// recentEvents lists the events of the newest deliveries matching f, newest
// first, each with the deliveries of it on that page: the stored events
// have no index of their own, the deliveries do.
func (s *adminService) recentEvents(ctx context.Context, f queue.Filter) ([]eventSummary, string, error) {
	ds, next, err := s.list(ctx, f)
	if err != nil {
		return nil, "", err
	}
	var out []eventSummary
	at := map[string]int{}
	for _, d := range ds {
		key := d.EventID
		if key == "" {
			key = "delivery:" + d.ID
		}
		i, ok := at[key]
		if !ok {
			i = len(out)
			at[key] = i
			out = append(out, eventSummary{ID: d.EventID, Target: d.Target, Event: d.Event, CallID: d.CallID, CreatedAt: d.CreatedAt})
		}
		out[i].Deliveries = append(out[i].Deliveries, d)
	}
	return out, next, nil
}

// eventSummary is one event on the events page.
type eventSummary struct {
	ID, Target, Event, CallID string
	CreatedAt                 time.Time
	Deliveries                []*queue.Delivery
}

// replay renders a stored event again with the current config and queues
// fresh deliveries (dedup bypassed).
func (s *adminService) replay(ctx context.Context, eventID string) (queue.EnqueueResult, error) {
	e, _, err := s.engine()
	if err != nil {
		return queue.EnqueueResult{}, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	res, err := e.replayEvent(ctx, eventID)
	switch {
	case errors.Is(err, queue.ErrNotFound):
		return res, eventNotFound(e, eventID)
	case err != nil:
		return res, recoveryError(err, "replaying event "+eventID)
	}
	e.pool.Notify()
	s.log(ctx).Info("event replayed by hand", zap.String("event_id", eventID), zap.String("new_event_id", res.EventID), zap.Int("deliveries", len(res.Refs)))
	return res, nil
}

// webhooks lists every webhook with its state (active or paused) and
// success figures.
func (s *adminService) webhooks(ctx context.Context) ([]WebhookState, error) {
	e, _, err := s.engine()
	if err != nil {
		return nil, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	ws, err := e.webhookStates(ctx)
	if err != nil {
		return nil, recoveryError(err, "listing webhooks")
	}
	return ws, nil
}

// resume lifts the pause of one webhook.
func (s *adminService) resume(ctx context.Context, target, webhook string) error {
	e, _, err := s.engine()
	if err != nil {
		return err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	err = e.resumeWebhook(ctx, target, webhook)
	if errors.Is(err, queue.ErrNotFound) {
		var names []string
		e.current().each(func(h *Handler, w *render.Webhook) { names = append(names, h.Target+"/"+w.Name()) })
		known := "it has none"
		if len(names) > 0 {
			known = "it has " + strings.Join(names, ", ")
		}
		return apiError(http.StatusNotFound, "no webhook %s in target %s: the running config has no such webhook and no pause is stored for it (%s); the path is /callhook/webhooks/<target>/<webhook>/resume, see GET /callhook/webhooks", webhook, target, known)
	}
	if err != nil {
		return recoveryError(err, "resuming webhook "+queue.WebhookKey(target, webhook))
	}
	e.pool.Notify()
	s.log(ctx).Info("webhook resumed by hand", zap.String("target", target), zap.String("webhook", webhook))
	return nil
}

// retention is how long delivered deliveries are kept, for messages.
func (e *engine) retention() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.settings.retention
}

func deliveryError(e *engine, id string, err error) error {
	if errors.Is(err, queue.ErrNotFound) {
		return apiError(http.StatusNotFound, "no delivery %s: it is not in the queue (delivered deliveries are removed after the retention of %s)", id, e.retention())
	}
	return queueError(err, "reading delivery "+id)
}

func eventNotFound(e *engine, id string) error {
	return apiError(http.StatusNotFound, "no event %s: it is not stored (events are kept for the retention of %s once their deliveries are delivered)", id, e.retention())
}

// recoveryError is queueError for the recovery operations, with their
// conflicts (409).
func recoveryError(err error, doing string) error {
	var (
		ae caddy.APIError
		ce *conflictError
	)
	switch {
	case errors.As(err, &ae):
		return err
	case errors.As(err, &ce):
		return apiError(http.StatusConflict, "%s", ce.msg)
	case errors.Is(err, queue.ErrNotDead):
		return apiError(http.StatusConflict, "%s: %v", doing, err)
	}
	return queueError(err, doing)
}

// notDead is the 409 for an action on dead deliveries only.
func notDead(d *queue.Delivery, done string) error {
	switch d.State {
	case queue.Leased:
		return apiError(http.StatusConflict, "delivery %s is pending, not dead: an attempt is running now; only dead deliveries can be %s", d.ID, done)
	case queue.Pending:
		return apiError(http.StatusConflict, "delivery %s is pending, not dead: its next attempt is due at %s; only dead deliveries can be %s", d.ID, formatTime(d.NextAttempt), done)
	case queue.Delivered:
		return apiError(http.StatusConflict, "delivery %s is delivered, not dead (at %s); only dead deliveries can be %s", d.ID, formatTime(d.FinishedAt), done)
	}
	return apiError(http.StatusConflict, "delivery %s is %s, not dead; only dead deliveries can be %s", d.ID, d.State, done)
}

// rendered reports whether d has a request to send. A webhook whose `when`
// or params failed to evaluate is stored dead with no URL: retrying it
// would only fail again, with a less useful error.
func rendered(d *queue.Delivery) bool { return d.Request.URL != "" }

// operatorFields name a delivery an operator acted on; never its request.
func operatorFields(d *queue.Delivery) []zap.Field {
	return []zap.Field{
		zap.String("delivery_id", d.ID), zap.String("webhook", d.Webhook), zap.String("target", d.Target),
		zap.String("event", d.Event), zap.String("call_id", d.CallID),
	}
}

func filterFields(f queue.Filter) []zap.Field {
	return []zap.Field{
		zap.String("webhook", f.Webhook), zap.String("event", f.Event),
		zap.String("call_id", f.CallID), zap.String("target", f.Target),
	}
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// errorStatus is the HTTP status of an error of this layer.
func errorStatus(err error) int {
	var ae caddy.APIError
	if errors.As(err, &ae) && ae.HTTPStatus != 0 {
		return ae.HTTPStatus
	}
	return http.StatusInternalServerError
}

// errorMessage is an error of this layer without caddy.APIError's wrapping.
func errorMessage(err error) string {
	var ae caddy.APIError
	if errors.As(err, &ae) && ae.Err != nil {
		return ae.Err.Error()
	}
	return err.Error()
}

// queueError turns a queue failure into an answer: 503 when the queue is
// going away or slow (worth retrying), 500 otherwise.
func queueError(err error, doing string) error {
	switch {
	case errors.Is(err, queue.ErrClosed):
		return apiError(http.StatusServiceUnavailable, "%s: the callhook queue is closed (Caddy is stopping or moving to another queue); try again in a moment", doing)
	case errors.Is(err, queue.ErrUnavailable):
		return apiError(http.StatusServiceUnavailable, "%s: the queue cannot be reached now; try again in a moment", doing)
	case errors.Is(err, context.DeadlineExceeded):
		return apiError(http.StatusServiceUnavailable, "%s: the queue did not answer within %s; try again", doing, adminTimeout)
	}
	return apiError(http.StatusInternalServerError, "%s: %v", doing, err)
}
