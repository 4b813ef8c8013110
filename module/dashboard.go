package callhook

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

func init() {
	caddy.RegisterModule(Dashboard{})
	httpcaddyfile.RegisterHandlerDirective("callhook_dashboard", parseDashboardDirective)
	// Ordered by the plugin, like callhook: no `order` line needed. Auth
	// handlers (basic_auth, forward_auth) come earlier in Caddy's order.
	httpcaddyfile.RegisterDirectiveOrder("callhook_dashboard", httpcaddyfile.Before, "respond")
}

// Dashboard is `http.handlers.callhook_dashboard`: the delivery dashboard
// (SPEC §14), server-rendered HTML over the same operator layer as the
// admin API. Pages: overview, deliveries, one delivery, events, one event;
// actions (retry, delete, replay, resume) are POST forms protected against
// cross-site requests. It serves whatever path it is mounted at, with
// `handle` or `handle_path`, and has no authentication of its own: put
// `basic_auth` (or any auth handler) in front of it.
type Dashboard struct {
	// ReadOnly hides every action and refuses their POSTs (403).
	ReadOnly bool `json:"read_only,omitempty"`
	// Target limits the dashboard to one target's webhooks and deliveries
	// (the customer portal, dashboard_scope.go): a literal, or placeholders
	// replaced per request, such as {http.auth.user.id} behind basic_auth.
	// A value that is empty after replacement is refused (403).
	Target string `json:"target,omitempty"`

	svc    *adminService
	logger *zap.Logger
	cop    *http.CrossOriginProtection
}

// CaddyModule returns the Caddy module information.
func (Dashboard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.callhook_dashboard",
		New: func() caddy.Module { return new(Dashboard) },
	}
}

// Provision finds the config's callhook app (or, like the admin API, the
// running engine). It opens nothing.
func (h *Dashboard) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger(h)
	h.svc = newAdminService(ctx, h.logger)
	h.cop = http.NewCrossOriginProtection()
	return nil
}

// parseDashboardDirective sets up the dashboard. Syntax:
//
//	callhook_dashboard {
//		read_only
//		target <name or placeholder>
//	}
func parseDashboardDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := new(Dashboard)
	return d, d.UnmarshalCaddyfile(h.Dispenser)
}

// UnmarshalCaddyfile reads the callhook_dashboard directive.
func (h *Dashboard) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("callhook_dashboard takes no arguments, got %q (options go in a block: read_only, target)", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "read_only":
			if d.NextArg() {
				return d.Errf("read_only takes no value, got %q", d.Val())
			}
			h.ReadOnly = true
		case "target":
			if err := h.unmarshalTarget(d); err != nil {
				return err
			}
		default:
			return d.Errf("unknown callhook_dashboard option %q: expected read_only or target", d.Val())
		}
	}
	return nil
}

// dashRoute is a page or action, matched on the end of the path so that
// the dashboard works under any prefix.
type dashRoute struct {
	// name is the page or action; args its path values (IDs, names).
	name string
	args []string
	// depth is how many segments of the path the route took; what is
	// before them is the dashboard's base path.
	depth int
}

// action is the route as a form's token binds it: "deliveries/<id>/retry".
func (r dashRoute) action() string {
	switch r.name {
	case "retry", "delete":
		return "deliveries/" + r.args[0] + "/" + r.name
	case "replay":
		return "events/" + r.args[0] + "/replay"
	case "resume", "test":
		return "webhooks/" + r.args[0] + "/" + r.args[1] + "/" + r.name
	case "dead-retry":
		return "dead/retry"
	case "dead-delete":
		return "dead/delete"
	}
	return r.name
}

