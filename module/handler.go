package callhook

import (
	"bytes"
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/mapping"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler accepts call events, renders the webhooks declared for the event
// and target, stores them durably in the callhook app's queue, and answers
// 202 with the delivery IDs only once they are on disk.
type Handler struct {
	// Target is the installation target (project) the webhooks belong to.
	// Default: "default".
	Target string `json:"target,omitempty"`

	// Event is where the event name comes from: a literal or placeholders
	// such as {http.request.uri.path.1}. If empty, the body field `event`;
	// if absent, the last path segment.
	Event string `json:"event,omitempty"`

	// Token, if set, must be sent as `Authorization: Bearer <token>` or
	// `?token=<token>`. {env.*} placeholders are expanded at load.
	Token string `json:"token,omitempty"`

	// DateFormat is the default date format of the webhooks below: a preset
	// (rfc3339, rfc3339_ms, iso8601, rfc2822, datetime, date, unix, unix_ms)
	// or a Go reference layout. Default: rfc3339.
	DateFormat string `json:"date_format,omitempty"`

	// Timezone is an IANA zone name: the default timezone of the webhooks
	// below, and the zone of incoming "2006-01-02 15:04:05" times.
	// Default: UTC.
	Timezone string `json:"timezone,omitempty"`

	// Passthrough hands the request to the next handler after the event is
	// stored, instead of answering it.
	Passthrough bool `json:"passthrough,omitempty"`

	// MaxBody is the largest accepted body, in bytes. Default: 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// Input is a preset of field mappings for a known source: canonical
	// (default), ringostat, zadarma, binotel, twilio, callrail.
	Input string `json:"input,omitempty"`

	// Fields map a source's own body fields onto canonical call fields:
	// each is a canonical field name and an expression over `data`. They
	// override the preset's mappings of the same field.
	Fields []FieldMapping `json:"fields,omitempty"`

	// Webhooks are the outbound webhooks of this target.
	Webhooks []Webhook `json:"webhooks,omitempty"`

	app    *App
	hooks  []*render.Webhook
	fields mapping.Fields
	loc    *time.Location
	token  []byte
	logger *zap.Logger
}

// FieldMapping is one `field <canonical> <expression>` line.
type FieldMapping struct {
	// Name is the canonical call field to set.
	Name string `json:"name"`
	// Expr is an expression over `data` (the decoded body).
	Expr string `json:"expr"`
}

// Webhook is one outbound webhook.
type Webhook struct {
	// Name identifies the webhook in logs, metrics and the admin API. Unique
	// within a target.
	Name string `json:"name"`
	// On lists the events the webhook fires on.
	On []string `json:"on"`
	// URL is http(s); {param.NAME} is replaced by that param's value,
	// URL-escaped, and {env.*} is expanded at load.
	URL string `json:"url"`
	// Method is GET, POST, PUT or DELETE. Default: POST.
	Method string `json:"method,omitempty"`
	// Format is form, json, xml or jsonrpc. Default: json.
	Format string `json:"format,omitempty"`
	// DateFormat overrides the handler's date_format.
	DateFormat string `json:"date_format,omitempty"`
	// Timezone overrides the handler's timezone for dates in params.
	Timezone string `json:"timezone,omitempty"`
	// Headers are sent in order; values may use {param.NAME} and {env.*}.
	Headers []render.Header `json:"headers,omitempty"`
	// When is an optional bool expression; the webhook fires only if true.
	When string `json:"when,omitempty"`
	// Params are sent in declaration order; each is a name and an expression.
	Params []render.Param `json:"params,omitempty"`
	// Secret signs each request (Standard Webhooks). A `whsec_` secret is
	// base64; anything else is used as raw bytes. {env.*} is expanded.
	Secret string `json:"secret,omitempty"`
	// RPCMethod is the JSON-RPC method (format jsonrpc). Default: the event name.
	RPCMethod string `json:"rpc_method,omitempty"`
	// XMLRoot is the root element (format xml). Default: webhook.
	XMLRoot string `json:"xml_root,omitempty"`
	// Timeout bounds one attempt. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// MaxAttempts before a delivery is dead. Default: 12.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BackoffMin is the first retry delay. Default: 1s.
	BackoffMin caddy.Duration `json:"backoff_min,omitempty"`
	// BackoffMax is the longest retry delay. Default: 1h.
	BackoffMax caddy.Duration `json:"backoff_max,omitempty"`
	// MaxAge is how long a delivery is retried before it is dead. Default: 72h.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.callhook",
		New: func() caddy.Module { return new(Handler) },
	}
}

