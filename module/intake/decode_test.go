package intake

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeErrors(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001)
	remapErr := func(map[string]any) (map[string]any, error) {
		return nil, errors.New("field caller: data.From is not a string")
	}
	remapBad := func(map[string]any) (map[string]any, error) {
		return map[string]any{"not_a_field": "x"}, nil
	}
	remapWrong := func(map[string]any) (map[string]any, error) {
		return map[string]any{"duration": "soon"}, nil
	}
	tests := []struct {
		name   string
		method string
		target string
		ctype  string
		body   string
		opts   Options
		status int
		want   []string // substrings of the message
	}{
		// 405
		{name: "delete", method: "DELETE", target: "/after_call", status: 405,
			want: []string{"method DELETE is not allowed: send call events with POST (JSON or form) or GET (query string)"}},
		{name: "patch", method: "PATCH", target: "/after_call", ctype: ctJSON, body: `{"call_id":1}`, status: 405, want: []string{"PATCH"}},
		{name: "head", method: "HEAD", target: "/after_call", status: 405},
		{name: "lower-case get", method: "get", target: "/after_call", status: 405},

		// 415
		{name: "text/plain", method: "POST", target: "/after_call", ctype: "text/plain", body: "call_id=1", status: 415,
			want: []string{`unsupported Content-Type "text/plain"`, "application/json", "application/x-www-form-urlencoded"}},
		{name: "multipart", method: "POST", target: "/after_call", ctype: "multipart/form-data; boundary=xyz", body: "--xyz--", status: 415,
			want: []string{`"multipart/form-data"`}},
		{name: "xml", method: "PUT", target: "/after_call", ctype: "application/xml", body: "<a/>", status: 415},
		{name: "json suffix without application", method: "POST", target: "/after_call", ctype: "text/x+json", body: "{}", status: 415},
		{name: "missing content type", method: "POST", target: "/after_call", body: `{"call_id":1}`, status: 415,
			want: []string{"missing Content-Type", "application/json"}},
		{name: "unparsable content type", method: "POST", target: "/after_call", ctype: ";;;", body: `{}`, status: 415,
			want: []string{"cannot read Content-Type"}},
		{name: "unsupported with empty body", method: "POST", target: "/after_call?call_id=1", ctype: "text/plain", status: 415},

		// 413
		{name: "too large by content length", method: "POST", target: "/after_call", ctype: ctJSON,
			body: `{"call_id":"12345678901"}`, opts: Options{MaxBody: 10}, status: 413,
			want: []string{"body is larger than 10 bytes (max_body); raise max_body or send less"}},
		{name: "too large default", method: "POST", target: "/after_call", ctype: ctJSON,
			body: `{"call_id":"` + strings.Repeat("x", DefaultMaxBody) + `"}`, status: 413,
			want: []string{"body is larger than 1048576 bytes (max_body)"}},

		// 400 JSON
		{name: "malformed json", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id": 1,}`, status: 400,
			want: []string{"malformed JSON body at byte 15", "invalid character '}'"}},
		{name: "truncated json", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id": "1`, status: 400,
			want: []string{"malformed JSON body", "cut short"}},
		{name: "json array", method: "POST", target: "/after_call", ctype: ctJSON, body: `[{"call_id":1}]`, status: 400,
			want: []string{"body must be a JSON object, got a list"}},
		{name: "json string", method: "POST", target: "/after_call", ctype: ctJSON, body: `"x"`, status: 400,
			want: []string{"body must be a JSON object, got a string"}},
		{name: "json number", method: "POST", target: "/after_call", ctype: ctJSON, body: `12`, status: 400,
			want: []string{"body must be a JSON object, got a number"}},
		{name: "json null", method: "POST", target: "/after_call", ctype: ctJSON, body: `null`, status: 400,
			want: []string{"body must be a JSON object, got null"}},
		{name: "json bool", method: "POST", target: "/after_call", ctype: ctJSON, body: `true`, status: 400,
			want: []string{"got a boolean"}},
		{name: "empty json body", method: "POST", target: "/after_call", ctype: ctJSON, status: 400,
			want: []string{"body is empty"}},
		{name: "blank json body", method: "POST", target: "/after_call", ctype: ctJSON, body: " \n", status: 400,
			want: []string{"body is empty"}},
		{name: "trailing data", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1} {"call_id":2}`, status: 400,
			want: []string{"unexpected data after the object at byte 14"}},
		{name: "too deep", method: "POST", target: "/after_call", ctype: ctJSON, body: deep, status: 400,
			want: []string{"malformed JSON body", "depth"}},
		{name: "number out of float range", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"x":1e400}`, status: 400,
			want: []string{`number "1e400" under key "x" is out of range`}},
		{name: "nested number out of range", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"x":{"y":[-1e999]}}`, status: 400,
			want: []string{`number "-1e999" under key "x"`}},

		// 400 form and query
		{name: "malformed form", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=1&caller=%zz", status: 400,
			want: []string{"malformed form body", `invalid URL escape "%zz"`}},
		{name: "malformed query", method: "GET", target: "/after_call?call_id=1&x=%g0", status: 400,
			want: []string{"malformed query string"}},
		{name: "semicolon in query", method: "GET", target: "/after_call?call_id=1;x=2", status: 400,
			want: []string{"malformed query string: invalid semicolon separator in query; separate fields with & and percent-encode ; as %3B"}},
		{name: "too many form fields", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=1" + strings.Repeat("&a=1", 10000), status: 400,
			want: []string{"malformed form body: number of URL query parameters exceeded limit; send fewer fields"}},
		{name: "malformed query for empty post", method: "POST", target: "/after_call?call_id=1&x=%g0", status: 400,
			want: []string{"malformed query string"}},

		// 400 call_id
		{name: "missing call_id json", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"caller":"1"}`, status: 400,
			want: []string{`missing call_id: send the call's unique ID as a "call_id" field`}},
		{name: "missing call_id form", method: "POST", target: "/after_call", ctype: ctForm, body: "caller=1", status: 400, want: []string{"missing call_id"}},
		{name: "missing call_id query", method: "GET", target: "/after_call?caller=1", status: 400, want: []string{"missing call_id"}},
		{name: "blank call_id", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":"  "}`, status: 400, want: []string{"missing call_id"}},
		{name: "empty call_id form", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=", status: 400, want: []string{"missing call_id"}},
		{name: "null call_id", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":null}`, status: 400, want: []string{"missing call_id"}},
		{name: "object call_id", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":{"id":1}}`, status: 400,
			want: []string{"invalid call_id: got an object, expected a string or number"}},
		{name: "bool call_id", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":true}`, status: 400,
			want: []string{"invalid call_id: got true"}},
		{name: "repeated call_id", method: "GET", target: "/after_call?call_id=1&call_id=2", status: 400,
			want: []string{"invalid call_id: got a list"}},
		{name: "call_id error wins over field errors", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"duration":"x"}`, status: 400,
			want: []string{"missing call_id"}},

		// 422 event
		{name: "unknown event in path", method: "POST", target: "/hooks/xyz", ctype: ctJSON, body: `{"call_id":1}`, status: 422,
			want: []string{`unknown event "xyz" (from the URL path "/hooks/xyz"): expected one of before_call, call_answered, call_forwarding, after_call, after_call_rating, before_outgoing_call, after_outgoing_call`}},
		{name: "unknown event in body", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"event":"NOTIFY_END"}`, status: 422,
			want: []string{`unknown event "NOTIFY_END" (from the body's "event" field)`, "handler's event setting"}},
		{name: "unknown event configured", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1}`,
			opts: Options{EventName: "hangup"}, status: 422, want: []string{`unknown event "hangup" (from the handler's event setting)`}},
		{name: "no event anywhere", method: "GET", target: "/?call_id=1", status: 422,
			want: []string{"missing event: end the URL path with the event name (e.g. /after_call)", "expected one of before_call"}},
		{name: "non-string event", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"event":5}`, status: 422,
			want: []string{"field event: got 5, expected a string"}},

		// 422 per field kind
		{name: "string given object", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"caller":{"n":1}}`, status: 422,
			want: []string{"field caller: got an object, expected a string or number"}},
		{name: "string given list", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"note":["a"]}`, status: 422,
			want: []string{"field note: got a list, expected a single string or number (send the field once)"}},
		{name: "string given repeated form key", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=1&caller=1&caller=2", status: 422,
			want: []string{"field caller: got a list"}},
		{name: "int given word", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"duration":"abc"}`, status: 422,
			want: []string{`field duration: "abc" is not a whole number of seconds`}},
		{name: "int given fraction", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"talk_time":12.5}`, status: 422,
			want: []string{"field talk_time: 12.5 is not a whole number of seconds"}},
		{name: "int given bool", method: "GET", target: "/after_call?call_id=1&wait_time=true", status: 422,
			want: []string{`field wait_time: "true" is not a whole number of seconds`}},
		{name: "int given NaN", method: "GET", target: "/after_call?call_id=1&wait_time=NaN", status: 422,
			want: []string{`field wait_time: "NaN" is not a whole number`}},
		{name: "int out of range", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"duration":1e30}`, status: 422,
			want: []string{"field duration: 1e+30 is not a whole number"}},
		{name: "float given word", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=1&rating_value=five", status: 422,
			want: []string{`field rating_value: "five" is not a number`}},
		{name: "float given Inf", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=1&rating_value=Inf", status: 422,
			want: []string{`field rating_value: "Inf" is not a number`}},
		{name: "bool given word", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"has_recording":"maybe"}`, status: 422,
			want: []string{`field has_recording: "maybe" is not a boolean (use true/false, 1/0 or yes/no)`}},
		{name: "bool given 2", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"first_call":2}`, status: 422,
			want: []string{"field first_call: 2 is not a boolean"}},
		{name: "time given word", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"start_time":"yesterday"}`, status: 422,
			want: []string{`field start_time: "yesterday" is not a time (use RFC 3339, Unix seconds or "2006-01-02 15:04:05")`}},
		{name: "time given bad date", method: "GET", target: "/after_call?call_id=1&end_time=2024-13-45+25:61:61", status: 422,
			want: []string{`field end_time: "2024-13-45 25:61:61" is not a time`}},
		{name: "time given bool", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"answer_time":true}`, status: 422,
			want: []string{"field answer_time: true is not a time"}},
		{name: "time out of range", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"answer_time":1e300}`, status: 422,
			want: []string{"field answer_time: 1e+300 is out of range for a Unix time"}},
		{name: "time ms out of range", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"answer_time":9000000000000000000}`, status: 422,
			want: []string{"field answer_time: 9000000000000000000 is out of range"}},
		{name: "time before year 0", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"answer_time":-99999999999}`, status: 422,
			want: []string{"out of range"}},
		{name: "enum not allowed", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"disposition":"ringing"}`, status: 422,
			want: []string{`field disposition: "ringing" is not allowed (use one of answered, no_answer, busy, failed, voicemail)`}},
		{name: "enum given number", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"direction":1}`, status: 422,
			want: []string{"field direction: got 1, expected one of incoming, outgoing, callback"}},
		{name: "enum insertion type", method: "GET", target: "/after_call?call_id=1&insertion_type=random", status: 422,
			want: []string{`field insertion_type: "random" is not allowed (use one of dynamic, static, callback)`}},
		{name: "tags given object", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"tags":{"a":1}}`, status: 422,
			want: []string{"field tags: an object is not a list of tags"}},
		{name: "tags entry object", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"tags":["a",{"b":1}]}`, status: 422,
			want: []string{"field tags: entry 2 is an object; tags must be strings or numbers"}},
		{name: "tags given bool", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"tags":true}`, status: 422,
			want: []string{"field tags: true is not a list of tags"}},
		{name: "several fields in struct order", method: "POST", target: "/after_call", ctype: ctJSON,
			body:   `{"call_id":1,"tags":true,"duration":"x","direction":"up"}`,
			status: 422,
			want:   []string{`field direction: "up" is not allowed (use one of incoming, outgoing, callback); field duration: "x" is not a whole number of seconds; field tags: true is not a list of tags`}},
		{name: "long value is cut", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"duration":"` + strings.Repeat("9x", 100) + `"}`, status: 422,
			want: []string{`field duration: "9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x"… is not`}},

		// Remap
		{name: "remap error", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1}`, opts: Options{Remap: remapErr}, status: 422,
			want: []string{"field caller: data.From is not a string"}},
		{name: "remap unknown field", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1}`, opts: Options{Remap: remapBad}, status: 500,
			want: []string{`"not_a_field", which is not a canonical call field`}},
		{name: "remap wrong kind", method: "POST", target: "/after_call", ctype: ctJSON, body: `{"call_id":1,"duration":5}`, opts: Options{Remap: remapWrong}, status: 422,
			want: []string{`field duration: "soon" is not a whole number of seconds (value from the handler's field mapping)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(newReq(tt.method, tt.target, tt.ctype, tt.body), tt.opts)
			if err == nil {
				t.Fatalf("no error; event %+v", ev)
			}
			if ev != nil {
				t.Errorf("event %+v returned with the error", ev)
			}
			e := asError(t, err)
			if e.Status != tt.status {
				t.Errorf("status %d, want %d (%s)", e.Status, tt.status, e.Msg)
			}
			checkMessage(t, e.Msg)
			if e.Error() != e.Msg {
				t.Errorf("Error() = %q, want Msg", e.Error())
			}
			for _, w := range tt.want {
				if !strings.Contains(e.Msg, w) {
					t.Errorf("message %q\ndoes not contain %q", e.Msg, w)
				}
			}
		})
	}
}

