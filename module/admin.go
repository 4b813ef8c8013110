package callhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the delivery log of the callhook queue on Caddy's admin
// endpoint: list and inspect deliveries, retry dead ones, and queue stats.
//
//	GET    /callhook/deliveries?state=&webhook=&event=&call_id=&target=&limit=&cursor=
//	GET    /callhook/deliveries/<id>
//	DELETE /callhook/deliveries/<id>
//	POST   /callhook/deliveries/<id>/retry
//	POST   /callhook/dead/retry?webhook=&event=&call_id=&target=
//	POST   /callhook/events/<event_id>/replay
//	GET    /callhook/webhooks
//	POST   /callhook/webhooks/<target>/<webhook>/resume
//	GET    /callhook/stats
//
// The recovery operations are the engine's (engine_recovery.go); the
// handlers here only parse and answer.
//
// Secrets never leave it: signing secrets are not output, and credential
// headers and query parameters are shown as [redacted].
type adminAPI struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.callhook",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision finds the config's callhook app, if it has one. The admin
// endpoint is provisioned for every config, so the app is only looked up:
// ctx.App would create and start one, opening a queue, in configs that do
// not use callhook at all.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger(a)
	if app, err := ctx.AppIfConfigured("callhook"); err == nil {
		a.app, _ = app.(*App)
	}
	return nil
}

const adminBase = "/callhook/"

// Routes returns the admin routes of callhook.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: adminBase, Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// Limits of the admin API.
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

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	parts := pathParts(r)
	switch {
	case len(parts) == 1 && parts[0] == "deliveries":
		return a.route(w, r, http.MethodGet, a.handleList)
	case len(parts) == 2 && parts[0] == "deliveries" && parts[1] != "" && r.Method == http.MethodDelete:
		return a.handleDelete(w, r, parts[1])
	case len(parts) == 2 && parts[0] == "deliveries" && parts[1] != "":
		return a.route(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request) error {
			return a.handleGet(w, r, parts[1])
		})
	case len(parts) == 3 && parts[0] == "events" && parts[1] != "" && parts[2] == "replay":
		return a.route(w, r, http.MethodPost, func(w http.ResponseWriter, r *http.Request) error {
			return a.handleReplay(w, r, parts[1])
		})
	case len(parts) == 1 && parts[0] == "webhooks":
		return a.route(w, r, http.MethodGet, a.handleWebhooks)
	case len(parts) == 4 && parts[0] == "webhooks" && parts[1] != "" && parts[2] != "" && parts[3] == "resume":
		return a.route(w, r, http.MethodPost, func(w http.ResponseWriter, r *http.Request) error {
			return a.handleResume(w, r, parts[1], parts[2])
		})
	case len(parts) == 3 && parts[0] == "deliveries" && parts[1] != "" && parts[2] == "retry":
		return a.route(w, r, http.MethodPost, func(w http.ResponseWriter, r *http.Request) error {
			return a.handleRetry(w, r, parts[1])
		})
	case len(parts) == 2 && parts[0] == "dead" && parts[1] == "retry":
		return a.route(w, r, http.MethodPost, a.handleRetryDead)
	case len(parts) == 1 && parts[0] == "stats":
		return a.route(w, r, http.MethodGet, a.handleStats)
	}
	return apiError(http.StatusNotFound, "no callhook admin endpoint %s: use GET /callhook/deliveries, GET or DELETE /callhook/deliveries/<id>, POST /callhook/deliveries/<id>/retry, POST /callhook/dead/retry, POST /callhook/events/<event_id>/replay, GET /callhook/webhooks, POST /callhook/webhooks/<target>/<webhook>/resume or GET /callhook/stats", r.URL.Path)
}

// pathParts splits the path after /callhook/ into its segments, each
// unescaped, so a target or webhook name may hold any character.
func pathParts(r *http.Request) []string {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.EscapedPath(), adminBase), "/"), "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	return parts
}

func (a *adminAPI) route(w http.ResponseWriter, r *http.Request, method string, h func(http.ResponseWriter, *http.Request) error) error {
	if r.Method != method {
		w.Header().Set("Allow", method)
		return apiError(http.StatusMethodNotAllowed, "method %s is not allowed on %s: use %s", r.Method, r.URL.Path, method)
	}
	return h(w, r)
}

