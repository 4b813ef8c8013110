package render

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/callhook/caddy-callhook/encoders"
	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/mapping"
)

// Webhook is a compiled webhook: every expression type-checked, every
// template parsed, every setting resolved.
type Webhook struct {
	name    string
	on      []string
	method  string
	encoder encoders.Encoder
	dates   mapping.DateFormat
	loc     *time.Location
	url     template
	headers []headerTemplate
	when    *mapping.Program
	params  []compiledParam
	secrets [][]byte // the signing secrets, newest first
	ordered bool
	rpc     string
	xmlRoot string
	policy  policy
	inQuery bool // form params go in the URL's query (GET, DELETE)
	// inURLQuery names the params the URL's query already carries
	// through {param.NAME}: with inQuery they are not appended again,
	// which a receiver would parse as a list.
	inURLQuery []string
	urlDots    bool // the URL as written has a "." or ".." path segment
	hasBody    bool
	ctHeader   bool // config sets its own Content-Type
	sync       bool
	tls        string // TLS profile key
	omitNil    bool   // params whose value is nil are left out
}

type compiledParam struct {
	name string
	prog *mapping.Program
}

type policy struct {
	timeout     time.Duration
	maxAttempts int
	backoffMin  time.Duration
	backoffMax  time.Duration
	maxAge      time.Duration
}

type headerTemplate struct {
	name  string
	value template
}

// Name is the webhook's name.
func (w *Webhook) Name() string { return w.name }

// On lists the events the webhook fires on.
func (w *Webhook) On() []string { return w.on }

// Sync reports whether this is a sync webhook (SPEC §9).
func (w *Webhook) Sync() bool { return w.sync }

// Secrets are the webhook's signing secrets, newest first; nil when it is
// unsigned. Callers must not modify them.
func (w *Webhook) Secrets() [][]byte { return w.secrets }

// Ordered reports whether one call's deliveries of the webhook go out one
// at a time, in order.
func (w *Webhook) Ordered() bool { return w.ordered }

// OrderKey is the order key of the webhook's deliveries for one call of a
// target: target, webhook and call_id, each length-prefixed so that no two
// triples share a key.
func OrderKey(target, webhook, callID string) string {
	return fmt.Sprintf("%d:%s/%d:%s/%s", len(target), target, len(webhook), webhook, callID)
}

// Fires reports whether the webhook is declared for event.
func (w *Webhook) Fires(event string) bool { return slices.Contains(w.on, event) }

var methods = []string{"GET", "POST", "PUT", "DELETE"}

// forbiddenHeaders are managed by the HTTP client or by the Standard
// Webhooks signing; a config that sets them would send a broken request.
var forbiddenHeaders = []string{"host", "content-length", "transfer-encoding", "connection"}

// Compile checks a webhook and compiles it. Errors name the webhook and
// what is wrong, so the caller only adds where (the Caddyfile line).
func Compile(c Config) (*Webhook, error) {
	w, err := compile(c)
	if err != nil {
		return nil, fmt.Errorf("webhook %s: %w", c.Name, err)
	}
	return w, nil
}