func TestDecodeBodyLimit(t *testing.T) {
	body := `{"call_id":"1234"}` // 18 bytes
	for _, tc := range []struct {
		name    string
		max     int64
		unsized bool
		status  int
	}{
		{"exactly max", 18, false, 0},
		{"exactly max unsized", 18, true, 0},
		{"one over", 17, false, 413},
		{"one over unsized", 17, true, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReq("POST", "/after_call", ctJSON, body)
			if tc.unsized {
				r.Body = io.NopCloser(unsizedReader{strings.NewReader(body)})
				r.ContentLength = -1
			}
			_, err := Decode(r, Options{MaxBody: tc.max})
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if e := asError(t, err); e.Status != tc.status {
				t.Fatalf("status %d, want %d", e.Status, tc.status)
			}
		})
	}

	t.Run("limit set further up", func(t *testing.T) {
		r := newReq("POST", "/after_call", ctJSON, body)
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(unsizedReader{strings.NewReader(body)}), 5)
		r.ContentLength = -1
		_, err := Decode(r, Options{})
		e := asError(t, err)
		if e.Status != 413 || !strings.Contains(e.Msg, "larger than 5 bytes") {
			t.Fatalf("got %d %q", e.Status, e.Msg)
		}
	})

	t.Run("read error", func(t *testing.T) {
		r := newReq("POST", "/after_call", ctJSON, body)
		r.Body = io.NopCloser(io.MultiReader(strings.NewReader("{"), errReader{}))
		r.ContentLength = -1
		_, err := Decode(r, Options{})
		if e := asError(t, err); e.Status != 400 || !strings.Contains(e.Msg, "cannot read the body: connection reset") {
			t.Fatalf("got %d %q", e.Status, e.Msg)
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestDecodeContentTypes(t *testing.T) {
	tests := []struct {
		name   string
		method string
		target string
		ctype  string
		body   string
		caller string
	}{
		{"json", "POST", "/after_call", ctJSON, `{"call_id":"c1","caller":"+100"}`, "+100"},
		{"json charset", "POST", "/after_call", "application/json; charset=utf-8", `{"call_id":"c1","caller":"+100"}`, "+100"},
		{"json upper case type", "POST", "/after_call", "Application/JSON", `{"call_id":"c1","caller":"+100"}`, "+100"},
		{"json suffix", "POST", "/after_call", "application/vnd.pbx.event+json", `{"call_id":"c1","caller":"+100"}`, "+100"},
		{"json bad parameter", "POST", "/after_call", "application/json; charset", `{"call_id":"c1","caller":"+100"}`, "+100"},
		{"json put", "PUT", "/after_call", ctJSON, `{"call_id":"c1","caller":"+100"}`, "+100"},
		{"form", "POST", "/after_call", ctForm, "call_id=c1&caller=%2B100", "+100"},
		{"form charset", "POST", "/after_call", ctForm + "; charset=UTF-8", "call_id=c1&caller=%2B100", "+100"},
		{"query", "GET", "/after_call?call_id=c1&caller=%2B100", "", "", "+100"},
		{"get ignores body", "GET", "/after_call?call_id=c1&caller=%2B100", ctJSON, `{"call_id":"other"}`, "+100"},
		{"empty post uses query", "POST", "/after_call?call_id=c1&caller=%2B100", "", "", "+100"},
		{"empty form post uses query", "POST", "/after_call?call_id=c1&caller=%2B100", ctForm, "", "+100"},
		{"form body wins over query", "POST", "/after_call?call_id=q&caller=q", ctForm, "call_id=c1&caller=%2B100", "+100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(newReq(tt.method, tt.target, tt.ctype, tt.body), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if ev.Name != "after_call" || ev.CallID != "c1" || *ev.Call.CallID != "c1" {
				t.Errorf("name %q call id %q", ev.Name, ev.CallID)
			}
			if got := callField(t, ev.Call, "caller"); got != tt.caller {
				t.Errorf("caller %v, want %q", got, tt.caller)
			}
			if ev.Data["caller"] != tt.caller {
				t.Errorf("data caller %v", ev.Data["caller"])
			}
		})
	}
}

func TestEventNamePrecedence(t *testing.T) {
	tests := []struct {
		name       string
		configured string
		target     string
		body       string
		want       string
	}{
		{"setting wins over body and path", "call_answered", "/hook/after_call", `{"call_id":1,"event":"before_call"}`, "call_answered"},
		{"body wins over path", "", "/hook/after_call", `{"call_id":1,"event":"before_call"}`, "before_call"},
		{"path", "", "/hook/after_call", `{"call_id":1}`, "after_call"},
		{"path trailing slash", "", "/hook/after_call_rating/", `{"call_id":1}`, "after_call_rating"},
		{"path double slash", "", "/hook/before_outgoing_call//", `{"call_id":1}`, "before_outgoing_call"},
		{"empty body event falls through", "", "/hook/after_outgoing_call", `{"call_id":1,"event":""}`, "after_outgoing_call"},
		{"null body event falls through", "", "/hook/call_forwarding", `{"call_id":1,"event":null}`, "call_forwarding"},
		{"setting ignores a bad body event", "after_call", "/x", `{"call_id":1,"event":{"no":1}}`, "after_call"},
		{"case and space are forgiven", "", "/x", `{"call_id":1,"event":" After_Call "}`, "after_call"},
		{"path case", "", "/hook/BEFORE_CALL", `{"call_id":1}`, "before_call"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(newReq("POST", tt.target, ctJSON, tt.body), Options{EventName: tt.configured})
			if err != nil {
				t.Fatal(err)
			}
			if ev.Name != tt.want {
				t.Fatalf("name %q, want %q", ev.Name, tt.want)
			}
		})
	}
	t.Run("form event field", func(t *testing.T) {
		ev, err := Decode(newReq("POST", "/x", ctForm, "call_id=1&event=after_call"), Options{})
		if err != nil || ev.Name != "after_call" {
			t.Fatalf("%v %v", ev, err)
		}
	})
	t.Run("query event field", func(t *testing.T) {
		ev, err := Decode(newReq("GET", "/x?call_id=1&event=before_call", "", ""), Options{})
		if err != nil || ev.Name != "before_call" {
			t.Fatalf("%v %v", ev, err)
		}
	})
}

