package callhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/callhook/caddy-callhook/encoders"
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

	// Dedup decides what makes a repeat (SPEC §3). Empty: the same target,
	// event, call_id and the same fields and values. "off": no repeats are
	// detected. Anything else is an expression (over call, data, event,
	// target, request) whose value, with the target and event, is the key;
	// an expression that yields nil detects no repeat for that event.
	Dedup string `json:"dedup,omitempty"`

	// DedupWindow is how long an event is remembered for repeat detection.
	// Default: 24h; at most 7 days.
	DedupWindow caddy.Duration `json:"dedup_window,omitempty"`

	// Verify lists inbound signatures every event must carry (twilio,
	// zadarma). Combined with Token and AllowSources, all must pass.
	Verify []Verifier `json:"verify,omitempty"`

	// AllowSources, if set, accepts events only from these client IPs
	// (CIDR ranges or single IPs), as Caddy determines the client IP: with
	// the server's trusted_proxies, from X-Forwarded-For.
	AllowSources []string `json:"allow_sources,omitempty"`

	// Webhooks are the outbound webhooks of this target.
	Webhooks []Webhook `json:"webhooks,omitempty"`

	// Replies say how to answer the caller of an event that has sync
	// webhooks, at most one per event (SPEC §9).
	Replies []Reply `json:"replies,omitempty"`

	app       *App
	dedupProg *mapping.Program
	replies   map[string]*render.Reply
	inbound   inboundChecks
	eventProg *mapping.Program       // the input preset's event names
	tls       map[string]*tls.Config // TLS profiles by key
	// adaptChecks are the global option's load checks, known when the
	// Caddyfile is adapted (zero when UnmarshalCaddyfile runs on its own).
	adaptChecks loadChecks
	hooks       []*render.Webhook
	// limits are the webhooks' rate_limit, concurrency and disable_after,
	// by webhook name.
	limits map[string]webhookLimits
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
	// TLS sets how the receiver is reached over https: a private CA, a
	// client certificate, a server name (SPEC §12).
	TLS *WebhookTLS `json:"tls,omitempty"`
	// Sync makes the webhook synchronous (SPEC §9): it is called while the
	// caller waits, once (never retried), its answer is sync.<name> in the
	// event's reply, and the call is recorded as a delivered or dead
	// delivery. Timeout defaults to 3s, at most 30s.
	Sync bool `json:"sync,omitempty"`
	// RotatedSecrets are older secrets that still sign each request during
	// a rotation, after Secret: one `v1,` signature per secret, space
	// separated (Caddyfile: `secret <new> <old>...`). {env.*} is expanded.
	RotatedSecrets []string `json:"rotated_secrets,omitempty"`
	// Ordered makes one call's deliveries of this webhook go out one at a
	// time, in the order their events were accepted: one is not attempted
	// while an earlier one is pending or being retried; a dead one
	// releases the next. It cannot be combined with Sync.
	Ordered bool `json:"ordered,omitempty"`
	// RateLimit caps how many attempts of this webhook start per second
	// or per minute: "20/s", "600/m". Default: unlimited.
	RateLimit string `json:"rate_limit,omitempty"`
	// Concurrency caps how many attempts of this webhook are in flight at
	// once. Default: unlimited (within workers and per_destination).
	Concurrency int `json:"concurrency,omitempty"`
	// DisableAfter pauses the webhook once every attempt of it failed for
	// this long. A paused webhook keeps its deliveries pending until it is
	// resumed through the admin API. Default: never.
	DisableAfter caddy.Duration `json:"disable_after,omitempty"`
	// OmitNil leaves a param whose value is nil (a field the event does
	// not carry) out of the request, instead of sending null (json), an
	// empty element (xml) or an empty value (form).
	OmitNil bool `json:"omit_nil,omitempty"`
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
	appIface, err := ctx.App("callhook")
	if err != nil {
		return fmt.Errorf("loading the callhook app: %v", err)
	}
	h.app = appIface.(*App)
	// The app's allow_destinations and https_only make some webhook URLs
	// load-time errors.
	if err := h.checkLoad(h.app.loadChecks()); err != nil {
		return err
	}
	h.warnSampleFailures()
	for _, w := range h.Webhooks {
		initWebhookSeries(h.Target, w.Name)
		if w.TLS != nil && w.TLS.InsecureSkipVerify {
			h.logger.Warn("webhook accepts any certificate from its receiver (insecure_skip_verify_dangerous): anyone on the path can read and change its requests; trust the receiver's CA with `ca` instead",
				zap.String("target", h.Target), zap.String("webhook", w.Name))
		}
	}
	h.app.addTLSProfiles(h.tls)
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
	h.eventProg = nil
	if src := mapping.PresetEvent(h.Input); src != "" {
		if h.eventProg, err = mapping.CompileField(src); err != nil {
			return fmt.Errorf("target %s: input %s: %v", h.Target, h.Input, err)
		}
	}
	if err := h.compileInbound(repl); err != nil {
		return fmt.Errorf("target %s: %v", h.Target, err)
	}
	if h.dedupProg, err = compileDedup(h.Dedup); err != nil {
		return fmt.Errorf("target %s: %v", h.Target, err)
	}
	if w := time.Duration(h.DedupWindow); w < 0 || w > maxDedupWindow {
		return fmt.Errorf("target %s: dedup_window %s: expected a positive duration of at most %s", h.Target, w, maxDedupWindow)
	}
	h.tls = nil
	for _, w := range h.Webhooks {
		if w.TLS == nil {
			continue
		}
		cfg, err := w.TLS.load(repl)
		if err != nil {
			return fmt.Errorf("target %s: webhook %s: %v", h.Target, w.Name, err)
		}
		if h.tls == nil {
			h.tls = make(map[string]*tls.Config)
		}
		h.tls[tlsProfileKey(h.Target, w.Name)] = cfg
	}
	h.hooks = nil
	h.limits = make(map[string]webhookLimits, len(h.Webhooks))
	for _, w := range h.Webhooks {
		c, err := w.config(repl, h)
		if err != nil {
			return fmt.Errorf("target %s: webhook %s: %v", h.Target, w.Name, err)
		}
		if h.limits[w.Name], err = w.limits(); err != nil {
			return fmt.Errorf("target %s: webhook %s: %v", h.Target, w.Name, err)
		}
		hook, err := render.Compile(c)
		if err == nil {
			err = w.checkTLSScheme(hook)
		}
		if err != nil {
			return fmt.Errorf("target %s: %v", h.Target, err)
		}
		h.hooks = append(h.hooks, hook)
	}
	if err := render.CheckSet(h.Target, h.hooks); err != nil {
		return err
	}
	if _, err := h.compileReplies(); err != nil {
		return fmt.Errorf("target %s: %v", h.Target, err)
	}
	return nil
}

