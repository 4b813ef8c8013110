package callhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves callhook's operator layer (admin_service.go) on Caddy's
// admin endpoint, as JSON:
//
//	GET    /callhook/deliveries?state=&webhook=&event=&call_id=&target=&event_id=&limit=&cursor=
//	GET    /callhook/deliveries/<id>
//	POST   /callhook/deliveries/<id>/retry
//	DELETE /callhook/deliveries/<id>                    (dead ones only)
//	GET    /callhook/dead?webhook=&event=&call_id=&target=   (how many a bulk action would touch)
//	POST   /callhook/dead/retry?webhook=&event=&call_id=&target=
//	DELETE /callhook/dead?webhook=&event=&call_id=&target=
//	GET    /callhook/events/<id>
//	POST   /callhook/events/<id>/replay
//	GET    /callhook/webhooks
//	POST   /callhook/webhooks/<target>/<webhook>/resume
//	POST   /callhook/webhooks/<target>/<webhook>/test   (admin_test_send.go)
//	GET    /callhook/stats
//
// Errors are JSON ({"error": "..."}): 400 for bad input, 404 for an unknown
// delivery, event or webhook, 405 with Allow for a wrong method, 409 for a
// delivery in the wrong state, 503 when trying again later may work.
// Secrets never leave it (see internal/redact).
type adminAPI struct {
	svc    *adminService
	logger *zap.Logger
	mux    *http.ServeMux
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.callhook",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision finds the config's callhook app, if it has one, and sets up
// the routes.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger(a)
	a.svc = newAdminService(ctx, a.logger)
	a.routes()
	return nil
}

// newAdminAPI is an admin API over svc, as Provision makes it.
func newAdminAPI(svc *adminService) *adminAPI {
	a := &adminAPI{svc: svc, logger: svc.logger}
	a.routes()
	return a
}

const adminBase = "/callhook/"

// Routes returns the admin routes of callhook.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: adminBase, Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// adminHandler is one route: it returns its error, which Caddy's admin
// endpoint writes as {"error": ...} with the error's status.
type adminHandler func(w http.ResponseWriter, r *http.Request) error

// errSlot carries a route's error out of the ServeMux.
type errSlot struct{ err error }

type errSlotKey struct{}

func (h adminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if slot, ok := r.Context().Value(errSlotKey{}).(*errSlot); ok {
		slot.err = h(w, r)
	}
}

// routes builds the ServeMux. Every path under /callhook/ that no route
// takes lands in notFound, which tells 404 from 405.
func (a *adminAPI) routes() {
	mux := http.NewServeMux()
	handle := func(pattern string, h adminHandler) { mux.Handle(pattern, h) }
	handle("GET /callhook/deliveries", a.handleList)
	handle("GET /callhook/deliveries/{id}", a.handleGet)
	handle("POST /callhook/deliveries/{id}/retry", a.handleRetry)
	handle("DELETE /callhook/deliveries/{id}", a.handleDelete)
	handle("GET /callhook/dead", a.handlePreviewDead)
	handle("POST /callhook/dead/retry", a.handleRetryDead)
	handle("DELETE /callhook/dead", a.handleDeleteDead)
	handle("GET /callhook/events/{id}", a.handleEvent)
	handle("POST /callhook/events/{id}/replay", a.handleReplay)
	handle("GET /callhook/webhooks", a.handleWebhooks)
	handle("POST /callhook/webhooks/{target}/{webhook}/resume", a.handleResume)
	handle("POST /callhook/webhooks/{target}/{webhook}/test", a.handleTest)
	handle("GET /callhook/stats", a.handleStats)
	handle("/callhook/", a.notFound)
	a.mux = mux
}

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	// The routes take no trailing slash; /callhook/deliveries/ is the list.
	if p := r.URL.Path; len(p) > len(adminBase) && strings.HasSuffix(p, "/") {
		r2 := *r
		u := *r.URL
		u.Path, u.RawPath = strings.TrimRight(p, "/"), ""
		r2.URL = &u
		r = &r2
	}
	slot := new(errSlot)
	a.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), errSlotKey{}, slot)))
	return slot.err
}

// notFound answers a path or method no route takes: 405 with Allow when
// the path is known under another method, else 404.
func (a *adminAPI) notFound(w http.ResponseWriter, r *http.Request) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "" && pattern != "/callhook/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		return apiError(http.StatusMethodNotAllowed, "method %s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(allow, " or "))
	}
	return apiError(http.StatusNotFound, "no callhook admin endpoint %s: use GET /callhook/deliveries, GET|DELETE /callhook/deliveries/<id>, POST /callhook/deliveries/<id>/retry, GET|DELETE /callhook/dead, POST /callhook/dead/retry, GET /callhook/events/<id>, POST /callhook/events/<id>/replay, GET /callhook/webhooks, POST /callhook/webhooks/<target>/<webhook>/resume, POST /callhook/webhooks/<target>/<webhook>/test or GET /callhook/stats", r.URL.Path)
}

