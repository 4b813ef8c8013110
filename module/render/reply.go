package render

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/callhook/caddy-callhook/encoders"
	"github.com/callhook/caddy-callhook/module/mapping"
)

// ReplyConfig is a `reply <event> { ... }` block: how the handler answers
// the caller of an event that has sync webhooks (SPEC §9).
type ReplyConfig struct {
	Event   string
	Status  int
	Format  string // json (default), form, xml, text
	XMLRoot string
	Headers []Header
	Params  []Param
	// DateFormat and Timezone are the handler's: replies format times by
	// the same rules as webhooks.
	DateFormat string
	Timezone   string
}

// ReplyFormats are the formats a reply can be written in.
var ReplyFormats = []string{"json", "form", "xml", "text"}

// Reply is a compiled reply.
type Reply struct {
	event   string
	status  int
	encoder encoders.Encoder // nil for text
	xmlRoot string
	headers []headerTemplate
	params  []replyParam
	dates   mapping.DateFormat
	loc     *time.Location
	sync    []string // sync webhooks the params name
}

type replyParam struct {
	name string
	prog *mapping.Program
}

// Event is the event the reply answers.
func (r *Reply) Event() string { return r.event }

// SyncNames are the sync webhooks the reply's params name.
func (r *Reply) SyncNames() []string { return r.sync }

// CompileReply checks and compiles a reply. Errors name the reply's event.
func CompileReply(c ReplyConfig) (*Reply, error) {
	r, err := compileReply(c)
	if err != nil {
		return nil, fmt.Errorf("reply %s: %w", c.Event, err)
	}
	return r, nil
}

func compileReply(c ReplyConfig) (*Reply, error) {
	r := &Reply{event: c.Event, status: c.Status, xmlRoot: c.XMLRoot}
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.status < 200 || r.status > 599 {
		return nil, fmt.Errorf("status %d: expected an HTTP status from 200 to 599", c.Status)
	}
	format := c.Format
	if format == "" {
		format = "json"
	}
	if !slices.Contains(ReplyFormats, format) {
		return nil, fmt.Errorf("unknown format %q: expected one of %s", c.Format, strings.Join(ReplyFormats, ", "))
	}
	if c.XMLRoot != "" && format != "xml" {
		return nil, fmt.Errorf("xml_root is only used with format xml (format is %s)", format)
	}
	if r.xmlRoot == "" {
		r.xmlRoot = "webhook"
	}
	if format == "text" {
		if len(c.Params) != 1 {
			return nil, fmt.Errorf("format text writes exactly one param as the body; this reply has %d", len(c.Params))
		}
	} else {
		r.encoder, _ = encoders.Lookup(format)
	}
	var err error
	if r.dates, r.loc, err = datesAndZone(c.DateFormat, c.Timezone); err != nil {
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
		prog, syncs, err := mapping.CompileReply(p.Expr)
		if err != nil {
			return nil, fmt.Errorf("param %s: %w", p.Name, err)
		}
		for _, s := range syncs {
			if !slices.Contains(r.sync, s) {
				r.sync = append(r.sync, s)
			}
		}
		names = append(names, p.Name)
		r.params = append(r.params, replyParam{name: p.Name, prog: prog})
	}
	if r.encoder != nil {
		if err := r.encoder.CheckNames(names, encoders.Options{XMLRoot: r.xmlRoot}); err != nil {
			return nil, err
		}
	}
	for _, h := range c.Headers {
		if !httpguts.ValidHeaderFieldName(h.Name) {
			return nil, fmt.Errorf("header %q: not a valid header name", h.Name)
		}
		if slices.Contains([]string{"content-length", "transfer-encoding", "connection"}, strings.ToLower(h.Name)) {
			return nil, fmt.Errorf("header %s cannot be set by config: the server sets it", h.Name)
		}
		if !httpguts.ValidHeaderFieldValue(h.Value) {
			return nil, fmt.Errorf("header %s: the value contains CR, LF, NUL or another control character", h.Name)
		}
		t, err := parseTemplate(h.Value, names, escapeNone)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", h.Name, err)
		}
		r.headers = append(r.headers, headerTemplate{name: h.Name, value: t})
	}
	return r, nil
}

// Answer is a rendered reply.
type Answer struct {
	Status int
	Header [][2]string
	Body   []byte
}

// Render evaluates the reply. An expression that fails is an error naming
// the param; the caller answers it as a server error.
func (r *Reply) Render(env *mapping.ReplyEnv) (*Answer, error) {
	params := make([]encoders.Param, len(r.params))
	for i, p := range r.params {
		v, err := p.prog.Run(env)
		if err != nil {
			return nil, fmt.Errorf("reply %s: param %s: %v", r.event, p.name, err)
		}
		params[i] = encoders.Param{Name: p.name, Value: r.formatTimes(mapping.Normalize(v))}
	}
	a := &Answer{Status: r.status}
	if r.encoder == nil {
		a.Body = []byte(text(params[0].Value))
		a.Header = append(a.Header, [2]string{"Content-Type", "text/plain; charset=utf-8"})
	} else {
		var buf bytes.Buffer
		if err := r.encoder.Encode(&buf, params, encoders.Options{XMLRoot: r.xmlRoot}); err != nil {
			return nil, fmt.Errorf("reply %s: encoding the %s body: %v", r.event, r.encoder.Name(), err)
		}
		a.Body = buf.Bytes()
		a.Header = append(a.Header, [2]string{"Content-Type", r.encoder.ContentType()})
	}
	lookup := func(name string) string {
		for _, p := range params {
			if p.Name == name {
				return text(p.Value)
			}
		}
		return ""
	}
	for _, h := range r.headers {
		v := h.value.fill(lookup)
		if h.value.hasParams() && !httpguts.ValidHeaderFieldValue(v) {
			return nil, fmt.Errorf("reply %s: header %s: the rendered value contains CR, LF, NUL or another control character", r.event, h.name)
		}
		a.Header = append(a.Header, [2]string{h.name, v})
	}
	return a, nil
}

func (r *Reply) formatTimes(v any) any {
	w := Webhook{dates: r.dates, loc: r.loc}
	return w.formatTimes(v)
}