const defaultMaxBody = 1 << 20

// Provision compiles every expression and template. It opens nothing.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.compile(caddy.NewReplacer()); err != nil {
		return err
	}
	for _, w := range h.Webhooks {
		initWebhookSeries(h.Target, w.Name)
	}
	appIface, err := ctx.App("callhook")
	if err != nil {
		return fmt.Errorf("loading the callhook app: %v", err)
	}
	h.app = appIface.(*App)
	return h.app.webhooks.add(h)
}

// compile resolves defaults and placeholders and compiles every expression
// and template. Provision and `caddy callhook render` share it, so the
// preview compiles exactly what a running server would.
func (h *Handler) compile(repl *caddy.Replacer) error {
	if h.Target == "" {
		h.Target = "default"
	}
	if h.MaxBody == 0 {
		h.MaxBody = defaultMaxBody
	}
	var err error
	h.loc = time.UTC
	if h.Timezone != "" {
		if h.loc, err = time.LoadLocation(h.Timezone); err != nil {
			return fmt.Errorf("target %s: timezone %q: not an IANA zone name such as Europe/Kyiv", h.Target, h.Timezone)
		}
	}
	h.token = nil
	if h.Token != "" {
		tok, err := expandEnv(repl, "token", h.Token)
		if err != nil {
			return fmt.Errorf("target %s: %v", h.Target, err)
		}
		if tok == "" {
			return fmt.Errorf("target %s: token %q is empty after expanding placeholders; set the environment variable or remove token", h.Target, h.Token)
		}
		h.token = []byte(tok)
	}
	if h.fields, err = compileFields(h.Input, h.Fields); err != nil {
		return fmt.Errorf("target %s: %v", h.Target, err)
	}
	h.hooks = nil
	for _, w := range h.Webhooks {
		c, err := w.config(repl, h)
		if err != nil {
			return fmt.Errorf("target %s: webhook %s: %v", h.Target, w.Name, err)
		}
		hook, err := render.Compile(c)
		if err != nil {
			return fmt.Errorf("target %s: %v", h.Target, err)
		}
		h.hooks = append(h.hooks, hook)
	}
	return render.CheckSet(h.Target, h.hooks)
}

// config resolves {env.*} and the handler's defaults into a render.Config.
// A variable that is unset (or empty) is an error: it would send a URL
// without its host, an `Authorization: Bearer ` or unsigned webhooks.
func (w Webhook) config(repl *caddy.Replacer, h *Handler) (render.Config, error) {
	c := render.Config{
		Name:        w.Name,
		On:          w.On,
		Method:      w.Method,
		Format:      w.Format,
		DateFormat:  cmp.Or(w.DateFormat, h.DateFormat),
		Timezone:    cmp.Or(w.Timezone, h.Timezone),
		When:        w.When,
		Params:      w.Params,
		RPCMethod:   w.RPCMethod,
		XMLRoot:     w.XMLRoot,
		Timeout:     time.Duration(w.Timeout),
		MaxAttempts: w.MaxAttempts,
		BackoffMin:  time.Duration(w.BackoffMin),
		BackoffMax:  time.Duration(w.BackoffMax),
		MaxAge:      time.Duration(w.MaxAge),
	}
	var err error
	if c.URL, err = expandEnv(repl, "url", w.URL); err != nil {
		return c, err
	}
	if c.Secret, err = expandEnv(repl, "secret", w.Secret); err != nil {
		return c, err
	}
	for _, hd := range w.Headers {
		v, err := expandEnv(repl, "header "+hd.Name, hd.Value)
		if err != nil {
			return c, err
		}
		c.Headers = append(c.Headers, render.Header{Name: hd.Name, Value: v})
	}
	return c, nil
}

// expandEnv resolves the {env.*} placeholders of a config value. One whose
// variable is unset or empty is an error naming it (what says where it is).
func expandEnv(repl *caddy.Replacer, what, s string) (string, error) {
	for rest := s; ; {
		i := strings.Index(rest, "{env.")
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			break
		}
		key := rest[i+1 : i+j]
		if v, _ := repl.GetString(key); v == "" {
			return "", fmt.Errorf("%s: {%s} is not set or empty in Caddy's environment; set %s, or take the placeholder out", what, key, strings.TrimPrefix(key, "env."))
		}
		rest = rest[i+j:]
	}
	return repl.ReplaceKnown(s, ""), nil
}