func (a *adminAPI) handleList(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r.URL.Query(), true)
	if err != nil {
		return err
	}
	ds, next, err := a.svc.list(r.Context(), f)
	if err != nil {
		return err
	}
	out := listAnswer{Deliveries: make([]deliveryView, 0, len(ds)), NextCursor: next}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, viewDelivery(d, listResponseBytes))
	}
	return writeAdminJSON(w, out)
}

func (a *adminAPI) handleGet(w http.ResponseWriter, r *http.Request) error {
	d, err := a.svc.get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeAdminJSON(w, viewFull(d, a.svc.secretsOf(d)))
}

func (a *adminAPI) handleRetry(w http.ResponseWriter, r *http.Request) error {
	d, err := a.svc.retry(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeAdminJSON(w, struct {
		Retried  int          `json:"retried"`
		Delivery deliveryView `json:"delivery"`
	}{1, viewDelivery(d, listResponseBytes, a.svc.secretsOf(d)...)})
}

func (a *adminAPI) handleDelete(w http.ResponseWriter, r *http.Request) error {
	if err := a.svc.remove(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	return writeAdminJSON(w, struct {
		Deleted int `json:"deleted"`
	}{1})
}

func (a *adminAPI) handlePreviewDead(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r.URL.Query(), false)
	if err != nil {
		return err
	}
	c, err := a.svc.previewDead(r.Context(), f)
	if err != nil {
		return err
	}
	return writeAdminJSON(w, c)
}

func (a *adminAPI) handleRetryDead(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r.URL.Query(), false)
	if err != nil {
		return err
	}
	out, err := a.svc.retryDead(r.Context(), f)
	if err != nil {
		return err
	}
	return writeAdminJSON(w, out)
}

func (a *adminAPI) handleDeleteDead(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilter(r.URL.Query(), false)
	if err != nil {
		return err
	}
	n, err := a.svc.removeDead(r.Context(), f)
	if err != nil {
		return err
	}
	return writeAdminJSON(w, struct {
		Deleted int `json:"deleted"`
	}{n})
}

func (a *adminAPI) handleEvent(w http.ResponseWriter, r *http.Request) error {
	ev, ds, err := a.svc.event(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeAdminJSON(w, viewEvent(ev, ds))
}

func (a *adminAPI) handleReplay(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	res, err := a.svc.replay(r.Context(), id)
	if err != nil {
		return err
	}
	return writeAdminJSONStatus(w, http.StatusAccepted, viewReplay(id, res))
}

func (a *adminAPI) handleWebhooks(w http.ResponseWriter, r *http.Request) error {
	ws, err := a.svc.webhooks(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Webhooks []WebhookState `json:"webhooks"`
	}{make([]WebhookState, 0, len(ws))}
	for _, wh := range ws {
		out.Webhooks = append(out.Webhooks, viewWebhook(wh))
	}
	return writeAdminJSON(w, out)
}

func (a *adminAPI) handleResume(w http.ResponseWriter, r *http.Request) error {
	target, webhook := r.PathValue("target"), r.PathValue("webhook")
	if err := a.svc.resume(r.Context(), target, webhook); err != nil {
		return err
	}
	ws, err := a.svc.webhooks(r.Context())
	if err != nil {
		return err
	}
	for _, st := range ws {
		if st.Target == target && st.Webhook == webhook {
			return writeAdminJSON(w, viewWebhook(st))
		}
	}
	return writeAdminJSON(w, WebhookState{Target: target, Webhook: webhook, State: "active"})
}

func (a *adminAPI) handleStats(w http.ResponseWriter, r *http.Request) error {
	st, err := a.svc.stats(r.Context())
	if err != nil {
		return err
	}
	return writeAdminJSON(w, st)
}

// stateLeased lists the deliveries an attempt is running for: the stats
// count them apart, so the list takes the same name.
const stateLeased = queue.Leased

// filterParams are the query parameters of the list; the bulk actions on
// dead deliveries take the same minus paging, state and event_id.
var (
	filterParams     = []string{"state", "webhook", "event", "call_id", "target", "event_id", "limit", "cursor"}
	deadFilterParams = []string{"webhook", "event", "call_id", "target"}
)

func parseFilter(q url.Values, paging bool) (queue.Filter, error) {
	allowed := filterParams
	if !paging {
		allowed = deadFilterParams
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
		EventID: q.Get("event_id"),
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
	_ http.Handler      = adminHandler(nil)
)
