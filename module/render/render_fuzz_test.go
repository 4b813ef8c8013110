package render

import (
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/callhook/caddy-callhook/module/queue"
)

// The fuzz targets hold Render to what a receiver relies on, whatever the
// template (within what Compile accepts) and whatever the caller sent:
// Render never panics, a URL always parses, values cannot reach the
// scheme or host unless the template puts a param there, cannot add query
// params or path segments, and headers never carry control characters.
// Seeds live in testdata/fuzz/<FuzzName>/.

// FuzzRenderURL fuzzes the part of the URL after the scheme and the values
// of params a and b.
//
// Compiling the params' expressions dominates Compile, so each run takes a
// webhook compiled once and swaps in the fuzzed URL the way Compile does.
func FuzzRenderURL(f *testing.F) {
	post := mustCompile(f, hook("https://crm.example.com/"))
	getc := hook("https://crm.example.com/")
	getc.Method, getc.Format = "GET", "form"
	get := mustCompile(f, getc)
	f.Fuzz(func(t *testing.T, rest, a, b string, isGet bool) {
		w := *post
		if isGet {
			w = *get
		}
		var err error
		if w.url, w.urlDots, err = parseURL("https://"+rest, []string{"a", "b"}); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		d := w.Render(testEvent(map[string]any{"a": a, "b": b}), "acme", "msg_fuzz", testNow)
		if d == nil {
			t.Fatal("nil delivery without a when")
		}
		checkURL(t, &w, d, a, b, isGet)
	})
}

// FuzzRenderHeader fuzzes a header value template and the param values.
func FuzzRenderHeader(f *testing.F) {
	base := mustCompile(f, hook("https://crm.example.com/hook"))
	f.Fuzz(func(t *testing.T, name, tmpl, a, b string) {
		ht, err := compileHeader(Header{Name: name, Value: tmpl}, []string{"a", "b"})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		w := *base
		w.headers = []headerTemplate{ht}
		w.ctHeader = strings.EqualFold(name, "content-type")
		if !httpguts.ValidHeaderFieldName(name) {
			t.Fatalf("compiled with header name %q", name)
		}
		d := w.Render(testEvent(map[string]any{"a": a, "b": b}), "acme", "msg_fuzz", testNow)
		if d == nil {
			t.Fatal("nil delivery without a when")
		}
		if d.State == queue.Dead {
			if !strings.HasPrefix(d.LastError, "webhook crm: header "+name+": ") {
				t.Fatalf("dead with %q", d.LastError)
			}
			v := w.headers[0].value.fill(func(p string) string { return map[string]string{"a": a, "b": b}[p] })
			if httpguts.ValidHeaderFieldValue(v) {
				t.Fatalf("dead for a valid header value %q: %s", v, d.LastError)
			}
			return
		}
		for _, h := range d.Request.Header {
			if !httpguts.ValidHeaderFieldName(h[0]) || !httpguts.ValidHeaderFieldValue(h[1]) {
				t.Fatalf("invalid header %q: %q", h[0], h[1])
			}
			if strings.ContainsAny(h[1], "\r\n\x00") {
				t.Fatalf("header %q carries CR, LF or NUL: %q", h[0], h[1])
			}
		}
	})
}

// checkURL compares the rendered URL with two probes of the template, one
// with every value "x" and one with "z". Where the probes differ in scheme
// or host, a param is in the authority, and the value may move the host
// (the SSRF guard still checks where it leads); otherwise the rendered
// URL must keep the probes' scheme, host and shape.
func checkURL(t *testing.T, w *Webhook, d *queue.Delivery, a, b string, get bool) {
	t.Helper()
	px, err1 := url.Parse(w.url.fill(func(string) string { return "x" }))
	pz, err2 := url.Parse(w.url.fill(func(string) string { return "z" }))
	if err1 != nil || err2 != nil {
		t.Fatalf("probes of a compiled template do not parse: %v, %v", err1, err2)
	}
	inAuthority := px.Host != pz.Host || px.Scheme != pz.Scheme || px.User != nil || pz.User != nil
	if d.State == queue.Dead {
		if !strings.HasPrefix(d.LastError, "webhook crm: url") {
			t.Fatalf("dead with %q", d.LastError)
		}
		if inAuthority || strings.Contains(d.LastError, `"." or ".." path segment`) {
			return // a value that breaks the host, or a path traversal
		}
		t.Fatalf("dead with a param outside the host: %s (a=%q b=%q)", d.LastError, a, b)
	}
	u, err := url.Parse(d.Request.URL)
	if err != nil {
		t.Fatalf("rendered URL %q does not parse: %v", d.Request.URL, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.Opaque != "" {
		t.Fatalf("rendered URL %q: scheme %q host %q user %v opaque %q", d.Request.URL, u.Scheme, u.Host, u.User, u.Opaque)
	}
	if want := u.Scheme + "://" + u.Host; d.Destination != want {
		t.Fatalf("destination %q, want %q", d.Destination, want)
	}
	if inAuthority {
		return
	}
	if u.Host != px.Host {
		t.Fatalf("host %q, template host %q (a=%q b=%q)", u.Host, px.Host, a, b)
	}
	if got, want := strings.Count(u.EscapedPath(), "/"), strings.Count(px.EscapedPath(), "/"); got != want {
		t.Fatalf("path %q has %d segments, template %q has %d", u.EscapedPath(), got, px.EscapedPath(), want)
	}
	if hasDotSegment(u.EscapedPath()) && !hasDotSegment(px.EscapedPath()) {
		t.Fatalf("path %q has a dot segment the template has not", u.EscapedPath())
	}
	if get {
		// GET form appends a=..&b=.. to the template's query
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			t.Fatalf("query %q: %v", u.RawQuery, err)
		}
		if va, vb := q["a"], q["b"]; len(va) == 0 || va[len(va)-1] != a || len(vb) == 0 || vb[len(vb)-1] != b {
			t.Fatalf("query %q lost the appended params a=%q b=%q", u.RawQuery, a, b)
		}
		return
	}
	if got, want := shape(u.RawQuery), shape(px.RawQuery); got != want {
		t.Fatalf("query %q (shape %q) differs from the template's %q (shape %q)", u.RawQuery, got, px.RawQuery, want)
	}
	probe := w.url.fill(func(string) string { return "x" })
	if strings.Count(d.Request.URL, "#") != strings.Count(probe, "#") {
		t.Fatalf("rendered URL %q has another fragment than the template's %q", d.Request.URL, probe)
	}
}

// shape keeps only the separators of a query string: values that are
// escaped properly cannot change it.
func shape(q string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune("&=;", r) {
			return r
		}
		return -1
	}, q)
}
