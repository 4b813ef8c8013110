package intake

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// DefaultMaxBody is the body limit when Options.MaxBody is 0.
const DefaultMaxBody = 1 << 20

// MaxCallID is the longest call_id accepted, in bytes (SPEC §3). A longer
// one is a 400: it is the sender's mistake and would fail again.
const MaxCallID = 256

// Options configure Decode.
type Options struct {
	// Location is where "2006-01-02 15:04:05" times without a zone are
	// read; nil is UTC.
	Location *time.Location
	// MaxBody is the largest body accepted, in bytes; 0 is DefaultMaxBody.
	MaxBody int64
	// EventName is the already-resolved value of the handler's `event`
	// setting; "" means it is not configured.
	EventName string
	// Remap, if set, computes canonical field values from the decoded body
	// (the handler's `field` mappings). Non-nil values it returns override
	// the body's own canonical fields; they are coerced like body values.
	// It must not modify data, which becomes Event.Data.
	Remap func(data map[string]any) (map[string]any, error)
	// StripToken drops the "token" key from data taken from the query
	// string, and from RequestInfo.Query: it is the auth token.
	StripToken bool
	// Now is the clock for Event.ReceivedAt; nil is time.Now.
	Now func() time.Time
	// EventFrom, if set, names the event from the decoded body (an input
	// preset's mapping of a source's own event names); "" falls back to the
	// body's "event" field and the path. EventName still wins.
	EventFrom func(data map[string]any) string
	// RemoteIP, if set, is the client's IP as the server determined it
	// (Caddy's client_ip, which honours trusted proxies); it becomes
	// RequestInfo.RemoteIP. Empty means the host of r.RemoteAddr.
	RemoteIP string
	// Verify, if set, checks an inbound signature once the body is read,
	// before anything is decoded into an event. form holds the parsed form
	// body (nil for JSON bodies and GET). An error it returns is answered as
	// is when it is an *Error, else as 401.
	Verify func(r *http.Request, body []byte, form url.Values) error
}

// Decode reads one call event from r.
//
// GET events are read from the query string, POST and PUT events from a JSON
// object (application/json or application/*+json) or form
// (application/x-www-form-urlencoded) body. A POST or PUT with an empty body
// and no Content-Type (or a form Content-Type) is read from the query string,
// as some PBXs send it that way.
//
// The event name is opts.EventName, else the body's "event" field, else the
// last non-empty segment of the URL path. Canonical fields in the body (and
// from opts.Remap) are coerced into Event.Call; see the coerce functions for
// the accepted forms. Event.Data holds the whole decoded body as received:
// JSON integers that fit int64 as int64, other numbers as float64, form and
// query values as strings ([]any of strings for a repeated key).
//
// Errors are *Error, with the status to answer: 405, 413, 415, 400 for a body
// that cannot be read or has no call_id, 422 for an unknown event or a field
// value of the wrong kind, and 500 when Remap returns a non-canonical field.
func Decode(r *http.Request, opts Options) (*Event, error) {
	method := r.Method
	if method == "" { // as in net/http: an empty method is GET
		method = http.MethodGet
	}
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut:
	default:
		return nil, newError(http.StatusMethodNotAllowed,
			"method %s is not allowed: send call events with POST (JSON or form) or GET (query string)", quoteMethod(r.Method))
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	received := now()
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	maxBody := opts.MaxBody
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}

	// The query string is parsed once: it feeds RequestInfo.Query and, for
	// GET (or an empty POST), the data. Parse errors only matter for the latter.
	var rawQuery string
	if r.URL != nil {
		rawQuery = r.URL.RawQuery
	}
	query, queryErr := url.ParseQuery(rawQuery)

	var data map[string]any
	var exact map[string]string
	var err error
	var body []byte
	var form url.Values
	if method == http.MethodGet {
		data, err = queryData(query, queryErr, opts.StripToken)
	} else {
		data, exact, body, form, err = bodyData(r, maxBody, query, queryErr, opts.StripToken)
	}
	if err != nil {
		return nil, err
	}
	if opts.Verify != nil {
		if err := opts.Verify(r, body, form); err != nil {
			var ie *Error
			if errors.As(err, &ie) {
				return nil, ie
			}
			return nil, &Error{Status: http.StatusUnauthorized, Msg: err.Error()}
		}
	}
	return finish(r, method, opts, received, loc, query, data, exact)
}