// handleList answers GET /callhook/deliveries.
func (a *adminAPI) handleList(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r.URL.Query(), true)
	if err != nil {
		return err
	}
	e, _, err := a.engine()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	page, err := e.q.List(ctx, f)
	ds, next := page.Deliveries, page.Next
	if err != nil {
		// The cursor is opaque to us; a backend that cannot read it says so
		// in its error, which is the client's mistake, not ours.
		if f.Cursor != "" && strings.Contains(err.Error(), "cursor") {
			return apiError(http.StatusBadRequest, "cursor: %v", err)
		}
		return queueError(err, "listing deliveries")
	}
	out := listAnswer{Deliveries: make([]deliveryView, 0, len(ds)), NextCursor: next}
	for _, d := range ds {
		// A list page shows each delivery's attempts; the queue's List
		// leaves the history out, so a page costs one read per row.
		if full, err := e.q.Get(ctx, d.ID); err == nil {
			full.State, full.LeasedUntil = d.State, d.LeasedUntil
			d = full
		}
		out.Deliveries = append(out.Deliveries, viewDelivery(d, listResponseBytes))
	}
	return writeAdminJSON(w, out)
}

// delivery finds the running engine and one delivery in its queue.
func (a *adminAPI) delivery(ctx context.Context, id string) (*engine, *queue.Delivery, error) {
	e, _, err := a.engine()
	if err != nil {
		return nil, nil, err
	}
	d, err := e.q.Get(ctx, id)
	if err != nil {
		return nil, nil, a.getError(e, id, err)
	}
	return e, d, nil
}

// handleGet answers GET /callhook/deliveries/<id>, with the stored request.
func (a *adminAPI) handleGet(w http.ResponseWriter, r *http.Request, id string) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	e, d, err := a.delivery(ctx, id)
	if err != nil {
		return err
	}
	secrets, _ := e.signingSecrets(d)
	v := viewDelivery(d, -1)
	v.Request = viewRequest(d, secrets, false)
	v.Policy = &policyView{
		Timeout:     d.Policy.Timeout.String(),
		MaxAttempts: d.Policy.MaxAttempts,
		BackoffMin:  d.Policy.BackoffMin.String(),
		BackoffMax:  d.Policy.BackoffMax.String(),
		MaxAge:      d.Policy.MaxAge.String(),
		JSONRPC:     d.Policy.JSONRPC,
		Signed:      len(secrets) > 0,
	}
	return writeAdminJSON(w, v)
}

// handleRetry answers POST /callhook/deliveries/<id>/retry. A delivery
// that was dead on arrival is rendered again with the running config.
func (a *adminAPI) handleRetry(w http.ResponseWriter, r *http.Request, id string) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	e, _, err := a.engine()
	if err != nil {
		return err
	}
	d, err := e.retryDelivery(ctx, id)
	if err != nil {
		return a.recoveryError(e, id, d, err, "retried", "retrying delivery "+id)
	}
	return writeAdminJSON(w, struct {
		Retried  int          `json:"retried"`
		Delivery deliveryView `json:"delivery"`
	}{1, viewDelivery(d, listResponseBytes)})
}

// handleDelete answers DELETE /callhook/deliveries/<id>.
func (a *adminAPI) handleDelete(w http.ResponseWriter, r *http.Request, id string) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	e, _, err := a.engine()
	if err != nil {
		return err
	}
	if err := e.deleteDelivery(ctx, id); err != nil {
		return a.recoveryError(e, id, nil, err, "deleted", "deleting delivery "+id)
	}
	return writeAdminJSON(w, struct {
		Deleted int `json:"deleted"`
	}{1})
}

// recoveryError answers a failed retry or delete of delivery id.
func (a *adminAPI) recoveryError(e *engine, id string, d *queue.Delivery, err error, verb, doing string) error {
	var ce *conflictError
	switch {
	case errors.As(err, &ce):
		return apiError(http.StatusConflict, "%s", ce.msg)
	case errors.Is(err, queue.ErrNotFound):
		return a.getError(e, id, err)
	case errors.Is(err, queue.ErrNotDead):
		if d == nil {
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			got, gerr := e.q.Get(ctx, id)
			if gerr != nil {
				return a.getError(e, id, gerr)
			}
			d = got
		}
		if verb == "retried" {
			if rerr := retryable(d); rerr != nil {
				return rerr
			}
		}
		return apiError(http.StatusConflict, "delivery %s is %s, not dead; only dead deliveries can be %s", id, d.State, verb)
	}
	return queueError(err, doing)
}