// matchRoute finds the route at the end of segs (the unescaped segments of
// the path; a trailing slash gives a last empty one).
func matchRoute(segs []string) (dashRoute, bool) {
	n := len(segs)
	at := func(i int) string { // i from the end, 1 is the last
		if i > n {
			return "\x00"
		}
		return segs[n-i]
	}
	switch {
	case n >= 4 && at(4) == "webhooks" && at(1) == "resume" && at(3) != "" && at(2) != "":
		return dashRoute{"resume", []string{at(3), at(2)}, 4}, true
	case n >= 4 && at(4) == "webhooks" && at(1) == "test" && at(3) != "" && at(2) != "":
		return dashRoute{"test", []string{at(3), at(2)}, 4}, true
	case n >= 3 && at(3) == "webhooks" && at(2) != "" && at(1) != "":
		return dashRoute{"webhook", []string{at(2), at(1)}, 3}, true
	case n >= 3 && at(3) == "deliveries" && (at(1) == "retry" || at(1) == "delete") && at(2) != "":
		return dashRoute{at(1), []string{at(2)}, 3}, true
	case n >= 3 && at(3) == "events" && at(1) == "replay" && at(2) != "":
		return dashRoute{"replay", []string{at(2)}, 3}, true
	case n >= 2 && at(2) == "dead" && (at(1) == "retry" || at(1) == "delete"):
		return dashRoute{"dead-" + at(1), nil, 2}, true
	case n >= 2 && at(2) == "assets" && at(1) == "style.css":
		return dashRoute{"style", nil, 2}, true
	case n >= 2 && at(2) == "deliveries" && at(1) != "":
		return dashRoute{"delivery", []string{at(1)}, 2}, true
	case n >= 2 && at(2) == "events" && at(1) != "":
		return dashRoute{"event", []string{at(1)}, 2}, true
	case n >= 1 && at(1) == "deliveries":
		return dashRoute{"deliveries", nil, 1}, true
	case n >= 1 && at(1) == "events":
		return dashRoute{"events", nil, 1}, true
	case n >= 1 && at(1) == "webhooks":
		return dashRoute{"webhooks", nil, 1}, true
	case n == 0 || at(1) == "":
		return dashRoute{"overview", nil, 1}, true
	}
	return dashRoute{}, false
}