// bodyData decodes a POST or PUT body by its Content-Type. It also returns
// the raw body and, for a form, the parsed values (for Options.Verify).
func bodyData(r *http.Request, maxBody int64, query url.Values, queryErr error, stripToken bool) (map[string]any, map[string]string, []byte, url.Values, error) {
	ctype := r.Header.Get("Content-Type")
	var mt string
	if ctype != "" {
		var err error
		mt, _, err = mime.ParseMediaType(ctype)
		if err != nil && mt == "" {
			return nil, nil, nil, nil, newError(http.StatusUnsupportedMediaType,
				"cannot read Content-Type %s: %v; send application/json or application/x-www-form-urlencoded", quote(ctype), err)
		}
		if !isJSONType(mt) && mt != formType {
			return nil, nil, nil, nil, newError(http.StatusUnsupportedMediaType,
				"unsupported Content-Type %s: send a JSON object as application/json, a form as application/x-www-form-urlencoded, or use GET with a query string", quote(mt))
		}
	}
	body, err := readBody(r, maxBody)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	switch {
	case len(body) == 0 && (mt == "" || mt == formType):
		data, err := queryData(query, queryErr, stripToken)
		return data, nil, body, nil, err
	case mt == "":
		return nil, nil, nil, nil, newError(http.StatusUnsupportedMediaType,
			"missing Content-Type: the body is not empty, so set Content-Type to application/json or application/x-www-form-urlencoded")
	case mt == formType:
		if looksLikeJSON(body) {
			// curl -d sends this Content-Type by default; parsed as a
			// form, the whole object would become one odd field name.
			return nil, nil, nil, nil, newError(http.StatusBadRequest,
				"the body looks like JSON but the Content-Type is application/x-www-form-urlencoded: send it with Content-Type: application/json (curl: -H 'Content-Type: application/json')")
		}
		vals, err := parseForm(body)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		return valuesData(vals), nil, body, vals, nil
	}
	data, exact, err := jsonData(body)
	return data, exact, body, nil, err
}

// looksLikeJSON reports whether a body is a JSON object or list.
func looksLikeJSON(body []byte) bool {
	t := bytes.TrimSpace(body)
	return len(t) >= 2 && (t[0] == '{' || t[0] == '[') && json.Valid(t)
}

const formType = "application/x-www-form-urlencoded"

// finish builds the event from the decoded data.
func finish(r *http.Request, method string, opts Options, received time.Time, loc *time.Location, query url.Values, data map[string]any, exact map[string]string) (*Event, error) {
	configured := opts.EventName
	if configured == "" && opts.EventFrom != nil {
		configured = opts.EventFrom(data)
	}
	name, err := eventName(configured, data, r)
	if err != nil {
		return nil, err
	}
	return build(name, opts, received, loc, data, exact, func() RequestInfo {
		return requestInfo(r, method, query, opts.StripToken, opts.RemoteIP)
	})
}

// build maps and coerces the decoded data of an event named name; info
// gives the request facts once the event is known to be good.
func build(name string, opts Options, received time.Time, loc *time.Location, data map[string]any, exact map[string]string, info func() RequestInfo) (_ *Event, err error) {
	defer func() {
		// the event is known (canonical) from here on: say which it was
		var ie *Error
		if errors.As(err, &ie) {
			ie.Event = name
		}
	}()

	var mapped map[string]any
	if opts.Remap != nil {
		if mapped, err = opts.Remap(data); err != nil {
			msg := err.Error()
			if msg == "" {
				msg = "the handler's field mapping failed on this body"
			}
			return nil, &Error{Status: http.StatusUnprocessableEntity, Msg: msg}
		}
		for k := range mapped {
			if !IsField(k) {
				return nil, newError(http.StatusInternalServerError,
					"internal error: the field mapping produced %s, which is not a canonical call field; check the handler's field settings", quote(k))
			}
		}
	}

	b := &builder{loc: loc}
	var errs []fieldError
	for k, v := range data {
		f := fields.byName[k]
		if f == nil || mapped[k] != nil {
			continue
		}
		if exact != nil {
			if lit, ok := exact[k]; ok {
				v = json.Number(lit)
			}
		}
		if err := b.set(f, v); err != nil {
			errs = append(errs, fieldError{f, err.Error()})
		}
	}
	for k, v := range mapped {
		if v == nil {
			continue
		}
		f := fields.byName[k]
		if err := b.set(f, v); err != nil {
			errs = append(errs, fieldError{f, err.Error() + " (value from the handler's field mapping)"})
		}
	}

	// call_id comes first: without it the event cannot be deduplicated.
	for _, e := range errs {
		if e.f.kind == kindID {
			return nil, newError(http.StatusBadRequest,
				"invalid call_id: %s; send the call's unique ID as a string or number", e.msg)
		}
	}
	if b.call.CallID == nil {
		return nil, newError(http.StatusBadRequest,
			`missing call_id: send the call's unique ID as a "call_id" field (string or number), or map the sender's own ID field onto it with the handler's field setting`)
	}
	if n := len(*b.call.CallID); n > MaxCallID {
		return nil, newError(http.StatusBadRequest,
			"call_id is %d bytes long; at most %d bytes are allowed: send the call's own unique ID, not a whole record", n, MaxCallID)
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b fieldError) int { return a.f.index - b.f.index })
		var msg strings.Builder
		for i, e := range errs {
			if i > 0 {
				msg.WriteString("; ")
			}
			msg.WriteString("field ")
			msg.WriteString(e.f.name)
			msg.WriteString(": ")
			msg.WriteString(e.msg)
		}
		return nil, &Error{Status: http.StatusUnprocessableEntity, Msg: msg.String()}
	}

	return &Event{
		Name:       name,
		CallID:     *b.call.CallID,
		Call:       &b.call,
		Data:       data,
		Request:    info(),
		ReceivedAt: received,
	}, nil
}