// handleReplay answers POST /callhook/events/<event_id>/replay: the stored
// event is rendered again with the running config and queued as a new
// event, whatever the dedup window says.
func (a *adminAPI) handleReplay(w http.ResponseWriter, r *http.Request, eventID string) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	e, _, err := a.engine()
	if err != nil {
		return err
	}
	res, err := e.replayEvent(ctx, eventID)
	var ce *conflictError
	switch {
	case errors.As(err, &ce):
		return apiError(http.StatusConflict, "%s", ce.msg)
	case errors.Is(err, queue.ErrNotFound):
		e.mu.Lock()
		retention := e.settings.retention
		e.mu.Unlock()
		return apiError(http.StatusNotFound, "no stored event %s: the ID is unknown, or the event was pruned (events are kept for the retention of %s once their deliveries are delivered); take event_id from an ingest answer or a delivery", eventID, retention)
	case err != nil:
		return queueError(err, "replaying event "+eventID)
	}
	refs := res.Refs
	if refs == nil {
		refs = []queue.Ref{}
	}
	return writeAdminJSONStatus(w, http.StatusAccepted, struct {
		EventID    string      `json:"event_id"`
		ReplayOf   string      `json:"replay_of"`
		Deliveries []queue.Ref `json:"deliveries"`
	}{res.EventID, eventID, refs})
}

// handleWebhooks answers GET /callhook/webhooks.
func (a *adminAPI) handleWebhooks(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	e, _, err := a.engine()
	if err != nil {
		return err
	}
	states, err := e.webhookStates(ctx)
	if err != nil {
		return queueError(err, "listing webhooks")
	}
	if states == nil {
		states = []WebhookState{}
	}
	return writeAdminJSON(w, struct {
		Webhooks []WebhookState `json:"webhooks"`
	}{states})
}

// handleResume answers POST /callhook/webhooks/<target>/<webhook>/resume.
func (a *adminAPI) handleResume(w http.ResponseWriter, r *http.Request, target, webhook string) error {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	e, _, err := a.engine()
	if err != nil {
		return err
	}
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
		return queueError(err, "resuming webhook "+webhook)
	}
	states, err := e.webhookStates(ctx)
	if err != nil {
		return queueError(err, "listing webhooks")
	}
	for _, st := range states {
		if st.Target == target && st.Webhook == webhook {
			return writeAdminJSON(w, st)
		}
	}
	return writeAdminJSON(w, WebhookState{Target: target, Webhook: webhook, State: webhookActive})
}

