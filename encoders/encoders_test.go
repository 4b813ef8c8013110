package encoders

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// encodeCase is one row of the per-format Encode tables.
type encodeCase struct {
	name    string
	params  []Param
	opts    Options
	want    string // exact body, when wantErr is empty
	wantErr string // substring of the error
}

// runEncodeCases checks each case, and also that a pre-filled buffer keeps
// its contents and is restored on error.
func runEncodeCases(t *testing.T, enc Encoder, cases []encodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			buf.WriteString("PREFIX")
			err := enc.Encode(&buf, tc.params, tc.opts)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("want error containing %q, got body %q", tc.wantErr, buf.String())
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tc.wantErr)
				}
				if buf.String() != "PREFIX" {
					t.Fatalf("buffer not restored on error: %q", buf.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got := strings.TrimPrefix(buf.String(), "PREFIX"); got != tc.want {
				t.Fatalf("body mismatch\n got: %s\nwant: %s", got, tc.want)
			}
		})
	}
}

// checkCase is one row of the per-format CheckNames tables.
type checkCase struct {
	name    string
	names   []string
	opts    Options
	wantErr string // "" means valid; otherwise the exact error text
}

func runCheckCases(t *testing.T, enc Encoder, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := enc.CheckNames(tc.names, tc.opts)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("want error %q, got nil", tc.wantErr)
			case tc.wantErr != "" && err.Error() != tc.wantErr:
				t.Fatalf("error mismatch\n got: %s\nwant: %s", err, tc.wantErr)
			}
		})
	}
}

func mustLookup(t testing.TB, name string) Encoder {
	t.Helper()
	enc, ok := Lookup(name)
	if !ok {
		t.Fatalf("encoder %q not registered", name)
	}
	return enc
}

type stringer struct{ s string }

func (s *stringer) String() string { return s.s }

// exotic covers the defensive value types; each format's table checks the
// rendering of these values.
var exotic = []Param{
	{"i", int(-3)},
	{"i32", int32(32)},
	{"u8", uint8(8)},
	{"u64", uint64(math.MaxUint64)},
	{"f32", float32(0.1)},
	{"ss", []string{"a", "b"}},
	{"num", json.Number("1.50")},
	{"str", &stringer{"S"}},
	{"t", time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)},
}

func TestRegistry(t *testing.T) {
	want := []string{"form", "json", "xml", "jsonrpc"}
	names := Names()
	if !slices.Equal(names, want) {
		t.Fatalf("Names() = %v, want %v", names, want)
	}
	names[0] = "mutated"
	if Names()[0] != "form" {
		t.Fatal("Names() must return a copy")
	}
	types := map[string]string{
		"form":    "application/x-www-form-urlencoded",
		"json":    "application/json",
		"xml":     "application/xml; charset=utf-8",
		"jsonrpc": "application/json",
	}
	for _, n := range want {
		enc := mustLookup(t, n)
		if enc.Name() != n {
			t.Errorf("Lookup(%q).Name() = %q", n, enc.Name())
		}
		if enc.ContentType() != types[n] {
			t.Errorf("%s ContentType = %q, want %q", n, enc.ContentType(), types[n])
		}
	}
	for _, n := range []string{"", "JSON", "yaml", "form "} {
		if _, ok := Lookup(n); ok {
			t.Errorf("Lookup(%q) found an encoder", n)
		}
	}
}

func TestUnsupportedAndStringerPanic(t *testing.T) {
	var nilStringer *panicky
	for _, n := range Names() {
		enc := mustLookup(t, n)
		opts := Options{RPCMethod: "m"}
		var buf bytes.Buffer
		err := enc.Encode(&buf, []Param{{"ok", "1"}, {"bad", struct{}{}}}, opts)
		if err == nil || err.Error() != `param "bad": unsupported value type struct {}` {
			t.Errorf("%s: unsupported type error = %v", n, err)
		}
		err = enc.Encode(&buf, []Param{{"bad", []any{make(chan int)}}}, opts)
		if err == nil || err.Error() != `param "bad": unsupported value type chan int` {
			t.Errorf("%s: unsupported element error = %v", n, err)
		}
		err = enc.Encode(&buf, []Param{{"p", nilStringer}}, opts)
		if err == nil || !strings.Contains(err.Error(), `param "p": *encoders.panicky.String panicked`) {
			t.Errorf("%s: panicking Stringer error = %v", n, err)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: buffer written on error: %q", n, buf.String())
		}
	}
}

type panicky struct{ s string }

func (p *panicky) String() string { return p.s }