func compile(c Config) (*Webhook, error) {
	if c.Name == "" {
		return nil, errors.New("a webhook needs a name")
	}
	w := &Webhook{name: c.Name, xmlRoot: c.XMLRoot, rpc: c.RPCMethod}
	if len(c.On) == 0 {
		return nil, fmt.Errorf("no events: add `on <event>...` with one or more of %s", strings.Join(intake.EventNames, ", "))
	}
	for _, ev := range c.On {
		if !intake.IsEventName(ev) {
			return nil, fmt.Errorf("unknown event %q in `on`: expected one of %s", ev, strings.Join(intake.EventNames, ", "))
		}
		if !slices.Contains(w.on, ev) {
			w.on = append(w.on, ev)
		}
	}

	w.method = strings.ToUpper(c.Method)
	if w.method == "" {
		w.method = DefaultMethod
	}
	if !slices.Contains(methods, w.method) {
		return nil, fmt.Errorf("unsupported method %q: expected one of %s", c.Method, strings.Join(methods, ", "))
	}
	format := c.Format
	if format == "" {
		format = DefaultFormat
	}
	enc, ok := encoders.Lookup(format)
	if !ok {
		return nil, fmt.Errorf("unknown format %q: expected one of %s", c.Format, strings.Join(encoders.Names(), ", "))
	}
	w.encoder = enc
	switch {
	case format == "form" && (w.method == "GET" || w.method == "DELETE"):
		w.inQuery = true
	case w.method == "GET":
		return nil, fmt.Errorf("method GET sends no body, so format %s cannot carry the params: use format form (params go in the query string) or method POST", format)
	default:
		w.hasBody = true
	}
	if w.xmlRoot == "" {
		w.xmlRoot = "webhook"
	}
	if c.RPCMethod != "" && format != "jsonrpc" {
		return nil, fmt.Errorf("rpc_method is only used with format jsonrpc (format is %s)", format)
	}
	if c.XMLRoot != "" && format != "xml" {
		return nil, fmt.Errorf("xml_root is only used with format xml (format is %s)", format)
	}

	var err error
	if w.dates, w.loc, err = datesAndZone(c.DateFormat, c.Timezone); err != nil {
		return nil, err
	}

	names := make([]string, 0, len(c.Params))
	for _, p := range c.Params {
		if p.Name == "" {
			return nil, errors.New("a param needs a name")
		}
		if slices.Contains(names, p.Name) {
			return nil, fmt.Errorf("param %s is declared twice", p.Name)
		}
		prog, err := mapping.Compile(p.Expr, mapping.Value)
		if err != nil {
			return nil, fmt.Errorf("param %s: %w", p.Name, err)
		}
		names = append(names, p.Name)
		w.params = append(w.params, compiledParam{name: p.Name, prog: prog})
	}
	if err := enc.CheckNames(names, encoders.Options{XMLRoot: w.xmlRoot, RPCMethod: "event"}); err != nil {
		return nil, err
	}
	if c.When != "" {
		if w.when, err = mapping.Compile(c.When, mapping.Bool); err != nil {
			return nil, fmt.Errorf("when: %w", err)
		}
	}

	if w.url, w.urlDots, err = parseURL(c.URL, names); err != nil {
		return nil, err
	}
	if w.inQuery {
		w.inURLQuery = w.url.inQuery()
	}

	for _, h := range c.Headers {
		ht, err := compileHeader(h, names)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(h.Name, "content-type") {
			w.ctHeader = true
		}
		w.headers = append(w.headers, ht)
	}

	if c.Secret == "" && len(c.RotatedSecrets) > 0 {
		return nil, errors.New("rotated secrets without a current one: write `secret <new> <old>...`")
	}
	for i, sc := range append([]string{c.Secret}, c.RotatedSecrets...) {
		if sc == "" {
			if i == 0 {
				continue
			}
			return nil, fmt.Errorf("secret %d of %d is empty", i+1, len(c.RotatedSecrets)+1)
		}
		key, err := delivery.ParseSecret(sc)
		if err == nil && strings.HasPrefix(sc, "whsec_") && len(key) < MinWhsecBytes {
			// Standard Webhooks secrets are 24 to 64 random bytes: a
			// shorter one was cut when copied, or typed by hand.
			err = fmt.Errorf("a whsec_ secret must decode to at least %d bytes (Standard Webhooks); this one is %d bytes: copy it whole, or generate one with `echo whsec_$(openssl rand -base64 32)`", MinWhsecBytes, len(key))
		}
		if err != nil {
			if len(c.RotatedSecrets) > 0 {
				return nil, fmt.Errorf("secret %d of %d: %w", i+1, len(c.RotatedSecrets)+1, err)
			}
			return nil, fmt.Errorf("secret: %w", err)
		}
		w.secrets = append(w.secrets, key)
	}
	if err := checkDelivery(c); err != nil {
		return nil, err
	}
	w.ordered = c.Ordered
	w.omitNil = c.OmitNil

	w.sync = c.Sync
	w.tls = c.TLSProfile
	defTimeout := DefaultTimeout
	if c.Sync {
		switch {
		case c.Timeout > MaxSyncTimeout:
			return nil, fmt.Errorf("timeout %s is more than %s, the longest a sync webhook may keep the caller waiting", c.Timeout, MaxSyncTimeout)
		case c.MaxAttempts > 1:
			return nil, errors.New("max_attempts: a sync webhook is called once and never retried; remove max_attempts, or drop sync to queue it")
		}
		defTimeout = DefaultSyncTimeout
		c.MaxAttempts = 1
	}
	w.policy = policy{
		timeout:     or(c.Timeout, defTimeout),
		maxAttempts: or(c.MaxAttempts, DefaultMaxAttempts),
		backoffMin:  or(c.BackoffMin, DefaultBackoffMin),
		backoffMax:  or(c.BackoffMax, DefaultBackoffMax),
		maxAge:      or(c.MaxAge, DefaultMaxAge),
	}
	switch p := w.policy; {
	case p.timeout < 0, p.maxAttempts < 0, p.backoffMin < 0, p.backoffMax < 0, p.maxAge < 0:
		return nil, errors.New("timeout, max_attempts, backoff and max_age must not be negative")
	case p.backoffMax < p.backoffMin:
		return nil, fmt.Errorf("backoff: the longest delay (%s) is shorter than the first (%s)", p.backoffMax, p.backoffMin)
	case p.timeout > MaxTimeout:
		// a delivery is leased for its timeout: a huge one would park it
		return nil, fmt.Errorf("timeout %s is more than %s", p.timeout, MaxTimeout)
	case p.maxAttempts > MaxAttempts:
		return nil, fmt.Errorf("max_attempts %d is more than %d; raise backoff (for example backoff 1m 1h) to spread attempts over a longer outage", p.maxAttempts, MaxAttempts)
	}
	return w, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func compileHeader(h Header, params []string) (headerTemplate, error) {
	if !httpguts.ValidHeaderFieldName(h.Name) {
		return headerTemplate{}, fmt.Errorf("header %q: not a valid header name", h.Name)
	}
	lower := strings.ToLower(h.Name)
	if slices.Contains(forbiddenHeaders, lower) || strings.HasPrefix(lower, "webhook-") {
		return headerTemplate{}, fmt.Errorf("header %s cannot be set by config: the client sets Host, Content-Length, Transfer-Encoding and Connection, and webhook-* are the Standard Webhooks headers", h.Name)
	}
	if !httpguts.ValidHeaderFieldValue(h.Value) {
		return headerTemplate{}, fmt.Errorf("header %s: the value contains CR, LF, NUL or another control character", h.Name)
	}
	t, err := parseTemplate(h.Value, params, escapeNone)
	if err != nil {
		return headerTemplate{}, fmt.Errorf("header %s: %w", h.Name, err)
	}
	return headerTemplate{name: h.Name, value: t}, nil
}

// parseURL checks the URL with every {param.X} standing in as a plain value,
// then splits it into a template that escapes each value for where it is:
// path segment, query or fragment. dots reports a "." or ".." path segment
// written in the URL itself, which the renderer then leaves alone.
// safeURL is raw without its query, fragment and credentials, for error
// messages: {env.*} is already expanded here and may have put a token there.
func safeURL(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i] + "?…"
	}
	if i := strings.Index(raw, "://"); i >= 0 {
		if at := strings.IndexByte(raw[i+3:], '@'); at >= 0 && !strings.Contains(raw[i+3:i+3+at], "/") {
			raw = raw[:i+3] + "…@" + raw[i+3+at+1:]
		}
	}
	return raw
}

