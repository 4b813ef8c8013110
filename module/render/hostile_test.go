package render

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/callhook/caddy-callhook/module/queue"
)

// TestExpressionFailuresStayInTheirWebhook renders one event for several
// webhooks whose expressions loop, allocate or panic: each of those gets a
// dead delivery naming the webhook and the param (or when), and the
// event's other webhooks render as usual.
func TestExpressionFailuresStayInTheirWebhook(t *testing.T) {
	configs := []struct {
		c    Config
		dead string // "" means pending
	}{
		{c: Config{Name: "loops", When: "let r = 1..1000; all(r, {all(r, {all(r, {true})})})"},
			dead: "webhook loops: when: the expression allocates or loops over more than 1000000 values for one event: memory budget exceeded"},
		{c: Config{Name: "allocates", Params: []Param{{"big", "len(map(1..100000000, # * 2))"}}},
			dead: "webhook allocates: param big: the expression allocates or loops over more than 1000000 values for one event"},
		{c: Config{Name: "nested_data_loop", Params: []Param{{"pairs", "count(data.items, {let i = #; count(data.items, {# == i}) > 1})"}}},
			dead: "webhook nested_data_loop: param pairs: the expression allocates or loops over more than 1000000 values"},
		{c: Config{Name: "panics", Params: []Param{{"d", "digits(data.items)"}}},
			dead: "webhook panics: param d: interface conversion"},
		{c: Config{Name: "e164_nil", Params: []Param{{"p", "e164(data.missing, 'UA')"}}},
			dead: "webhook e164_nil: param p: "},
		{c: Config{Name: "format_date", Params: []Param{{"p", "format_date(data.s, 'date')"}}},
			dead: "webhook format_date: param p: format_date: first argument is string, not a time"},
		{c: Config{Name: "fine", Params: []Param{{"n", "len(data.items)"}, {"tags", "filter(call.tags, # == 'vip')"}}}},
	}
	items := make([]any, 3000) // 3000² steps in nested_data_loop
	for i := range items {
		items[i] = int64(i)
	}
	ev := testEvent(map[string]any{"items": items, "s": "2026-01-01"})
	for _, tt := range configs {
		tt.c.On, tt.c.URL = []string{"after_call"}, "https://crm.example.com/"+tt.c.Name
		w := mustCompile(t, tt.c)
		d := w.Render(ev, "acme", "msg_"+tt.c.Name, testNow)
		if tt.dead == "" {
			mustPending(t, d)
			if want := `{"n":3000,"tags":["vip"]}`; string(d.Request.Body) != want {
				t.Errorf("%s: body %s, want %s", tt.c.Name, d.Request.Body, want)
			}
			continue
		}
		mustDead(t, d, tt.dead)
		if d.ID != "msg_"+tt.c.Name || d.Webhook != tt.c.Name {
			t.Errorf("%s: dead delivery %+v", tt.c.Name, d)
		}
	}
}