// checkLoad applies the app's load-time rules to the compiled webhooks.
func (h *Handler) checkLoad(checks loadChecks) error {
	for _, hook := range h.hooks {
		if err := checks.check(hook); err != nil {
			return fmt.Errorf("target %s: %v", h.Target, err)
		}
	}
	return nil
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
		Sync:        w.Sync,
		Ordered:     w.Ordered,
		OmitNil:     w.OmitNil,
	}
	if w.TLS != nil {
		c.TLSProfile = tlsProfileKey(h.Target, w.Name)
	}
	var err error
	if c.URL, err = expandEnv(repl, "url", w.URL); err != nil {
		return c, err
	}
	if c.Secret, err = expandEnv(repl, "secret", w.Secret); err != nil {
		return c, err
	}
	for _, old := range w.RotatedSecrets {
		v, err := expandEnv(repl, "secret", old)
		if err != nil {
			return c, err
		}
		c.RotatedSecrets = append(c.RotatedSecrets, v)
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

// ServeHTTP accepts one call event.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ip := clientIP(r)
	if !h.inbound.sourceAllowed(ip) {
		return h.reject(w, http.StatusForbidden, "client address "+ip+" is not in allow_sources; if a proxy is in front of Caddy, list it in the server's trusted_proxies")
	}
	if h.inbound.zadarmaEcho(w, r) {
		return nil
	}
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
		// The unread rest stays behind, so a 413 can drain it.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
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
		RemoteIP:   ip,
		Verify:     h.verifyHook(),
		EventFrom:  h.eventFrom,
	})
	if err != nil {
		var ie *intake.Error
		if errors.As(err, &ie) {
			if ie.Status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", intake.AllowedMethods)
			}
			return h.rejectRequest(w, r, ie.Event, ie.Status, ie.Msg)
		}
		return h.reject(w, http.StatusBadRequest, err.Error())
	}

	now := time.Now()
	eventID := render.NewID()
	// Sync webhooks run while the event is rendered and stored, and for
	// repeats too: a PBX that retries needs its answer.
	run := h.startSync(r.Context(), ev, now)
	var ds []*queue.Delivery
	for _, hook := range h.hooks {
		if !hook.Fires(ev.Name) || hook.Sync() {
			continue
		}
		if d := renderSafely(hook, ev, h.Target, now); d != nil {
			d.EventID = eventID
			ds = append(ds, d)
		}
	}
	dedupKey, err := h.dedupKey(ev)
	if err != nil {
		// Not the sender's fault and not worth losing the event over.
		h.logger.Warn("dedup key could not be computed; the event is stored without repeat detection",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID), zap.Error(err))
		dedupKey = ""
	}
	if dedupKey != "" {
		dedupKey += h.app.webhooks.dedupScope(h)
	}
	res, err := h.app.enqueue(r.Context(), &queue.Envelope{
		Event:       storedEvent(eventID, h.Target, ev, now),
		DedupKey:    dedupKey,
		DedupWindow: h.dedupWindow(),
		Deliveries:  ds,
	})
	if err != nil && clientGone(r, err) {
		h.logger.Warn("event not accepted: the client closed the connection before the queue had stored it; nothing was answered, its sender should post it again",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID),
			zap.Int("status", statusClientClosed), zap.Error(err))
		countEvent(h.Target, ev.Name, eventRejected, statusClientClosed)
		h.recordSyncCalls(context.WithoutCancel(r.Context()), eventID, run.wait())
		w.WriteHeader(statusClientClosed) // for the access log: nobody reads it
		return nil
	}
	if err != nil {
		status, msg := queueErrorStatus(err)
		h.logger.Error("event not accepted: the queue could not store it",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID),
			zap.Int("status", status), zap.Error(err))
		countEvent(h.Target, ev.Name, eventRejected, status)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "5")
		}
		h.recordSyncCalls(r.Context(), eventID, run.wait())
		return writeError(w, status, msg)
	}
	refs, dup := res.Refs, res.Duplicate
	calls := run.wait()
	// A repeat's sync calls belong to the event first stored.
	h.recordSyncCalls(r.Context(), res.EventID, calls)
	status := http.StatusAccepted
	if dup {
		status = http.StatusOK
		countEvent(h.Target, ev.Name, eventDuplicate, status)
		h.logger.Info("duplicate event: already accepted, nothing queued",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID),
			zap.String("event_id", res.EventID), zap.Array("deliveries", refList(refs)))
	} else {
		countEvent(h.Target, ev.Name, eventAccepted, status)
		h.logger.Info("event accepted",
			zap.String("target", h.Target), zap.String("event", ev.Name), zap.String("call_id", ev.CallID),
			zap.String("event_id", res.EventID), zap.Array("deliveries", refList(refs)))
		// Logged once stored: a render error of an event that was then not
		// stored (queue error, duplicate) left nothing behind to look for.
		for _, d := range ds {
			if d.State != queue.Dead {
				continue
			}
			countDeadOnArrival(d)
			h.logger.Error(renderErrorAdvice, renderErrorFields(d)...)
		}
	}
	if h.Passthrough {
		if repl != nil {
			repl.Set("http.callhook.deliveries", len(refs))
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		return next.ServeHTTP(w, r)
	}
	if rp := h.replies[ev.Name]; rp != nil {
		return h.writeReply(w, rp, ev, run)
	}
	return writeJSON(w, status, answer{
		EventID:    res.EventID,
		Event:      ev.Name,
		Target:     h.Target,
		Deliveries: append(h.answerRefs(r.Context(), refs, ds, dup), syncRefs(calls)...),
		Sync:       run.summaries(),
	})
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

// rejectRequest is reject for a request whose body may be partly unread:
// after a 413 the rest is drained so the client sees the answer.
func (h *Handler) rejectRequest(w http.ResponseWriter, r *http.Request, event string, status int, msg string) error {
	if status != http.StatusRequestEntityTooLarge {
		return h.rejectEvent(w, event, status, msg)
	}
	w.Header().Set("Connection", "close")
	return drainBody(w, r, func() error { return h.rejectEvent(w, event, status, msg) })
}

// eventFrom names the event with the input preset's mapping, if any.
func (h *Handler) eventFrom(data map[string]any) string {
	if h.eventProg == nil {
		return ""
	}
	v, err := h.eventProg.Run(mapping.FieldEnv{Data: data})
	if err != nil {
		return ""
	}
	s, _ := v.(string)
	return s
}

func (h *Handler) verifyHook() func(*http.Request, []byte, url.Values) error {
	if !h.inbound.any() {
		return nil
	}
	return h.inbound.verify
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
//
// It is the JSON that encoding/json would write for
// struct{Data; Request intake.RequestInfo} (what the recovery decodes), by
// the encoders' writer: json.Marshal's reflection and key sorting were a
// sixth of ingest's CPU.
func storedEvent(id, target string, ev *intake.Event, received time.Time) queue.Event {
	var buf bytes.Buffer
	buf.WriteString(`{"data":`)
	err := encoders.WriteJSON(&buf, ev.Data)
	if err == nil {
		buf.WriteString(`,"request":`)
		r := ev.Request
		err = encoders.WriteJSON(&buf, map[string]any{
			"Method": r.Method, "Path": r.Path, "RemoteIP": r.RemoteIP, "Headers": r.Headers, "Query": r.Query,
		})
		buf.WriteByte('}')
	}
	data := buf.Bytes()
	if err != nil {
		data = nil // cannot happen for decoded JSON, form or query values
	}
	return queue.Event{ID: id, Target: target, Name: ev.Name, CallID: ev.CallID, ReceivedAt: received, Data: data}
}

// renderSafely turns a panic while rendering (none is known) into a dead
// delivery, so one webhook can never take the event, or the process, down.
func renderSafely(hook *render.Webhook, ev *intake.Event, target string, now time.Time) *queue.Delivery {
	return renderWithID(hook, ev, target, render.NewID(), now)
}

// renderWithID is renderSafely for a delivery ID that is already known (a
// dead delivery rendered again).
func renderWithID(hook *render.Webhook, ev *intake.Event, target, id string, now time.Time) (d *queue.Delivery) {
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