// compileFields merges the input preset with the explicit field mappings
// (explicit ones win) and compiles them.
func compileFields(input string, explicit []FieldMapping) (mapping.Fields, error) {
	if input == "" {
		input = "canonical"
	}
	preset, err := mapping.Preset(input)
	if err != nil {
		return nil, err
	}
	srcs := make([][2]string, 0, len(preset)+len(explicit))
	for _, p := range preset {
		overridden := false
		for _, f := range explicit {
			overridden = overridden || f.Name == p[0]
		}
		if !overridden {
			srcs = append(srcs, p)
		}
	}
	for _, f := range explicit {
		srcs = append(srcs, [2]string{f.Name, f.Expr})
	}
	var out mapping.Fields
	for _, s := range srcs {
		if !intake.IsField(s[0]) {
			return nil, fmt.Errorf("field %s: not a canonical call field (see the README for the list)", s[0])
		}
		prog, err := mapping.CompileField(s[1])
		if err != nil {
			return nil, fmt.Errorf("field %s: %v", s[0], err)
		}
		out = append(out, mapping.Field{Name: s[0], Prog: prog})
	}
	return out, nil
}

// answer is the body of 200 and 202 answers.
type answer struct {
	EventID    string      `json:"event_id"`
	Event      string      `json:"event"`
	Target     string      `json:"target"`
	Deliveries []queue.Ref `json:"deliveries"`
}

// ServeHTTP accepts one call event.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.token != nil && !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="callhook"`)
		return h.reject(w, http.StatusUnauthorized, "missing or wrong token: send Authorization: Bearer <token> or ?token=<token>")
	}
	var body []byte
	if h.Passthrough && r.Body != nil {
		// the next handler needs the body too
		b, err := io.ReadAll(io.LimitReader(r.Body, h.MaxBody+1))
		if err != nil {
			return h.reject(w, http.StatusBadRequest, "reading the body: "+err.Error())
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	eventName := h.Event
	if eventName != "" && repl != nil {
		eventName = repl.ReplaceAll(eventName, "")
	}
	ev, err := intake.Decode(r, intake.Options{
		Location:   h.loc,
		MaxBody:    h.MaxBody,
		EventName:  eventName,
		Remap:      h.fields.Remap,
		StripToken: h.token != nil,
	})
	if err != nil {
		var ie *intake.Error
		if errors.As(err, &ie) {
			if ie.Status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", intake.AllowedMethods)
			}
			return h.rejectEvent(w, ie.Event, ie.Status, ie.Msg)
		}
		return h.reject(w, http.StatusBadRequest, err.Error())
	}

	now := time.Now()
	eventID := render.NewID()
	var ds []*queue.Delivery
	for _, hook := range h.hooks {
		if !hook.Fires(ev.Name) {
			continue
		}
		if d := renderSafely(hook, ev, h.Target, now); d != nil {
			d.EventID = eventID
			ds = append(ds, d)
		}
	}
	env := &queue.Envelope{
		Event:      storedEvent(eventID, h.Target, ev, now),
		DedupKey:   h.Target + "\x00" + ev.Name + "\x00" + ev.CallID + h.app.webhooks.dedupScope(h),
		Deliveries: ds,
	}
	res, err := h.app.enqueue(r.Context(), env)
	refs, dup := res.Refs, res.Duplicate
	if err != nil {
		h.logger.Error("event not accepted: the queue could not store it",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID), zap.Error(err))
		countEvent(h.Target, ev.Name, eventRejected, http.StatusServiceUnavailable)
		w.Header().Set("Retry-After", "5")
		msg := "the delivery queue cannot accept events right now; retry later"
		if errors.Is(err, queue.ErrFull) {
			msg = "the delivery queue is full; retry later"
		} else if errors.Is(err, queue.ErrUnavailable) {
			msg = "the delivery queue is unreachable; nothing was stored; retry later"
		}
		return writeError(w, http.StatusServiceUnavailable, msg)
	}
	if refs == nil {
		refs = []queue.Ref{}
	}
	status := http.StatusAccepted
	if dup {
		status = http.StatusOK
		countEvent(h.Target, ev.Name, eventDuplicate, status)
		h.logger.Info("duplicate event: already accepted, nothing queued",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID),
			zap.Array("deliveries", refList(refs)))
	} else {
		countEvent(h.Target, ev.Name, eventAccepted, status)
		h.logger.Info("event accepted",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID),
			zap.Array("deliveries", refList(refs)))
		// Logged once stored: a render error of an event that was then not
		// stored (queue error, duplicate) left nothing behind to look for.
		for _, d := range ds {
			if d.State != queue.Dead {
				continue
			}
			countDeadOnArrival(d)
			h.logger.Error("webhook could not be rendered; its delivery is stored dead (fix the webhook and have the source send the event again)",
				zap.String("target", d.Target), zap.String("event", d.Event), zap.String("call_id", d.CallID),
				zap.String("webhook", d.Webhook), zap.String("delivery_id", d.ID), zap.String("reason", d.LastError))
		}
	}
	if h.Passthrough {
		if repl != nil {
			repl.Set("http.callhook.deliveries", len(refs))
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		return next.ServeHTTP(w, r)
	}
	return writeJSON(w, status, answer{EventID: res.EventID, Event: ev.Name, Target: h.Target, Deliveries: refs})
}