func TestDepthLimit(t *testing.T) {
	var v any = "leaf"
	for range maxDepth + 1 {
		v = []any{v}
	}
	var m any = "leaf"
	for range maxDepth + 1 {
		m = map[string]any{"k": m}
	}
	for _, n := range Names() {
		enc := mustLookup(t, n)
		for _, val := range []any{v, m} {
			var buf bytes.Buffer
			err := enc.Encode(&buf, []Param{{"deep", val}}, Options{RPCMethod: "m"})
			if !errors.Is(err, errTooDeep) {
				t.Errorf("%s: deep value error = %v, want errTooDeep", n, err)
			}
		}
	}
}

func TestAppendQuery(t *testing.T) {
	params := []Param{{"a", "1"}, {"b c", "x&y"}, {"tags", []any{"p", "q"}}}
	const enc = "a=1&b+c=x%26y&tags=p&tags=q"
	cases := []struct {
		name, url string
		params    []Param
		want      string
		wantErr   string
	}{
		{"no query", "https://h.test/hook", params, "https://h.test/hook?" + enc, ""},
		{"existing query", "https://h.test/hook?k=v", params, "https://h.test/hook?k=v&" + enc, ""},
		{"empty query", "https://h.test/hook?", params, "https://h.test/hook?" + enc, ""},
		{"trailing ampersand", "https://h.test/hook?k=v&", params, "https://h.test/hook?k=v&" + enc, ""},
		{"fragment", "https://h.test/hook#top", params, "https://h.test/hook?" + enc + "#top", ""},
		{"query and fragment", "https://h.test/hook?k=v#top", params, "https://h.test/hook?k=v&" + enc + "#top", ""},
		{"question mark in fragment", "https://h.test/p#f?x=1", params, "https://h.test/p?" + enc + "#f?x=1", ""},
		{"other parts untouched", "https://u:p@h.test:8443/a%2Fb/?k=%7e", params, "https://u:p@h.test:8443/a%2Fb/?k=%7e&" + enc, ""},
		{"no params", "https://h.test/hook?k=v#f", nil, "https://h.test/hook?k=v#f", ""},
		{"only empty list", "https://h.test/hook", []Param{{"t", []any{}}}, "https://h.test/hook", ""},
		{"relative", "/hook", params[:1], "/hook?a=1", ""},
		{"bad host", "http://[::1/x", params, "", "invalid url: missing ']' in host"},
		{"control char", "http://h.test/\x7f", params, "", "invalid url: net/url: invalid control character in URL"},
		{"bad escape", "http://h.test/%zz", params, "", `invalid url: invalid URL escape "%zz"`},
		{"empty", "", params, "", "invalid url: empty"},
		{"bad value", "https://h.test/", []Param{{"f", math.NaN()}}, "", `param "f": NaN cannot be encoded`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendQuery(tc.url, tc.params)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if _, err := url.Parse(got); err != nil {
				t.Fatalf("result does not parse: %v", err)
			}
		})
	}
	// The parsed query must hold the old and new values.
	got, err := AppendQuery("https://h.test/hook?k=v#frag", params)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	want := url.Values{"k": {"v"}, "a": {"1"}, "b c": {"x&y"}, "tags": {"p", "q"}}
	if !reflect.DeepEqual(u.Query(), want) || u.Fragment != "frag" {
		t.Fatalf("query = %v fragment = %q", u.Query(), u.Fragment)
	}
}

// roundTripParams exercise every value kind for the parse-back tests.
var roundTripParams = []Param{
	{"event", "call.start & <more>"},
	{"agent.id", int64(math.MaxInt64)},
	{"tags", []any{"vip", "new\r\nline"}},
	{"agent.name", "Zoë \"Z\" 'q'"},
	{"contact", map[string]any{"name": "A=B", "phones": []any{"1", "2"}, "geo": map[string]any{"lat": 1.25}}},
	{"missed", false},
	{"nothing", nil},
	{"ratio", 0.1},
	{"bad", "x\xffy"},
}