func TestDecodeData(t *testing.T) {
	body := `{"call_id":12,"big":12345678901234567890,"neg":-9223372036854775808,"f":1.5,"e":1e3,"z":0,
		"nested":{"n":7,"list":[1,2.5,"s",null,true,{"deep":9007199254740993}]},"s":"x","event":"after_call","Caller":"kept"}`
	ev, err := Decode(newReq("POST", "/", ctJSON, body), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"call_id": int64(12),
		"big":     float64(12345678901234567890),
		"neg":     int64(-9223372036854775808),
		"f":       1.5,
		"e":       float64(1000),
		"z":       int64(0),
		"nested": map[string]any{"n": int64(7), "list": []any{int64(1), 2.5, "s", nil, true,
			map[string]any{"deep": int64(9007199254740993)}}},
		"s":      "x",
		"event":  "after_call",
		"Caller": "kept",
	}
	if !reflect.DeepEqual(ev.Data, want) {
		t.Errorf("data\n got %#v\nwant %#v", ev.Data, want)
	}
	if ev.CallID != "12" {
		t.Errorf("call id %q", ev.CallID)
	}
	if ev.Call.Caller != nil {
		t.Errorf("Caller (wrong case) was taken as caller: %q", *ev.Call.Caller)
	}

	t.Run("huge integer call_id keeps every digit", func(t *testing.T) {
		ev, err := Decode(newReq("POST", "/after_call", ctJSON, `{"call_id":18446744073709551615,"caller":123456789012345678901234567890}`), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ev.CallID != "18446744073709551615" {
			t.Errorf("call id %q", ev.CallID)
		}
		if got := *ev.Call.Caller; got != "123456789012345678901234567890" {
			t.Errorf("caller %q", got)
		}
		if _, ok := ev.Data["call_id"].(float64); !ok {
			t.Errorf("data call_id is %T, want float64", ev.Data["call_id"])
		}
	})

	t.Run("form and query values", func(t *testing.T) {
		for _, r := range []*http.Request{
			newReq("POST", "/after_call", ctForm, "call_id=1&a=x&r=1&r=2&empty="),
			newReq("GET", "/after_call?call_id=1&a=x&r=1&r=2&empty=", "", ""),
		} {
			ev, err := Decode(r, Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"call_id": "1", "a": "x", "r": []any{"1", "2"}, "empty": ""}
			if !reflect.DeepEqual(ev.Data, want) {
				t.Errorf("%s data %#v", r.Method, ev.Data)
			}
		}
	})

	t.Run("invalid utf-8 is kept and does not panic", func(t *testing.T) {
		ev, err := Decode(newReq("POST", "/after_call", ctForm, "call_id=%FF%FE&caller=a%C3&x%FF=1"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ev.CallID != "\xff\xfe" || *ev.Call.Caller != "a\xc3" || ev.Data["x\xff"] != "1" {
			t.Errorf("got %q %q %v", ev.CallID, *ev.Call.Caller, ev.Data)
		}
		_, err = Decode(newReq("POST", "/after_call", ctForm, "call_id=1&disposition=%FF&duration=%FE"), Options{})
		checkMessage(t, asError(t, err).Msg)
	})
}

func TestRemap(t *testing.T) {
	var seen map[string]any
	remap := func(data map[string]any) (map[string]any, error) {
		seen = data
		return map[string]any{
			"call_id":     data["CallSid"],
			"caller":      data["From"],
			"duration":    data["CallDuration"],
			"disposition": "No-Answer",
			"start_time":  time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC),
			"tags":        []any{"a", int64(2)},
			"callee":      nil, // nil leaves the body's own value
		}, nil
	}
	body := `{"CallSid":"CA1","From":"+1415","CallDuration":"42","call_id":"body-id","caller":"body-caller","callee":"+1800"}`
	ev, err := Decode(newReq("POST", "/after_call", ctJSON, body), Options{Remap: remap})
	if err != nil {
		t.Fatal(err)
	}
	if ev.CallID != "CA1" || *ev.Call.Caller != "+1415" || *ev.Call.Duration != 42 || *ev.Call.Disposition != "no_answer" {
		t.Errorf("mapped values not applied: %q %q %v %q", ev.CallID, *ev.Call.Caller, *ev.Call.Duration, *ev.Call.Disposition)
	}
	if *ev.Call.Callee != "+1800" {
		t.Errorf("callee %q: a nil mapping must leave the body value", *ev.Call.Callee)
	}
	if !ev.Call.StartTime.Equal(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("start time %v", ev.Call.StartTime)
	}
	if !reflect.DeepEqual(ev.Call.Tags, []string{"a", "2"}) {
		t.Errorf("tags %q", ev.Call.Tags)
	}
	if ev.Data["call_id"] != "body-id" || ev.Data["caller"] != "body-caller" {
		t.Errorf("Data must stay as received: %v", ev.Data)
	}
	if !reflect.DeepEqual(seen, ev.Data) {
		t.Errorf("remap saw %v", seen)
	}

	t.Run("mapped call_id alone satisfies the requirement", func(t *testing.T) {
		ev, err := Decode(newReq("GET", "/after_call?id=77", "", ""), Options{Remap: func(d map[string]any) (map[string]any, error) {
			return map[string]any{"call_id": d["id"]}, nil
		}})
		if err != nil || ev.CallID != "77" {
			t.Fatalf("%v %v", ev, err)
		}
	})
	t.Run("nil result", func(t *testing.T) {
		ev, err := Decode(newReq("GET", "/after_call?call_id=1", "", ""), Options{Remap: func(map[string]any) (map[string]any, error) { return nil, nil }})
		if err != nil || ev.CallID != "1" {
			t.Fatalf("%v %v", ev, err)
		}
	})
	t.Run("go number types from a mapping", func(t *testing.T) {
		ev, err := Decode(newReq("GET", "/after_call", "", ""), Options{Remap: func(map[string]any) (map[string]any, error) {
			return map[string]any{"call_id": uint64(1 << 63), "duration": int32(5), "rating_value": float32(4.5), "has_recording": 1, "tags": []string{"x", " "}}, nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		if ev.CallID != "9223372036854775808" || *ev.Call.Duration != 5 || *ev.Call.RatingValue != 4.5 || !*ev.Call.HasRecording || !reflect.DeepEqual(ev.Call.Tags, []string{"x"}) {
			t.Errorf("got %+v", ev.Call)
		}
	})
}

func TestStripToken(t *testing.T) {
	for _, strip := range []bool{false, true} {
		ev, err := Decode(newReq("GET", "/after_call?call_id=1&token=s3cret&a=b", "", ""), Options{StripToken: strip})
		if err != nil {
			t.Fatal(err)
		}
		_, inData := ev.Data["token"]
		_, inQuery := ev.Request.Query["token"]
		if inData == strip || inQuery == strip {
			t.Errorf("strip=%v: token in data %v, in request.query %v", strip, inData, inQuery)
		}
		if ev.Data["a"] != "b" || ev.Request.Query["a"] != "b" {
			t.Errorf("other keys lost: %v %v", ev.Data, ev.Request.Query)
		}
	}
	t.Run("empty post reading the query", func(t *testing.T) {
		ev, err := Decode(newReq("POST", "/after_call?call_id=1&token=s3cret", "", ""), Options{StripToken: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ev.Data["token"]; ok {
			t.Error("token kept in data")
		}
	})
	t.Run("json body with a token in the query", func(t *testing.T) {
		ev, err := Decode(newReq("POST", "/after_call?token=s3cret", ctJSON, `{"call_id":1}`), Options{StripToken: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ev.Request.Query["token"]; ok {
			t.Error("token kept in request.query")
		}
	})
}

func TestRequestInfo(t *testing.T) {
	r := newReq("POST", "/hooks/after_call?x=1&x=2&y=", ctJSON, `{"call_id":1}`)
	r.RemoteAddr = "[2001:db8::1]:4711"
	r.Header.Set("Authorization", "Bearer s3cret")
	r.Header.Set("Cookie", "session=s3cret")
	r.Header.Set("Proxy-Authorization", "Basic s3cret")
	r.Header.Set("X-Api-Key", "s3cret")
	r.Header.Add("X-Pbx", "asterisk")
	r.Header.Add("X-Pbx", "v18")
	r.Header["x-raw-lower"] = []string{"raw"}
	r.Header["X-Empty"] = nil
	now := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	ev, err := Decode(r, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	want := RequestInfo{
		Method:   "POST",
		Path:     "/hooks/after_call",
		RemoteIP: "2001:db8::1",
		Headers:  map[string]string{"content-type": ctJSON, "x-pbx": "asterisk, v18", "x-raw-lower": "raw"},
		Query:    map[string]string{"x": "1", "y": ""},
	}
	if !reflect.DeepEqual(ev.Request, want) {
		t.Errorf("request\n got %#v\nwant %#v", ev.Request, want)
	}
	if !ev.ReceivedAt.Equal(now) {
		t.Errorf("received at %v", ev.ReceivedAt)
	}
	for _, v := range ev.Request.Headers {
		if strings.Contains(v, "s3cret") {
			t.Errorf("secret header leaked: %v", ev.Request.Headers)
		}
	}

	t.Run("remote addr without port", func(t *testing.T) {
		r := newReq("GET", "/after_call?call_id=1", "", "")
		r.RemoteAddr = "192.0.2.7"
		ev, err := Decode(r, Options{})
		if err != nil || ev.Request.RemoteIP != "192.0.2.7" {
			t.Fatalf("%v %v", ev, err)
		}
	})
	t.Run("default clock", func(t *testing.T) {
		before := time.Now()
		ev, err := Decode(newReq("GET", "/after_call?call_id=1", "", ""), Options{})
		if err != nil || ev.ReceivedAt.Before(before) || time.Since(ev.ReceivedAt) > time.Minute {
			t.Fatalf("%v %v", ev, err)
		}
	})
	t.Run("maps are never nil", func(t *testing.T) {
		r := &http.Request{URL: &url.URL{Path: "/after_call", RawQuery: "call_id=1"}} // no method: GET
		ev, err := Decode(r, Options{})
		if err != nil || ev.Request.Headers == nil || ev.Request.Query == nil || ev.Request.Method != "GET" {
			t.Fatalf("%v %v", ev, err)
		}
	})
}