// reject answers a request that brought no event callhook can store, and
// counts it. Like Caddy's own handler errors, client errors are logged at
// debug level (a public endpoint gets scanned) and server errors at error.
// The event label stays empty unless the request named a canonical event:
// other names are the sender's choice and would make the metric's
// cardinality unbounded.
func (h *Handler) reject(w http.ResponseWriter, status int, msg string) error {
	return h.rejectEvent(w, "", status, msg)
}

func (h *Handler) rejectEvent(w http.ResponseWriter, event string, status int, msg string) error {
	if !intake.IsEventName(event) {
		event = ""
	}
	countEvent(h.Target, event, eventRejected, status)
	lvl := zapcore.DebugLevel
	if status >= 500 {
		lvl = zapcore.ErrorLevel
	}
	if ce := h.logger.Check(lvl, "event rejected"); ce != nil {
		ce.Write(zap.String("target", h.Target), zap.Int("status", status), zap.String("reason", msg))
	}
	return writeError(w, status, msg)
}

// refList logs an answer's deliveries as [{"webhook":..,"delivery_id":..}].
type refList []queue.Ref

// MarshalLogArray implements zapcore.ArrayMarshaler.
func (rs refList) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, r := range rs {
		err := enc.AppendObject(zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
			enc.AddString("webhook", r.Webhook)
			enc.AddString("delivery_id", r.ID)
			return nil
		}))
		if err != nil {
			return err
		}
	}
	return nil
}

// storedEvent is the event as the queue keeps it for retention: the decoded
// body and the request facts, from which it can be rendered again.
func storedEvent(id, target string, ev *intake.Event, received time.Time) queue.Event {
	data, err := json.Marshal(struct {
		Data    map[string]any     `json:"data"`
		Request intake.RequestInfo `json:"request"`
	}{ev.Data, ev.Request})
	if err != nil {
		data = nil // cannot happen for decoded JSON, form or query values
	}
	return queue.Event{ID: id, Target: target, Name: ev.Name, CallID: ev.CallID, ReceivedAt: received, Data: data}
}

// renderSafely turns a panic while rendering (none is known) into a dead
// delivery, so one webhook can never take the event, or the process, down.
func renderSafely(hook *render.Webhook, ev *intake.Event, target string, now time.Time) (d *queue.Delivery) {
	id := render.NewID()
	defer func() {
		if r := recover(); r != nil {
			d = &queue.Delivery{
				ID: id, Target: target, Event: ev.Name, CallID: ev.CallID, Webhook: hook.Name(),
				CreatedAt: now, State: queue.Dead,
				LastError: fmt.Sprintf("webhook %s: rendering panicked: %v", hook.Name(), r),
			}
		}
	}()
	return hook.Render(ev, target, id, now)
}

func (h *Handler) authorized(r *http.Request) bool {
	got := ""
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, tok, ok := strings.Cut(auth, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(tok)
		}
	} else {
		got = r.URL.Query().Get("token")
	}
	return subtle.ConstantTimeCompare([]byte(got), h.token) == 1
}

func writeError(w http.ResponseWriter, status int, msg string) error {
	return writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
