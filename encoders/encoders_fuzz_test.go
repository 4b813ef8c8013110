package encoders

import (
	"bytes"
	"encoding/json"
	"math"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzParams builds params from fuzz input: names is split on "|" (at most
// 16 names, so dots, duplicates and conflicts all come from the fuzzer) and
// the value kind follows the position, so one input mixes strings, numbers,
// nil, lists and maps.
func fuzzParams(names, s string, n int64, f float64, b bool) []Param {
	parts := strings.SplitN(names, "|", 17)
	if len(parts) > 16 {
		parts = parts[:16]
	}
	params := make([]Param, len(parts))
	for i, name := range parts {
		var v any
		switch i % 7 {
		case 0:
			v = s
		case 1:
			v = n
		case 2:
			v = f
		case 3:
			v = b
		case 4:
			v = nil
		case 5:
			v = []any{s, n, []any{b, f}}
		case 6:
			v = map[string]any{s: n, "k": []any{s, map[string]any{"z": s}}}
		}
		params[i] = Param{Name: name, Value: v}
	}
	return params
}

func paramNames(params []Param) []string {
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Name
	}
	return names
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// encodeFuzz runs enc and checks the failure contract: an error leaves the
// buffer untouched, and a config that passes CheckNames with a finite float
// only fails for reasons mayFail allows.
func encodeFuzz(t *testing.T, enc Encoder, params []Param, opts Options, f float64, mayFail bool) ([]byte, bool) {
	t.Helper()
	var buf bytes.Buffer
	err := enc.Encode(&buf, params, opts)
	if err != nil {
		if buf.Len() != 0 {
			t.Fatalf("%s: buffer written on error %v: %q", enc.Name(), err, buf.String())
		}
		if err.Error() == "" {
			t.Fatal("empty error message")
		}
		if enc.CheckNames(paramNames(params), opts) == nil && finite(f) && !mayFail {
			t.Fatalf("%s: names passed CheckNames but Encode failed: %v", enc.Name(), err)
		}
		return nil, false
	}
	return buf.Bytes(), true
}

// checkJSONObject requires body to be one valid JSON object and decodes it.
func checkJSONObject(t *testing.T, body []byte) map[string]any {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("invalid json: %q", body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("json does not decode: %v: %q", err, body)
	}
	return obj
}

// checkPaths checks that each plain string param landed at its dotted path;
// only meaningful when the names passed CheckNames.
func checkPaths(t *testing.T, obj map[string]any, params []Param, s string) {
	t.Helper()
	for i, p := range params {
		if i%7 != 0 || !utf8.ValidString(p.Name) || !utf8.ValidString(s) {
			continue
		}
		var cur any = obj
		for seg := range strings.SplitSeq(p.Name, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("path %q: not an object at %q", p.Name, seg)
			}
			cur = m[seg]
		}
		if cur != s {
			t.Fatalf("path %q = %#v, want %q", p.Name, cur, s)
		}
	}
}

func FuzzJSON(f *testing.F) {
	enc := mustLookup(f, "json")
	f.Fuzz(func(t *testing.T, names, s string, n int64, fl float64, b bool) {
		checkJSONString(t, s)
		params := fuzzParams(names, s, n, fl, b)
		body, ok := encodeFuzz(t, enc, params, Options{}, fl, false)
		if !ok {
			return
		}
		obj := checkJSONObject(t, body)
		if enc.CheckNames(paramNames(params), Options{}) == nil {
			checkPaths(t, obj, params, s)
		}
	})
}

func FuzzJSONRPC(f *testing.F) {
	enc := mustLookup(f, "jsonrpc")
	f.Fuzz(func(t *testing.T, names, s string, n int64, fl float64, b bool, method, id string) {
		params := fuzzParams(names, s, n, fl, b)
		opts := Options{RPCMethod: method, RPCID: id}
		body, ok := encodeFuzz(t, enc, params, opts, fl, false)
		if !ok {
			return
		}
		obj := checkJSONObject(t, body)
		if len(obj) != 4 || obj["jsonrpc"] != "2.0" {
			t.Fatalf("bad envelope: %q", body)
		}
		if _, isObj := obj["params"].(map[string]any); !isObj {
			t.Fatalf("params is not an object: %q", body)
		}
		if utf8.ValidString(method) && obj["method"] != method || utf8.ValidString(id) && obj["id"] != id {
			t.Fatalf("method or id changed: %q", body)
		}
		if enc.CheckNames(paramNames(params), opts) == nil {
			checkPaths(t, obj["params"].(map[string]any), params, s)
		}
		if !bytes.HasPrefix(body, []byte(`{"jsonrpc":"2.0","method":`)) || !bytes.Contains(body, []byte(`,"params":{`)) {
			t.Fatalf("members out of order: %q", body)
		}
	})
}

func FuzzXML(f *testing.F) {
	enc := mustLookup(f, "xml")
	f.Fuzz(func(t *testing.T, names, s string, n int64, fl float64, b bool, root string) {
		checkXMLText(t, s)
		params := fuzzParams(names, s, n, fl, b)
		// A map value uses s as a key, which may not be an element name.
		mayFail := len(params) > 6 && xmlNameProblem(s, true) != ""
		body, ok := encodeFuzz(t, enc, params, Options{XMLRoot: root}, fl, mayFail)
		if !ok {
			return
		}
		checkXMLWellFormed(t, body)
		if !bytes.HasPrefix(body, []byte(xh)) {
			t.Fatalf("missing header: %q", body)
		}
	})
}

func FuzzForm(f *testing.F) {
	enc := mustLookup(f, "form")
	f.Fuzz(func(t *testing.T, names, s string, n int64, fl float64, b bool) {
		checkQueryEscape(t, s)
		checkQueryEscape(t, names)
		params := fuzzParams(names, s, n, fl, b)
		body, ok := encodeFuzz(t, enc, params, Options{}, fl, false)
		if !ok {
			return
		}
		q, err := url.ParseQuery(string(body))
		if err != nil {
			t.Fatalf("form does not parse: %v: %q", err, body)
		}
		for i, p := range params {
			if i%7 == 0 && !slices.Contains(q[p.Name], s) {
				t.Fatalf("param %q: %q not in %q (body %q)", p.Name, s, q[p.Name], body)
			}
		}
		full, err := AppendQuery("https://h.test/p?k=v#frag", params)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(full)
		if err != nil {
			t.Fatalf("AppendQuery result does not parse: %v: %q", err, full)
		}
		if u.Fragment != "frag" || u.Query().Get("k") != "v" {
			t.Fatalf("AppendQuery lost query or fragment: %q", full)
		}
	})
}

// checkQueryEscape pins the form escaping to url.QueryEscape.
func checkQueryEscape(t testing.TB, s string) {
	t.Helper()
	want := url.QueryEscape(s)
	var buf bytes.Buffer
	writeQueryEscape(&buf, s)
	if buf.String() != want {
		t.Fatalf("writeQueryEscape(%q) = %q, want %q", s, buf.String(), want)
	}
	if got := string(appendQueryEscape([]byte("x"), s)); got != "x"+want {
		t.Fatalf("appendQueryEscape(%q) = %q, want %q", s, got, "x"+want)
	}
}