// segments splits an escaped path into unescaped segments, dropping the
// leading slash; "/a/b/" gives a, b, "".
func segments(escaped string) []string {
	escaped = strings.TrimPrefix(escaped, "/")
	if escaped == "" {
		return nil
	}
	parts := strings.Split(escaped, "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	return parts
}

// basePath is where the dashboard is mounted, from the path the client
// asked for (before handle_path stripped a prefix), minus the route.
func basePath(r *http.Request, depth int) string {
	orig := r.URL
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && or.URL != nil {
		orig = or.URL
	}
	parts := strings.Split(strings.TrimPrefix(orig.EscapedPath(), "/"), "/")
	if len(parts) < depth {
		return "/"
	}
	parts = parts[:len(parts)-depth]
	// Leading empty segments are the extra slashes of "//evil.example/...":
	// echoed, they make every link and redirect protocol-relative, off-site.
	for len(parts) > 0 && parts[0] == "" {
		parts = parts[1:]
	}
	if len(parts) == 0 {
		return "/"
	}
	return "/" + strings.Join(parts, "/") + "/"
}

// ServeHTTP serves the dashboard's pages and actions. A path it does not
// know is a 404 page; next is never called.
func (h *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	route, ok := matchRoute(segments(r.URL.EscapedPath()))
	var base string
	if ok {
		base = basePath(r, route.depth)
	} else {
		base = "./"
	}
	v := &view{h: h, w: w, r: r, base: base, route: route}
	setPageHeaders(w)
	if !ok {
		return v.fail(apiError(http.StatusNotFound, "no dashboard page at %s", r.URL.Path))
	}
	if route.name == "style" {
		return serveStyle(w, r)
	}
	v.csrf = csrfCookie(w, r, base)
	scope, err := h.scopeOf(r)
	if err != nil {
		return v.fail(err)
	}
	v.scope = scope

	// A bulk action and a replay have a GET preview that asks to confirm.
	isAction := route.name == "retry" || route.name == "delete" || route.name == "resume" || route.name == "test"
	isBulk := route.name == "dead-retry" || route.name == "dead-delete" || route.name == "replay"
	switch {
	case isAction && r.Method != http.MethodPost,
		isBulk && r.Method != http.MethodPost && r.Method != http.MethodGet && r.Method != http.MethodHead,
		!isAction && !isBulk && r.Method != http.MethodGet && r.Method != http.MethodHead:
		allow := "GET, HEAD"
		if isAction {
			allow = "POST"
		} else if isBulk {
			allow = "GET, HEAD, POST"
		}
		w.Header().Set("Allow", allow)
		return v.fail(apiError(http.StatusMethodNotAllowed, "method %s is not allowed here: use %s", r.Method, allow))
	}
	if r.Method == http.MethodPost {
		if err := h.checkPost(v); err != nil {
			return v.fail(err)
		}
		return h.act(v)
	}
	return h.page(v)
}

// checkPost refuses an action that is not the dashboard's own form:
// read_only, a cross-origin request (Sec-Fetch-Site, Origin), or a form
// without this page's token.
func (h *Dashboard) checkPost(v *view) error {
	if h.ReadOnly {
		return apiError(http.StatusForbidden, "this dashboard is read-only (read_only): actions are refused")
	}
	if err := h.cop.Check(v.r); err != nil {
		h.logger.Warn("cross-origin POST to the callhook dashboard refused",
			zap.String("path", v.r.URL.Path), zap.String("origin", v.r.Header.Get("Origin")),
			zap.String("sec_fetch_site", v.r.Header.Get("Sec-Fetch-Site")))
		return apiError(http.StatusForbidden, "cross-origin request refused: dashboard actions must come from the dashboard's own pages")
	}
	v.r.Body = http.MaxBytesReader(v.w, v.r.Body, 64<<10)
	if err := v.r.ParseForm(); err != nil {
		return apiError(http.StatusBadRequest, "reading the form: %v", err)
	}
	if !checkToken(v.csrf, v.route.action(), v.r.PostForm.Get("csrf")) {
		return apiError(http.StatusForbidden, "the form's token is missing or stale (the page is older than the server, or from elsewhere): reload the page and try again")
	}
	return nil
}

// act runs one action and sends the browser on to the page that shows its
// result (POST, redirect, GET).
func (h *Dashboard) act(v *view) error {
	ctx, route := withActor(v.r.Context(), "dashboard", v.r), v.route
	if err := v.actionInScope(ctx); err != nil {
		return v.fail(err)
	}
	var to string
	switch route.name {
	case "test":
		return h.sendTest(v)
	case "retry":
		if _, err := h.svc.retry(ctx, route.args[0]); err != nil {
			return v.fail(err)
		}
		to = "deliveries/" + url.PathEscape(route.args[0]) + "?done=retried"
	case "delete":
		if err := h.svc.remove(ctx, route.args[0]); err != nil {
			return v.fail(err)
		}
		to = "deliveries?state=dead&done=deleted"
	case "replay":
		res, err := h.svc.replay(ctx, route.args[0])
		if err != nil {
			return v.fail(err)
		}
		to = "events/" + url.PathEscape(res.EventID) + "?done=replayed"
	case "resume":
		if err := h.svc.resume(ctx, route.args[0], route.args[1]); err != nil {
			return v.fail(err)
		}
		to = "?done=resumed"
	case "dead-retry", "dead-delete":
		f, err := formFilter(v.r.PostForm)
		if err != nil {
			return v.fail(err)
		}
		v.scopeFilter(&f)
		q := filterQuery(f)
		q.Set("state", "dead")
		if route.name == "dead-retry" {
			res, err := h.svc.retryDead(ctx, f)
			if err != nil {
				return v.fail(err)
			}
			q.Set("done", "retried_all")
			q.Set("n", strconv.Itoa(res.Retried))
			q.Set("skipped", strconv.Itoa(res.Skipped))
		} else {
			n, err := h.svc.removeDead(ctx, f)
			if err != nil {
				return v.fail(err)
			}
			q.Set("done", "deleted_all")
			q.Set("n", strconv.Itoa(n))
		}
		to = "deliveries?" + q.Encode()
	}
	http.Redirect(v.w, v.r, v.base+to, http.StatusSeeOther)
	return nil
}

// page renders a GET.
func (h *Dashboard) page(v *view) error {
	ctx, q := v.r.Context(), v.r.URL.Query()
	switch v.route.name {
	case "overview", "webhooks":
		st, err := v.stats(ctx)
		if err != nil {
			return v.fail(err)
		}
		data := overviewData{Stats: st}
		if !st.OldestPending.IsZero() {
			data.OldestPendingAge = ago(time.Since(st.OldestPending))
		}
		ws, err := h.svc.webhooks(ctx)
		if err != nil {
			data.WebhooksError = errorMessage(err)
		}
		for _, wh := range v.scopedWebhooks(ws) {
			row := webhookRow{WebhookState: viewWebhook(wh), figures: webhookFigures(wh)}
			data.Webhooks = append(data.Webhooks, row)
			if wh.State == "paused" {
				data.Paused = append(data.Paused, row)
			}
		}
		df := queue.Filter{State: queue.Dead, Limit: 5}
		v.scopeFilter(&df)
		dead, _, err := h.svc.list(ctx, df)
		if err == nil {
			for _, d := range dead {
				data.RecentDead = append(data.RecentDead, viewDelivery(d, 0))
			}
		}
		return v.render("overview", "Overview", data)
	case "deliveries":
		f, err := queryFilter(q)
		if err != nil {
			return v.fail(err)
		}
		v.scopeFilter(&f)
		ds, next, err := h.svc.list(ctx, f)
		if err != nil {
			return v.fail(err)
		}
		data := deliveriesData{Filter: f, Query: filterQuery(f), Events: eventNames(), Next: next, First: f.Cursor != "", Scoped: v.scope != ""}
		for _, d := range ds {
			data.Deliveries = append(data.Deliveries, viewDelivery(d, 0, h.svc.secretsOf(d)...))
		}
		if f.State == queue.Dead {
			data.DeadFilter = true
		}
		return v.render("deliveries", "Deliveries", data)
	case "delivery":
		d, err := h.svc.get(ctx, v.route.args[0])
		if err == nil && v.scope != "" && d.Target != v.scope {
			err = h.svc.unknownDelivery(v.route.args[0])
		}
		if err != nil {
			return v.fail(err)
		}
		return v.render("delivery", "Delivery "+d.ID, deliveryData{D: viewFull(d, h.svc.secretsOf(d)), Dead: d.State == queue.Dead})
	case "events":
		f, err := queryFilter(q)
		if err != nil {
			return v.fail(err)
		}
		v.scopeFilter(&f)
		evs, next, err := h.svc.recentEvents(ctx, f)
		if err != nil {
			return v.fail(err)
		}
		data := eventsData{Filter: f, Query: filterQuery(f), Events: eventNames(), Next: next, First: f.Cursor != "", Scoped: v.scope != ""}
		for _, ev := range evs {
			row := eventRow{ID: ev.ID, Target: ev.Target, Event: ev.Event, CallID: ev.CallID, CreatedAt: formatTime(ev.CreatedAt), States: map[queue.State]int{}}
			for _, d := range ev.Deliveries {
				row.States[d.State]++
			}
			data.Rows = append(data.Rows, row)
		}
		return v.render("events", "Events", data)
	case "event":
		ev, ds, err := h.svc.event(ctx, v.route.args[0])
		if err == nil && v.scope != "" && ev.Target != v.scope {
			err = h.svc.unknownEvent(v.route.args[0])
		}
		if err != nil {
			return v.fail(err)
		}
		view := viewEvent(ev, ds)
		return v.render("event", "Event "+ev.ID, eventData{E: view, DataJSON: prettyJSON(view.Data), RequestJSON: prettyJSON(view.Request)})
	case "replay":
		if err := v.eventInScope(ctx, v.route.args[0]); err != nil {
			return v.fail(err)
		}
		data, err := h.svc.replayPreview(ctx, v.route.args[0])
		if err != nil {
			return v.fail(err)
		}
		return v.render("replay", "Replay event "+data.E.ID, data)
	case "dead-retry", "dead-delete":
		f, err := formFilter(q)
		if err != nil {
			return v.fail(err)
		}
		v.scopeFilter(&f)
		c, err := h.svc.previewDead(ctx, f)
		if err != nil {
			return v.fail(err)
		}
		data := confirmData{Filter: f, Count: c, Retry: v.route.name == "dead-retry", Query: filterQuery(f)}
		title := "Delete dead deliveries"
		if data.Retry {
			title = "Retry dead deliveries"
		}
		return v.render("confirm", title, data)
	case "webhook":
		return h.webhookPage(v, nil)
	}
	return v.fail(apiError(http.StatusNotFound, "no dashboard page at %s", v.r.URL.Path))
}

// queryFilter reads the deliveries and events pages' filters. Empty
// fields (from the filter form) and the dashboard's own parameters are
// not filters.
func queryFilter(q url.Values) (queue.Filter, error) {
	return parseFilter(cleanQuery(q), true)
}

// formFilter reads the filters of a bulk action on dead deliveries.
func formFilter(q url.Values) (queue.Filter, error) {
	return parseFilter(cleanQuery(q), false)
}

func cleanQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, vs := range q {
		if k == "done" || k == "n" || k == "skipped" || k == "csrf" {
			continue
		}
		var kept []string
		for _, v := range vs {
			if v != "" {
				kept = append(kept, v)
			}
		}
		if len(kept) > 0 {
			out[k] = kept
		}
	}
	return out
}

// filterQuery is the query string of f's filters (no paging).
func filterQuery(f queue.Filter) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"state": string(f.State), "webhook": f.Webhook, "event": f.Event, "call_id": f.CallID, "target": f.Target, "event_id": f.EventID} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// ago is a short age: 45s, 12m, 3h, 2d.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Dashboard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Dashboard)(nil)
	_ caddyfile.Unmarshaler       = (*Dashboard)(nil)
)