type fieldError struct {
	f   *field
	msg string
}

func isJSONType(mt string) bool {
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// quoteMethod keeps a hostile method from putting odd bytes in a message.
func quoteMethod(m string) string {
	for i := 0; i < len(m); i++ {
		if c := m[i]; c <= ' ' || c >= 0x7f || c == '"' {
			return quote(m)
		}
	}
	if len(m) > maxQuoted {
		return quote(m)
	}
	return m
}

// readBody reads the whole body in one buffer, up to maxBody bytes.
func readBody(r *http.Request, maxBody int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > maxBody {
		return nil, tooLarge(maxBody)
	}
	size := int64(512)
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1 // +1: room to see EOF without growing
	}
	limit := maxBody + 1 // one byte over the limit tells "too large" from "exactly max"
	if limit <= 0 {
		limit = math.MaxInt64
	}
	buf := make([]byte, 0, size)
	lr := io.LimitedReader{R: r.Body, N: limit}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) { // a limit set further up, e.g. request_body
				return nil, tooLarge(mbe.Limit)
			}
			return nil, newError(http.StatusBadRequest, "cannot read the body: %v", err)
		}
	}
	if int64(len(buf)) > maxBody {
		return nil, tooLarge(maxBody)
	}
	return buf, nil
}

func tooLarge(limit int64) *Error {
	return newError(http.StatusRequestEntityTooLarge,
		"body is larger than %d bytes (max_body); raise max_body or send less", limit)
}

// queryData turns the query string into event data.
func queryData(query url.Values, parseErr error, stripToken bool) (map[string]any, error) {
	if parseErr != nil {
		return nil, newError(http.StatusBadRequest, "malformed query string: %v; %s", parseErr, formHint(parseErr))
	}
	data := valuesData(query)
	if stripToken {
		delete(data, "token")
	}
	return data, nil
}

func parseForm(body []byte) (url.Values, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, newError(http.StatusBadRequest, "malformed form body: %v; %s", err, formHint(err))
	}
	return vals, nil
}

// formHint says how to fix what url.ParseQuery rejected.
func formHint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "exceeded limit"):
		return "send fewer fields (at most 10000)"
	case strings.Contains(msg, "semicolon"):
		return "separate fields with & and percent-encode ; as %3B"
	}
	return "percent-encode the values (e.g. %20 for a space, %25 for %)"
}

// valuesData maps a key sent once to its string, a repeated key to []any.
func valuesData(vals url.Values) map[string]any {
	data := make(map[string]any, len(vals))
	for k, vs := range vals {
		switch len(vs) {
		case 0:
		case 1:
			data[k] = vs[0]
		default:
			list := make([]any, len(vs))
			for i, v := range vs {
				list[i] = v
			}
			data[k] = list
		}
	}
	return data
}

// jsonData decodes a JSON object body. exact holds the literal of every
// top-level whole number too large for int64 (Data has it as float64), so a
// string field such as call_id gets every digit.
func jsonData(body []byte) (map[string]any, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, nil, jsonError(err, body)
	}
	if rest := bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, nil, newError(http.StatusBadRequest,
			"malformed JSON body: unexpected data after the object at byte %d; send exactly one JSON object", len(body)-len(rest))
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, nil, newError(http.StatusBadRequest,
			`body must be a JSON object, got %s; send the fields as {"call_id": "...", ...}`, jsonKind(v))
	}
	var exact map[string]string
	for k, e := range obj {
		if n, ok := e.(json.Number); ok {
			x, err := number(string(n))
			if err != nil {
				return nil, nil, numberRange(k, n)
			}
			if _, isFloat := x.(float64); isFloat && isIntLiteral(string(n)) {
				if exact == nil {
					exact = make(map[string]string)
				}
				exact[k] = string(n)
			}
			obj[k] = x
			continue
		}
		if err := convertNumbers(e); err != nil {
			return nil, nil, numberRange(k, err.(numberError).lit)
		}
	}
	return obj, exact, nil
}

type numberError struct{ lit json.Number }

func (e numberError) Error() string { return "number " + string(e.lit) + " is out of range" }

func numberRange(key string, lit json.Number) *Error {
	return newError(http.StatusBadRequest,
		"malformed JSON body: number %s under key %s is out of range for a 64-bit float; send it as a string",
		quote(string(lit)), quote(key))
}

