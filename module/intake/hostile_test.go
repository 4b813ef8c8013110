package intake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Hostile bodies get a 4xx with a readable message, or an event whose data
// encodes; never a crash, and never unbounded work.

func TestDeepNesting(t *testing.T) {
	nest := func(open, leaf, close string, n int) string {
		return `{"call_id":"deep","x":` + strings.Repeat(open, n) + leaf + strings.Repeat(close, n) + `}`
	}
	tests := []struct {
		name, body string
		status     int // 0: accepted
	}{
		{"lists 100k", nest("[", "1", "]", 100_000), 400},
		{"objects 100k", nest(`{"a":`, "1", "}", 100_000), 400},
		{"lists 1M unclosed", `{"call_id":"deep","x":` + strings.Repeat("[", 1_000_000), 400},
		// encoding/json stops at 10000 levels; just under it is data like any other
		{"lists 9000", nest("[", "1", "]", 9000), 0},
		{"objects 9000", nest(`{"a":`, `"s"`, "}", 9000), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReq("POST", "/after_call", ctJSON, tt.body)
			ev, err := Decode(r, Options{MaxBody: 4 << 20})
			if tt.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := json.Marshal(ev.Data); err != nil {
					t.Fatalf("data does not encode: %v", err)
				}
				return
			}
			e := asError(t, err)
			if e.Status != tt.status {
				t.Fatalf("status %d (%s), want %d", e.Status, e.Msg, tt.status)
			}
			checkMessage(t, e.Msg)
			if !strings.Contains(e.Msg, "malformed JSON body") || len(e.Msg) > 300 {
				t.Errorf("message %q", e.Msg)
			}
		})
	}
}

// TestManyFields decodes bodies with 100k fields. What it costs is logged,
// not asserted: the bound is max_body (a JSON object) and net/url's 10000
// fields (form and query).
func TestManyFields(t *testing.T) {
	const n = 100_000
	var js strings.Builder
	js.WriteString(`{"call_id":"many"`)
	for i := range n {
		fmt.Fprintf(&js, `,"k%d":%d`, i, i)
	}
	js.WriteString("}")
	var form strings.Builder
	form.WriteString("call_id=many")
	for i := range n {
		fmt.Fprintf(&form, "&k%d=%d", i, i)
	}

	t.Run("json", func(t *testing.T) {
		body := js.String()
		// the default max_body (1 MiB) refuses it...
		e := asError(t, decodeErr(newReq("POST", "/after_call", ctJSON, body), Options{}))
		if e.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d: %s", e.Status, e.Msg)
		}
		// ...a bigger one takes it, in time and memory proportional to it
		var ev *Event
		took, alloc := measure(func() {
			var err error
			if ev, err = Decode(newReq("POST", "/after_call", ctJSON, body), Options{MaxBody: 4 << 20}); err != nil {
				t.Fatal(err)
			}
		})
		if len(ev.Data) != n+1 {
			t.Fatalf("data has %d keys, want %d", len(ev.Data), n+1)
		}
		t.Logf("json: %d fields, %d KiB body: %v, %d MiB allocated", n, len(body)>>10, took, alloc>>20)
	})
	for _, tt := range []struct{ name, method, ctype string }{
		{"form", "POST", ctForm},
		{"query", "GET", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r *http.Request
			if tt.method == "GET" {
				r = newReq("GET", "/after_call?"+form.String(), "", "")
			} else {
				r = newReq("POST", "/after_call", ctForm, form.String())
			}
			var err error
			took, alloc := measure(func() { _, err = Decode(r, Options{MaxBody: 4 << 20}) })
			e := asError(t, err)
			if e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, "send fewer fields (at most 10000)") {
				t.Fatalf("status %d: %s", e.Status, e.Msg)
			}
			checkMessage(t, e.Msg)
			t.Logf("%s: %d fields refused: %v, %d MiB allocated", tt.name, n, took, alloc>>20)
		})
	}
}

func decodeErr(r *http.Request, o Options) error {
	_, err := Decode(r, o)
	return err
}

func measure(f func()) (time.Duration, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	return took, after.TotalAlloc - before.TotalAlloc
}

// TestInvalidUTF8 sends invalid UTF-8 everywhere a sender can put it. Error
// messages stay valid UTF-8, and what is accepted encodes as JSON (which is
// how events are stored and answered).
func TestInvalidUTF8(t *testing.T) {
	tests := []struct {
		name, method, target, ctype, body string
		status                            int // 0: accepted
	}{
		{name: "json value", method: "POST", target: "/after_call", ctype: ctJSON, body: "{\"call_id\":\"c\xff1\",\"caller\":\"\xfe\",\"x\":[\"\xc3\"]}"},
		{name: "json key", method: "POST", target: "/after_call", ctype: ctJSON, body: "{\"call_id\":\"c1\",\"k\xff\":1}"},
		{name: "form value", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=c%FF1&caller=%FE%FD&note=%C3"},
		{name: "form key", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=c1&k%FF=v"},
		{name: "query", method: "GET", target: "/after_call?call_id=%FF&city=%C3%28", status: 0},
		{name: "event in path", method: "POST", target: "/%FF%FE", ctype: ctJSON, body: `{"call_id":"c1"}`, status: 422},
		{name: "event field", method: "POST", target: "/x", ctype: ctJSON, body: "{\"call_id\":\"c1\",\"event\":\"after\xffcall\"}", status: 422},
		{name: "enum", method: "POST", target: "/after_call", ctype: ctJSON, body: "{\"call_id\":\"c1\",\"disposition\":\"\xff\"}", status: 422},
		{name: "time", method: "POST", target: "/after_call", ctype: ctForm, body: "call_id=c1&start_time=%FF", status: 422},
		{name: "malformed json", method: "POST", target: "/after_call", ctype: ctJSON, body: "{\"call_id\":\xff}", status: 400},
		{name: "content type", method: "POST", target: "/after_call", ctype: "text/\xff", body: "x", status: 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReq(tt.method, "/", tt.ctype, tt.body)
			r.URL.Path, r.URL.RawQuery, _ = strings.Cut(tt.target, "?")
			if p, err := url.PathUnescape(r.URL.Path); err == nil {
				r.URL.Path = p
			}
			r.Header.Set("X-Pbx", "pbx\xff")
			ev, err := Decode(r, Options{})
			if tt.status != 0 {
				e := asError(t, err)
				if e.Status != tt.status {
					t.Fatalf("status %d (%s), want %d", e.Status, e.Msg, tt.status)
				}
				checkMessage(t, e.Msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range []any{ev.Call, ev.Data, ev.Request, ev.CallID} {
				b, err := json.Marshal(v)
				if err != nil || !utf8.Valid(b) {
					t.Fatalf("%T does not encode as valid JSON: %v %q", v, err, b)
				}
			}
		})
	}
}