// TestInvalidUTF8Bodies: whatever bytes the caller sent, every format's body
// is well formed. json and xml replace invalid UTF-8 with U+FFFD; form
// percent-encodes the bytes as they are.
func TestInvalidUTF8Bodies(t *testing.T) {
	data := map[string]any{
		"v":    "a\xffb\xc3",
		"ctl":  "x\x00y\x01z\x1b",
		"list": []any{"\xfe", "ok", map[string]any{"k": "\xed\xa0\x80"}}, // a lone surrogate
		"bad":  map[string]any{"k\xff": "v"},
	}
	params := []Param{{"v", "data.v"}, {"ctl", "data.ctl"}, {"list", "data.list"}}
	for _, format := range []string{"json", "jsonrpc", "xml", "form"} {
		t.Run(format, func(t *testing.T) {
			c := hook("https://h/hook")
			c.Format, c.Params = format, params
			d := mustPending(t, render(t, mustCompile(t, c), data))
			body := d.Request.Body
			switch format {
			case "json", "jsonrpc":
				if !json.Valid(body) || !utf8.Valid(body) {
					t.Fatalf("invalid JSON: %q", body)
				}
			case "xml":
				checkXML(t, body)
			case "form":
				vals, err := url.ParseQuery(string(body))
				if err != nil {
					t.Fatal(err)
				}
				if vals.Get("v") != "a\xffb\xc3" || vals.Get("ctl") != "x\x00y\x01z\x1b" {
					t.Errorf("form does not keep the bytes: %q", vals)
				}
			}
		})
	}
	// A map key cannot be an XML element name: dead, not a broken document.
	c := hook("https://h/hook")
	c.Format, c.Params = "xml", []Param{{"bad", "data.bad"}}
	mustDead(t, render(t, mustCompile(t, c), data), "webhook crm: encoding the xml body: ")
	// json keeps it, as U+FFFD
	c.Format = "json"
	d := mustPending(t, render(t, mustCompile(t, c), data))
	var back map[string]map[string]string
	if err := json.Unmarshal(d.Request.Body, &back); err != nil || back["bad"]["k\uFFFD"] != "v" {
		t.Errorf("json body %q: %v", d.Request.Body, err)
	}
}

func checkXML(t *testing.T, body []byte) {
	t.Helper()
	if !utf8.Valid(body) {
		t.Fatalf("xml is not UTF-8: %q", body)
	}
	dec := xml.NewDecoder(bytes.NewReader(body))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("xml does not parse: %v\n%s", err, body)
		}
	}
}

// TestManyParams: a webhook with 1000 params compiles and renders in order.
// The cost is logged, not asserted.
func TestManyParams(t *testing.T) {
	const n = 1000
	for _, format := range []string{"json", "xml", "form"} {
		t.Run(format, func(t *testing.T) {
			c := hook("https://h/hook")
			c.Format, c.Params = format, nil
			for i := range n {
				c.Params = append(c.Params, Param{Name: fmt.Sprintf("g%d.p%d", i%10, i), Expr: fmt.Sprintf("call.call_id + '-%d'", i)})
			}
			var w *Webhook
			compileTook, compileAlloc := measure(func() { w = mustCompile(t, c) })
			var d *queue.Delivery
			renderTook, renderAlloc := measure(func() { d = mustPending(t, render(t, w, nil)) })
			if !bytes.Contains(d.Request.Body, []byte("c-1-999")) {
				t.Fatalf("body lacks the last param: %.200s", d.Request.Body)
			}
			t.Logf("%s, %d params: compile %v (%d KiB), render %v (%d KiB), body %d bytes",
				format, n, compileTook, compileAlloc>>10, renderTook, renderAlloc>>10, len(d.Request.Body))
		})
	}
}

// TestBigData: the whole body of an event with 100k fields as one param.
func TestBigData(t *testing.T) {
	data := make(map[string]any, 100_000)
	for i := range 100_000 {
		data[fmt.Sprintf("k%d", i)] = int64(i)
	}
	for _, format := range []string{"json", "form"} {
		c := hook("https://h/hook")
		c.Format, c.Params = format, []Param{{"d", "data"}}
		w := mustCompile(t, c)
		var d *queue.Delivery
		took, alloc := measure(func() { d = mustPending(t, render(t, w, data)) })
		t.Logf("%s: 100k fields as one param: %v, %d MiB allocated, body %d KiB", format, took, alloc>>20, len(d.Request.Body)>>10)
	}
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

func TestHostileBodyIsNotEchoedInErrors(t *testing.T) {
	c := hook("https://h/{param.a}")
	c.Params = []Param{{"a", "data.a"}, {"b", "data.b * 2"}}
	d := mustDead(t, render(t, mustCompile(t, c), map[string]any{"a": "x", "b": strings.Repeat("s3cret", 10)}), "webhook crm: param b: ")
	if strings.Contains(d.LastError, "s3cret") {
		t.Errorf("the error quotes the event's data: %q", d.LastError)
	}
}
