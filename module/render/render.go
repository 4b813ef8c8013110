package render

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/http/httpguts"

	"github.com/callhook/caddy-callhook/encoders"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/mapping"
	"github.com/callhook/caddy-callhook/module/queue"
)

// NewID returns a delivery ID: "msg_" and a UUIDv7 in hex, so IDs sort by
// creation time and look like the Standard Webhooks examples.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	var b [36]byte
	copy(b[:4], "msg_")
	hex.Encode(b[4:], id[:])
	return string(b[:])
}

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Render evaluates the webhook for one event. It returns nil when the
// webhook does not fire (`when` is false). An expression or template that
// fails yields a dead delivery carrying the error, so nothing is dropped
// silently (SPEC §6).
func (w *Webhook) Render(ev *intake.Event, target, id string, now time.Time) *queue.Delivery {
	d := &queue.Delivery{
		ID:        id,
		Target:    target,
		Event:     ev.Name,
		CallID:    ev.CallID,
		Webhook:   w.name,
		CreatedAt: now,
		Policy: queue.Policy{
			Timeout:     w.policy.timeout,
			MaxAttempts: w.policy.maxAttempts,
			BackoffMin:  w.policy.backoffMin,
			BackoffMax:  w.policy.backoffMax,
			MaxAge:      w.policy.maxAge,
			JSONRPC:     w.encoder.Name() == "jsonrpc",
			TLS:         w.tls,
		},
		State: queue.Pending,
	}
	if w.ordered {
		d.OrderKey = OrderKey(target, w.name, ev.CallID)
	}
	env := &mapping.Env{
		Call:    ev.Call,
		Data:    ev.Data,
		Event:   ev.Name,
		Target:  target,
		Request: &ev.Request,
		Webhook: mapping.WebhookInfo{Name: w.name},
	}
	if w.when != nil {
		fire, err := w.when.RunBool(env)
		if err != nil {
			return w.dead(d, fmt.Sprintf("when: %v", err))
		}
		if !fire {
			return nil
		}
	}
	params := make([]encoders.Param, 0, len(w.params))
	for _, p := range w.params {
		v, err := p.prog.Run(env)
		if err != nil {
			return w.dead(d, fmt.Sprintf("param %s: %v", p.name, err))
		}
		v = mapping.Normalize(v)
		if v == nil && w.omitNil {
			continue
		}
		params = append(params, encoders.Param{Name: p.name, Value: w.formatTimes(v)})
	}
	if err := w.request(d, params, ev.Name); err != nil {
		return w.dead(d, err.Error())
	}
	return d
}

func (w *Webhook) dead(d *queue.Delivery, reason string) *queue.Delivery {
	d.State = queue.Dead
	d.LastError = fmt.Sprintf("webhook %s: %s", w.name, reason)
	d.Request = queue.Request{Method: w.method}
	return d
}