// handleRetryDead answers POST /callhook/dead/retry: every dead delivery
// that matches the filters goes back in the queue. Deliveries that were
// never rendered are skipped and counted: retrying cannot fix them.
func (a *adminAPI) handleRetryDead(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r.URL.Query(), false)
	if err != nil {
		return err
	}
	e, _, err := a.engine()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	f.State, f.Limit = queue.Dead, maxAdminLimit
	var out retryAnswer
	// Pages follow the cursor (a position in the dead index), so the
	// deliveries retried from one page, which leave that index, do not
	// shift the next page.
	for {
		page, err := e.q.List(ctx, f)
		ds, next := page.Deliveries, page.Next
		if err != nil {
			return queueError(err, fmt.Sprintf("listing dead deliveries (%d retried so far)", out.Retried))
		}
		var ids []string
		for _, d := range ds {
			if d.State != queue.Dead {
				continue
			}
			if !rendered(d) {
				// Dead on arrival: rendered again with the running
				// config, or skipped if it still cannot be.
				if _, err := e.retryDelivery(ctx, d.ID); err == nil {
					out.Retried++
				} else {
					out.Skipped++
				}
				continue
			}
			ids = append(ids, d.ID)
		}
		n, err := retryIDs(ctx, e.q, ids)
		out.Retried += n
		if err != nil {
			if out.Retried > 0 {
				e.pool.Notify()
			}
			return queueError(err, fmt.Sprintf("retrying dead deliveries (%d retried before the error)", out.Retried))
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if out.Retried > 0 {
		e.pool.Notify()
	}
	a.logger.Info("dead deliveries put back in the queue by hand",
		zap.Int("retried", out.Retried), zap.Int("skipped_not_renderable", out.Skipped),
		zap.String("webhook", f.Webhook), zap.String("event", f.Event),
		zap.String("call_id", f.CallID), zap.String("target", f.Target))
	return writeAdminJSON(w, out)
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

// handleStats answers GET /callhook/stats.
func (a *adminAPI) handleStats(w http.ResponseWriter, r *http.Request) error {
	e, key, err := a.engine()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	st, err := e.q.Stats(ctx)
	if err != nil {
		return queueError(err, "reading queue stats")
	}
	e.mu.Lock()
	s := e.settings
	e.mu.Unlock()
	out := statsView{
		Queue:          key,
		Stats:          st,
		Workers:        s.workers,
		PerDestination: s.perDestination,
		Retention:      s.retention.String(),
		DrainTimeout:   s.drain.String(),
	}
	return writeAdminJSON(w, out)
}

// engine is the running engine this admin API works on: the one of its own
// config's app, or else, while that app is not started (a reload in
// progress, a config that failed to start, handlers without the global
// option), the only open one. It never waits for a stopped engine: a closed
// queue answers queue.ErrClosed at once.
func (a *adminAPI) engine() (*engine, string, error) {
	if a.app != nil {
		if e := a.app.loadEngine(); e != nil {
			return e, a.app.backend.Key(), nil
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
	case a.app == nil:
		return nil, "", apiError(http.StatusServiceUnavailable, "callhook is not running: the current config has no callhook handler or app")
	}
	return nil, "", apiError(http.StatusServiceUnavailable, "the callhook app is not running: it is starting, or it failed to start (see Caddy's log)")
}

func (a *adminAPI) getError(e *engine, id string, err error) error {
	if errors.Is(err, queue.ErrNotFound) {
		e.mu.Lock()
		retention := e.settings.retention
		e.mu.Unlock()
		return apiError(http.StatusNotFound, "no delivery %s: it is not in the queue (delivered deliveries are removed after the retention of %s)", id, retention)
	}
	return queueError(err, "reading delivery "+id)
}

// retryable says why d cannot be retried by hand, or nil if it can.
func retryable(d *queue.Delivery) error {
	switch {
	case d.State == queue.Leased:
		return apiError(http.StatusConflict, "delivery %s is pending, not dead: an attempt is running now; only dead deliveries can be retried", d.ID)
	case d.State == queue.Pending:
		return apiError(http.StatusConflict, "delivery %s is pending, not dead: its next attempt is due at %s; only dead deliveries can be retried", d.ID, formatTime(d.NextAttempt))
	case d.State == queue.Delivered:
		return apiError(http.StatusConflict, "delivery %s is delivered, not dead (at %s); only dead deliveries can be retried", d.ID, formatTime(d.FinishedAt))
	case d.State != queue.Dead:
		return apiError(http.StatusConflict, "delivery %s is %s, not dead; only dead deliveries can be retried", d.ID, d.State)
	}
	return nil
}

// rendered reports whether d has a request to send. A webhook whose `when`
// or params failed to evaluate is stored dead with no URL: retrying it
// would only fail again, with a less useful error.
func rendered(d *queue.Delivery) bool { return d.Request.URL != "" }

// stateLeased lists the deliveries an attempt is running for: the stats
// count them apart, so the list takes the same name.
const stateLeased = queue.Leased

// filterParams are the query parameters of the list; retry takes the
// same minus paging and state.
var filterParams = []string{"state", "webhook", "event", "call_id", "target", "limit", "cursor"}

func parseFilter(q url.Values, paging bool) (queue.Filter, error) {
	allowed := filterParams
	if !paging {
		allowed = []string{"webhook", "event", "call_id", "target"}
	}
	for name, vs := range q {
		if !slices.Contains(allowed, name) {
			return queue.Filter{}, apiError(http.StatusBadRequest, "unknown query parameter %q: expected %s", name, strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return queue.Filter{}, apiError(http.StatusBadRequest, "query parameter %s is given %d times; give it once", name, len(vs))
		}
	}
	f := queue.Filter{
		State:   queue.State(q.Get("state")),
		Webhook: q.Get("webhook"),
		Event:   q.Get("event"),
		CallID:  q.Get("call_id"),
		Target:  q.Get("target"),
		Cursor:  q.Get("cursor"),
		Limit:   defaultAdminLimit,
	}
	switch f.State {
	case "", queue.Pending, stateLeased, queue.Delivered, queue.Dead:
	default:
		return f, apiError(http.StatusBadRequest, "state %q: expected pending, leased, delivered or dead", f.State)
	}
	if f.Event != "" && !intake.IsEventName(f.Event) {
		return f, apiError(http.StatusBadRequest, "event %q is not a callhook event: expected one of %s", f.Event, strings.Join(intake.EventNames, ", "))
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAdminLimit {
			return f, apiError(http.StatusBadRequest, "limit %q: expected a whole number from 1 to %d", v, maxAdminLimit)
		}
		f.Limit = n
	}
	if f.Cursor != "" {
		if _, err := base64.RawURLEncoding.DecodeString(f.Cursor); err != nil {
			return f, apiError(http.StatusBadRequest, "cursor %q is not one this API gave out: pass next_cursor of the previous page unchanged", f.Cursor)
		}
	}
	return f, nil
}

// Answers of the admin API.
type (
	listAnswer struct {
		Deliveries []deliveryView `json:"deliveries"`
		// NextCursor fetches the next page; "" on the last one.
		NextCursor string `json:"next_cursor"`
	}

	retryAnswer struct {
		Retried int `json:"retried"`
		// Skipped counts dead-on-arrival deliveries (their webhook failed
		// to render) that still cannot be rendered with the running
		// config; retry one by hand to see why.
		Skipped int `json:"skipped"`
	}

	statsView struct {
		Queue string `json:"queue"`
		queue.Stats
		Workers        int    `json:"workers"`
		PerDestination int    `json:"per_destination"`
		Retention      string `json:"retention"`
		DrainTimeout   string `json:"drain_timeout"`
	}

	deliveryView struct {
		ID          string      `json:"id"`
		State       queue.State `json:"state"`
		Target      string      `json:"target"`
		Event       string      `json:"event"`
		CallID      string      `json:"call_id"`
		Webhook     string      `json:"webhook"`
		Destination string      `json:"destination,omitempty"`
		CreatedAt   string      `json:"created_at"`
		// NextAttempt is when a pending delivery is due.
		NextAttempt string `json:"next_attempt,omitempty"`
		// LeasedUntil is set while an attempt is running.
		LeasedUntil string `json:"leased_until,omitempty"`
		FinishedAt  string `json:"finished_at,omitempty"`
		LastError   string `json:"last_error,omitempty"`
		// Retryable: POST .../retry would put it back in the queue.
		Retryable bool          `json:"retryable"`
		Attempts  []attemptView `json:"attempts"`
		Request   *requestView  `json:"request,omitempty"`
		Policy    *policyView   `json:"policy,omitempty"`
	}

	attemptView struct {
		Start      string  `json:"start"`
		DurationMS float64 `json:"duration_ms"`
		// Status is 0 when no response was received.
		Status            int    `json:"status"`
		Error             string `json:"error,omitempty"`
		Response          string `json:"response,omitempty"`
		ResponseTruncated bool   `json:"response_truncated,omitempty"`
	}

	requestView struct {
		Method  string       `json:"method"`
		URL     string       `json:"url"`
		Headers []headerView `json:"headers"`
		Body    string       `json:"body"`
	}

	headerView struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}

	policyView struct {
		Timeout     string `json:"timeout"`
		MaxAttempts int    `json:"max_attempts"`
		BackoffMin  string `json:"backoff_min"`
		BackoffMax  string `json:"backoff_max"`
		MaxAge      string `json:"max_age"`
		JSONRPC     bool   `json:"jsonrpc,omitempty"`
		// Signed says a signing secret is set; the secret is never shown.
		Signed bool `json:"signed"`
	}
)

// viewDelivery shows d with at most maxResponse bytes of each attempt's
// response (all of it when maxResponse < 0).
func viewDelivery(d *queue.Delivery, maxResponse int) deliveryView {
	v := deliveryView{
		ID:          d.ID,
		State:       d.State,
		Target:      d.Target,
		Event:       d.Event,
		CallID:      d.CallID,
		Webhook:     d.Webhook,
		Destination: d.Destination,
		CreatedAt:   formatTime(d.CreatedAt),
		FinishedAt:  formatTime(d.FinishedAt),
		LeasedUntil: formatTime(d.LeasedUntil),
		LastError:   d.LastError,
		Retryable:   d.State == queue.Dead,
		Attempts:    make([]attemptView, 0, len(d.Attempts)),
	}
	if d.State == queue.Pending {
		v.NextAttempt = formatTime(d.NextAttempt)
	}
	for _, at := range d.Attempts {
		resp := at.Response
		cut := len(resp) >= delivery.DefaultMaxResponse
		if maxResponse >= 0 && len(resp) > maxResponse {
			resp, cut = resp[:maxResponse], true
		}
		v.Attempts = append(v.Attempts, attemptView{
			Start:             formatTime(at.Start),
			DurationMS:        float64(at.Duration.Microseconds()) / 1000,
			Status:            at.Status,
			Error:             at.Error,
			Response:          string(bytes.ToValidUTF8(resp, []byte("\uFFFD"))),
			ResponseTruncated: cut,
		})
	}
	return v
}

// viewRequest shows the stored request as it will be sent, without the
// per-attempt Standard Webhooks headers. Credentials are redacted unless
// showSecrets; the signing secret is scrubbed from every value regardless
// of showSecrets, since only the signature may ever carry it.
func viewRequest(d *queue.Delivery, secrets [][]byte, showSecrets bool) *requestView {
	if !rendered(d) {
		return nil
	}
	scrub := func(s string) string {
		for _, secret := range secrets {
			if len(secret) >= 4 {
				s = strings.ReplaceAll(s, string(secret), redacted)
			}
		}
		return s
	}
	v := &requestView{
		Method:  d.Request.Method,
		URL:     scrub(d.Request.URL),
		Headers: make([]headerView, 0, len(d.Request.Header)),
		Body:    scrub(string(bytes.ToValidUTF8(d.Request.Body, []byte("\uFFFD")))),
	}
	if !showSecrets {
		v.URL = redactURL(v.URL)
	}
	for _, h := range d.Request.Header {
		value := scrub(h[1])
		if !showSecrets {
			value = redactHeader(h[0], value)
		}
		v.Headers = append(v.Headers, headerView{Name: h[0], Value: value})
	}
	return v
}

const redacted = "[redacted]"

// secretHeaderWords mark header names whose values are credentials.
var secretHeaderWords = []string{"auth", "token", "secret", "key", "signature", "cookie", "password"}

// redactHeader hides the value of a credential header: Authorization,
// Proxy-Authorization, Cookie, X-Api-Key and any header whose name
// contains auth, token, secret, key, signature or password.
func redactHeader(name, value string) string {
	lower := strings.ToLower(name)
	for _, w := range secretHeaderWords {
		if strings.Contains(lower, w) {
			return redacted
		}
	}
	return value
}

// secretQueryParam reports whether a query parameter holds a credential:
// token, secret, key, signature, password, api_key, and names that contain
// token, secret, password or signature or end in key (access_token,
// client_secret, apikey).
func secretQueryParam(name string) bool {
	lower := strings.ToLower(name)
	for _, w := range []string{"token", "secret", "password", "passwd", "signature", "sig"} {
		if lower == w || (len(w) > 3 && strings.Contains(lower, w)) {
			return true
		}
	}
	return strings.HasSuffix(lower, "key") || lower == "auth"
}

// redactURL replaces the values of credential query parameters (and a
// password in the user info) with [redacted], keeping everything else as
// it is, in order.
func redactURL(raw string) string {
	base, query, hasQuery := strings.Cut(raw, "?")
	if u, err := url.Parse(base); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "redacted")
			base = u.String()
		}
	}
	if !hasQuery {
		return base
	}
	query, fragment, hasFragment := strings.Cut(query, "#")
	pairs := strings.Split(query, "&")
	for i, p := range pairs {
		k, _, _ := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if secretQueryParam(name) {
			pairs[i] = k + "=" + redacted
		}
	}
	out := base + "?" + strings.Join(pairs, "&")
	if hasFragment {
		out += "#" + fragment
	}
	return out
}

// formatTime is RFC 3339 in UTC with milliseconds; "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// queueError turns a queue failure into an answer: 503 when the queue is
// going away or slow (worth retrying), 500 otherwise.
func queueError(err error, doing string) error {
	switch {
	case errors.Is(err, queue.ErrClosed):
		return apiError(http.StatusServiceUnavailable, "%s: the callhook queue is closed (Caddy is stopping or moving to another queue); try again in a moment", doing)
	case errors.Is(err, context.DeadlineExceeded):
		return apiError(http.StatusServiceUnavailable, "%s: the queue did not answer within %s; try again", doing, adminTimeout)
	}
	return apiError(http.StatusInternalServerError, "%s: %v", doing, err)
}

func writeAdminJSON(w http.ResponseWriter, v any) error {
	return writeAdminJSONStatus(w, http.StatusOK, v)
}

func writeAdminJSONStatus(w http.ResponseWriter, status int, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // bodies are often XML: keep them readable
	if err := enc.Encode(v); err != nil {
		return apiError(http.StatusInternalServerError, "encoding the answer: %v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// Interface guards
var (
	_ caddy.Provisioner = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