func TestRoundTripJSON(t *testing.T) {
	want := map[string]any{
		"event":   "call.start & <more>",
		"agent":   map[string]any{"id": json.Number("9223372036854775807"), "name": "Zoë \"Z\" 'q'"},
		"tags":    []any{"vip", "new\r\nline"},
		"contact": map[string]any{"name": "A=B", "phones": []any{"1", "2"}, "geo": map[string]any{"lat": json.Number("1.25")}},
		"missed":  false,
		"nothing": nil,
		"ratio":   json.Number("0.1"),
		"bad":     "x\uFFFDy",
	}
	for _, name := range []string{"json", "jsonrpc"} {
		var buf bytes.Buffer
		if err := mustLookup(t, name).Encode(&buf, roundTripParams, Options{RPCMethod: "call.event", RPCID: "d-1"}); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(&buf)
		dec.UseNumber()
		var got map[string]any
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "jsonrpc" {
			if got["jsonrpc"] != "2.0" || got["method"] != "call.event" || got["id"] != "d-1" || len(got) != 4 {
				t.Fatalf("jsonrpc envelope = %v", got)
			}
			got = got["params"].(map[string]any)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s decoded\n got %#v\nwant %#v", name, got, want)
		}
	}
}

// xmlNode is a generic decoded element, for comparing XML output.
type xmlNode struct {
	XMLName  xml.Name
	Text     string    `xml:",chardata"`
	Children []xmlNode `xml:",any"`
}

func TestRoundTripXML(t *testing.T) {
	var buf bytes.Buffer
	if err := mustLookup(t, "xml").Encode(&buf, roundTripParams, Options{XMLRoot: "call"}); err != nil {
		t.Fatal(err)
	}
	var root xmlNode
	if err := xml.Unmarshal(buf.Bytes(), &root); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, buf.String())
	}
	leaf := func(name, text string) xmlNode { return xmlNode{XMLName: xml.Name{Local: name}, Text: text} }
	node := func(name string, children ...xmlNode) xmlNode {
		return xmlNode{XMLName: xml.Name{Local: name}, Children: children}
	}
	want := node("call",
		leaf("event", "call.start & <more>"),
		node("agent", leaf("id", "9223372036854775807"), leaf("name", "Zoë \"Z\" 'q'")),
		leaf("tags", "vip"),
		leaf("tags", "new\r\nline"),
		node("contact", node("geo", leaf("lat", "1.25")), leaf("name", "A=B"), leaf("phones", "1"), leaf("phones", "2")),
		leaf("missed", "false"),
		leaf("nothing", ""),
		leaf("ratio", "0.1"),
		leaf("bad", "x\uFFFDy"),
	)
	if !reflect.DeepEqual(root, want) {
		t.Fatalf("decoded\n got %+v\nwant %+v", root, want)
	}
	checkXMLWellFormed(t, buf.Bytes())
}

// checkXMLWellFormed runs the strict tokenizer to the end and requires a
// single root element.
func checkXMLWellFormed(t testing.TB, body []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(body))
	depth, roots := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("xml does not parse: %v\n%q", err, body)
		}
		switch tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(tok.(xml.CharData))) > 0 {
				t.Fatalf("text outside root: %q", body)
			}
		}
	}
	if roots != 1 || depth != 0 {
		t.Fatalf("want exactly one root element, got %d (depth %d): %q", roots, depth, body)
	}
}

func TestRoundTripForm(t *testing.T) {
	var buf bytes.Buffer
	if err := mustLookup(t, "form").Encode(&buf, roundTripParams, Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := url.ParseQuery(buf.String())
	if err != nil {
		t.Fatal(err)
	}
	want := url.Values{
		"event":             {"call.start & <more>"},
		"agent.id":          {"9223372036854775807"},
		"tags":              {"vip", "new\r\nline"},
		"agent.name":        {"Zoë \"Z\" 'q'"},
		"contact[geo][lat]": {"1.25"},
		"contact[name]":     {"A=B"},
		"contact[phones]":   {"1", "2"},
		"missed":            {"false"},
		"nothing":           {""},
		"ratio":             {"0.1"},
		"bad":               {"x\xffy"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed\n got %v\nwant %v", got, want)
	}
}

// benchParams is a typical event: strings, numbers, a nested name, a list.
var benchParams = []Param{
	{"event", "call.answered"},
	{"call_id", "c0a8012e-5f3b-4d2a-9c1e-7b6f2d8e4a10"},
	{"from", "+14155550123"},
	{"to", "+442071838750"},
	{"agent.id", int64(4711)},
	{"duration", 12.5},
	{"tags", []any{"sales", "vip", "callback"}},
	{"note", `Customer said "call me back" & hung up <soon>`},
}

func BenchmarkEncode(b *testing.B) {
	opts := Options{RPCMethod: "call.event", RPCID: "01HZX3J8Q4W6Y2N5T7V9B0C1D2"}
	for _, name := range Names() {
		enc := mustLookup(b, name)
		b.Run(name, func(b *testing.B) {
			var buf bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if err := enc.Encode(&buf, benchParams, opts); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(buf.Len()))
		})
	}
}