func (w *Webhook) request(d *queue.Delivery, params []encoders.Param, event string) error {
	lookup := func(name string) string {
		for _, p := range params {
			if p.Name == name {
				return text(p.Value)
			}
		}
		return ""
	}
	rawURL := w.url.fill(lookup)
	u, err := url.Parse(rawURL)
	if err != nil {
		// Not the URL itself: its query may hold a token from {env.*}.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("url is not valid after filling in the params (a param in the host?): %v", err)
	}
	if u.User != nil {
		return errors.New("url: the params put credentials (user@) in the URL; a host param must be a plain host name")
	}
	if !w.urlDots && (hasDotSegment(u.EscapedPath()) || hasDotSegment(decodedPath(u))) {
		// Receivers resolve these, so a value could step out of the path
		// the config names (/calls/{param.id}/notes with id ".."). A value
		// such as "../admin" is escaped into one segment, "..%2Fadmin", but
		// common proxies decode %2F (and treat \ as /) before resolving, so
		// the path is checked as they would see it too.
		return errors.New(`url: a param value makes a "." or ".." path segment, which would change the path the config names`)
	}
	d.Destination = u.Scheme + "://" + u.Host
	d.Request.Method = w.method

	if w.inQuery {
		args := params
		if len(w.inURLQuery) > 0 {
			args = make([]encoders.Param, 0, len(params))
			for _, p := range params {
				if !slices.Contains(w.inURLQuery, p.Name) {
					args = append(args, p)
				}
			}
		}
		if rawURL, err = encoders.AppendQuery(rawURL, args); err != nil {
			return fmt.Errorf("url: %v", err)
		}
	}
	if len(rawURL) > MaxURLBytes {
		// Most servers refuse it (nginx and Apache at 8 KiB, answering
		// 414), on every attempt: dead now, with the reason, beats a
		// retried 414. The URL itself is not quoted: it holds the values.
		return fmt.Errorf("url: the request URL is %d bytes with the params filled in, more than %d, which receivers refuse (414 URI Too Long); send the params in a body instead: method POST (format form sends the same fields)", len(rawURL), MaxURLBytes)
	}
	d.Request.URL = rawURL

	if w.hasBody {
		buf := buffers.Get().(*bytes.Buffer)
		buf.Reset()
		defer buffers.Put(buf)
		rpc := w.rpc
		if rpc == "" {
			rpc = event
		}
		if err := w.encoder.Encode(buf, params, encoders.Options{XMLRoot: w.xmlRoot, RPCMethod: rpc, RPCID: d.ID}); err != nil {
			return fmt.Errorf("encoding the %s body: %v", w.encoder.Name(), err)
		}
		d.Request.Body = bytes.Clone(buf.Bytes())
		if !w.ctHeader {
			d.Request.Header = append(d.Request.Header, [2]string{"Content-Type", w.encoder.ContentType()})
		}
	}
	for _, h := range w.headers {
		v := h.value.fill(lookup)
		if h.value.hasParams() && !httpguts.ValidHeaderFieldValue(v) {
			// net/http would refuse it on every attempt; CR and LF would
			// otherwise split the header.
			return fmt.Errorf("header %s: the rendered value contains CR, LF, NUL or another control character", h.name)
		}
		d.Request.Header = append(d.Request.Header, [2]string{h.name, v})
	}
	return nil
}

// decodedPath is u's path as a proxy that decodes percent-escapes and
// takes a backslash for a slash would resolve it.
func decodedPath(u *url.URL) string {
	p, err := url.PathUnescape(u.EscapedPath())
	if err != nil {
		p = u.EscapedPath()
	}
	return strings.ReplaceAll(p, `\`, "/")
}

// hasDotSegment reports whether an escaped URL path has a "." or ".."
// segment, in any spelling a receiver may normalise ("%2e", "%2E").
func hasDotSegment(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if len(seg) > 6 {
			continue
		}
		switch strings.ReplaceAll(strings.ToLower(seg), "%2e", ".") {
		case ".", "..":
			return true
		}
	}
	return false
}

// formatTimes applies the webhook's date format and timezone to every time
// in a param value, however deep.
func (w *Webhook) formatTimes(v any) any {
	switch x := v.(type) {
	case time.Time:
		return w.dates.Format(x, w.loc)
	case []any:
		for i, e := range x {
			x[i] = w.formatTimes(e)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = w.formatTimes(e)
		}
	}
	return v
}

// text is a param value as it appears in a URL or header.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = text(e)
		}
		return strings.Join(parts, ",")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// CheckSet enforces the rules that span a target's webhooks: unique names
// and at most MaxWebhooksPerEvent webhooks per event (SPEC §7).
func CheckSet(target string, hooks []*Webhook) error {
	seen := make(map[string]bool, len(hooks))
	perEvent := make(map[string]int)
	for _, w := range hooks {
		if seen[w.name] {
			return fmt.Errorf("target %s: webhook name %s is used twice; names must be unique within a target", target, w.name)
		}
		seen[w.name] = true
		for _, ev := range w.on {
			perEvent[ev]++
		}
	}
	for _, ev := range intake.EventNames {
		if n := perEvent[ev]; n > MaxWebhooksPerEvent {
			return fmt.Errorf("target %s: event %s has %d webhooks; at most %d are allowed per event per target", target, ev, n, MaxWebhooksPerEvent)
		}
	}
	return nil
}