// CheckDestination checks the URL's host as written in the config against
// the SSRF guard (SPEC §6): a literal address the guard refuses, or
// localhost, is a load-time error. A host made from {param.X} is checked
// when dialled, like every name.
func (w *Webhook) CheckDestination(g *delivery.Guard) error {
	a, errA := url.Parse(w.url.fill(func(string) string { return "a" }))
	b, errB := url.Parse(w.url.fill(func(string) string { return "b" }))
	if errA != nil || errB != nil || a.Hostname() != b.Hostname() {
		return nil
	}
	if err := g.CheckHost(a.Hostname()); err != nil {
		return fmt.Errorf("webhook %s: %w", w.name, err)
	}
	return nil
}

// Scheme is the URL's scheme, http or https.
func (w *Webhook) Scheme() string {
	u, err := url.Parse(w.url.fill(func(string) string { return "x" }))
	if err != nil {
		return ""
	}
	return u.Scheme
}

func parseURL(raw string, params []string) (t template, dots bool, err error) {
	if raw == "" {
		return template{}, false, errors.New("no url: add `url https://...`")
	}
	probe, err := parseTemplate(raw, params, escapeNone)
	if err != nil {
		return template{}, false, fmt.Errorf("url: %w", err)
	}
	u, err := url.Parse(probe.fill(func(string) string { return "x" }))
	if err != nil {
		return template{}, false, fmt.Errorf("url %q: %v", safeURL(raw), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return template{}, false, fmt.Errorf("url %q: the scheme must be http or https", safeURL(raw))
	}
	if u.Host == "" {
		return template{}, false, fmt.Errorf("url %q: no host", safeURL(raw))
	}
	if u.User != nil {
		return template{}, false, fmt.Errorf("url %q: credentials in the URL would be logged; use `header Authorization ...` instead", safeURL(raw))
	}
	t, err = parseTemplate(raw, params, escapePath)
	return t, hasDotSegment(u.EscapedPath()), err
}

// checkDelivery refuses combinations of delivery options that cannot work
// together, one case each. Ordering needs retries to hold a call's later
// deliveries back, so a webhook sent once while the caller waits (sync)
// cannot be ordered: that is its case.
func checkDelivery(c Config) error {
	return nil
}

// datesAndZone parses a date format and a timezone, as webhooks and replies
// take them.
func datesAndZone(format, zone string) (mapping.DateFormat, *time.Location, error) {
	dates, err := mapping.ParseDateFormat(format)
	if err != nil {
		return dates, nil, err
	}
	loc := time.UTC
	if zone != "" {
		if loc, err = time.LoadLocation(zone); err != nil {
			return dates, nil, fmt.Errorf("unknown timezone %q: use an IANA name such as Europe/Kyiv or UTC", zone)
		}
	}
	return dates, loc, nil
}