// convertNumbers replaces json.Number inside nested objects and lists, in place.
func convertNumbers(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if n, ok := e.(json.Number); ok {
				x, err := number(string(n))
				if err != nil {
					return numberError{n}
				}
				v[k] = x
			} else if err := convertNumbers(e); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if n, ok := e.(json.Number); ok {
				x, err := number(string(n))
				if err != nil {
					return numberError{n}
				}
				v[i] = x
			} else if err := convertNumbers(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return "something else"
}

func jsonError(err error, body []byte) *Error {
	var syn *json.SyntaxError
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return newError(http.StatusBadRequest,
			`body is empty: send a JSON object such as {"call_id": "..."}, or drop the Content-Type and use the query string`)
	case errors.As(err, &syn):
		return newError(http.StatusBadRequest, "malformed JSON body at byte %d: %v", syn.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return newError(http.StatusBadRequest,
			"malformed JSON body: it ends at byte %d in the middle of a value; was it cut short?", len(body))
	}
	return newError(http.StatusBadRequest, "malformed JSON body: %v", err)
}

// eventName resolves the canonical event name: the handler's setting, else
// the body's "event" field, else the last path segment.
func eventName(configured string, data map[string]any, r *http.Request) (string, error) {
	if configured != "" {
		return checkEventName(configured, "the handler's event setting",
			"fix the handler's event setting")
	}
	if v, ok := data["event"]; ok && v != nil {
		s, ok := v.(string)
		if !ok {
			return "", newError(http.StatusUnprocessableEntity,
				"field event: got %s, expected a string naming the event (one of %s)", describe(v), strings.Join(EventNames, ", "))
		}
		if strings.TrimSpace(s) != "" {
			return checkEventName(s, `the body's "event" field`,
				"if the sender uses its own event names, set the handler's event setting to map them")
		}
	}
	var path string
	if r.URL != nil {
		path = r.URL.Path
	}
	seg := strings.TrimRight(path, "/")
	seg = seg[strings.LastIndexByte(seg, '/')+1:]
	if seg == "" {
		return "", newError(http.StatusUnprocessableEntity,
			`missing event: end the URL path with the event name (e.g. /after_call), send an "event" field, or set the handler's event setting; expected one of %s`,
			strings.Join(EventNames, ", "))
	}
	return checkEventName(seg, "the URL path "+quote(path),
		`end the URL path with the event name, send an "event" field, or set the handler's event setting`)
}

func checkEventName(name, from, hint string) (string, error) {
	if IsEventName(name) {
		return name, nil
	}
	norm := strings.ToLower(strings.TrimSpace(name))
	for _, n := range EventNames {
		if n == norm {
			return n, nil
		}
	}
	return "", newError(http.StatusUnprocessableEntity, "unknown event %s (from %s): expected one of %s; %s",
		quote(name), from, strings.Join(EventNames, ", "), hint)
}

// hiddenHeaders carry credentials; expressions must not see them.
var hiddenHeaders = map[string]bool{
	"authorization":       true,
	"cookie":              true,
	"proxy-authorization": true,
	"x-api-key":           true,
}

func requestInfo(r *http.Request, method string, query url.Values, stripToken bool, remoteIP string) RequestInfo {
	info := RequestInfo{
		Method:  method,
		Headers: make(map[string]string, len(r.Header)),
		Query:   make(map[string]string, len(query)),
	}
	if r.URL != nil {
		info.Path = r.URL.Path
	}
	info.RemoteIP = remoteIP
	if remoteIP == "" {
		info.RemoteIP = r.RemoteAddr
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			info.RemoteIP = host
		}
	}
	for name, vs := range r.Header {
		lname := lowerHeader(name)
		if hiddenHeaders[lname] || len(vs) == 0 {
			continue
		}
		v := vs[0]
		if len(vs) > 1 {
			v = strings.Join(vs, ", ")
		}
		if prev, ok := info.Headers[lname]; ok { // keys differing only in case
			v = prev + ", " + v
		}
		info.Headers[lname] = v
	}
	for k, vs := range query {
		if len(vs) > 0 && !(stripToken && k == "token") {
			info.Query[k] = vs[0]
		}
	}
	return info
}

// lowerHeader lower-cases a header name, without allocating for the common
// canonical names by reusing the static strings below.
func lowerHeader(name string) string {
	if s, ok := commonHeaders[name]; ok {
		return s
	}
	return strings.ToLower(name)
}

var commonHeaders = func() map[string]string {
	m := make(map[string]string)
	for _, h := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Connection", "Content-Length",
		"Content-Type", "Date", "Host", "Origin", "Referer", "User-Agent",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id",
	} {
		m[h] = strings.ToLower(h)
	}
	return m
}()
