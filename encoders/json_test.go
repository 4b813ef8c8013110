package encoders

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

func TestJSONEncode(t *testing.T) {
	cases := []encodeCase{
		{name: "empty", params: nil, want: `{}`},
		{name: "declaration order", params: []Param{{"b", "1"}, {"a", "2"}, {"c", "3"}}, want: `{"b":"1","a":"2","c":"3"}`},
		{name: "nesting", params: []Param{{"agent.id", int64(7)}}, want: `{"agent":{"id":7}}`},
		{name: "nesting grouped at first appearance", params: []Param{
			{"a.x", int64(1)}, {"b", int64(2)}, {"a.y", int64(3)}, {"c.d.e", int64(4)}, {"a.z.q", int64(5)}, {"c.f", int64(6)}, {"c.d.g", int64(7)},
		}, want: `{"a":{"x":1,"y":3,"z":{"q":5}},"b":2,"c":{"d":{"e":4,"g":7},"f":6}}`},
		{name: "inner order kept", params: []Param{{"a.z", int64(1)}, {"a.b", int64(2)}}, want: `{"a":{"z":1,"b":2}}`},
		{name: "nil and bools", params: []Param{{"n", nil}, {"t", true}, {"f", false}}, want: `{"n":null,"t":true,"f":false}`},
		{name: "lists", params: []Param{{"tags", []any{"a", int64(1), nil, []any{true}}}, {"e", []any{}}},
			want: `{"tags":["a",1,null,[true]],"e":[]}`},
		{name: "maps sorted", params: []Param{{"m", map[string]any{"z": int64(1), "a": map[string]any{"y": "2", "b": nil}, "é": "3"}}},
			want: `{"m":{"a":{"b":null,"y":"2"},"z":1,"é":"3"}}`},
		{name: "empty map", params: []Param{{"m", map[string]any{}}}, want: `{"m":{}}`},
		{name: "ints", params: []Param{{"max", int64(math.MaxInt64)}, {"min", int64(math.MinInt64)}, {"umax", uint64(math.MaxUint64)}},
			want: `{"max":9223372036854775807,"min":-9223372036854775808,"umax":18446744073709551615}`},
		{name: "floats", params: []Param{{"a", 0.1}, {"b", 1e21}, {"c", 1e20}, {"d", 1e-7}, {"e", 1.5e-6}, {"f", math.Copysign(0, -1)}, {"g", 100.0}, {"h", 1.7976931348623157e308}},
			want: `{"a":0.1,"b":1e+21,"c":100000000000000000000,"d":1e-7,"e":0.0000015,"f":-0,"g":100,"h":1.7976931348623157e+308}`},
		{name: "html not escaped", params: []Param{{"s", "<a href='x'>&</a>"}}, want: `{"s":"<a href='x'>&</a>"}`},
		{name: "escaping", params: []Param{{"q", `say "hi" \ bye`}, {"c", "\r\n\t\b\f\x00\x1f\x7f"}},
			want: `{"q":"say \"hi\" \\ bye","c":"\r\n\t\b\f\u0000\u001f` + "\x7f" + `"}`},
		{name: "unicode literal", params: []Param{{"名前", "Zoë ✓ 😀"}}, want: `{"名前":"Zoë ✓ 😀"}`},
		{name: "line separators escaped", params: []Param{{"s", "a\u2028b\u2029c"}}, want: `{"s":"a\u2028b\u2029c"}`},
		{name: "invalid utf8", params: []Param{{"s\xff", "a\xffb\xc3"}}, want: `{"s\ufffd":"a\ufffdb\ufffd"}`},
		{name: "special names", params: []Param{{`"q"`, int64(1)}, {"a b", int64(2)}}, want: `{"\"q\"":1,"a b":2}`},
		{name: "exotic types", params: exotic,
			want: `{"i":-3,"i32":32,"u8":8,"u64":18446744073709551615,"f32":0.1,"ss":["a","b"],"num":1.50,"str":"S","t":"2024-05-06T07:08:09Z"}`},
		{name: "empty json.Number", params: []Param{{"n", json.Number("")}}, want: `{"n":0}`},
		{name: "bad json.Number", params: []Param{{"n", json.Number("1e")}}, wantErr: `param "n": invalid json.Number "1e"`},
		{name: "NaN", params: []Param{{"a", int64(1)}, {"x.y", math.NaN()}}, wantErr: `param "x.y": NaN cannot be encoded`},
		{name: "Inf in map", params: []Param{{"m", map[string]any{"k": math.Inf(1)}}}, wantErr: `param "m": +Inf cannot be encoded`},
		{name: "duplicate", params: []Param{{"a", "1"}, {"a", "2"}}, wantErr: `param "a" is declared more than once`},
		{name: "nested duplicate", params: []Param{{"a.b", "1"}, {"c", "2"}, {"a.b", "3"}}, wantErr: `param "a.b" is declared more than once`},
		{name: "leaf then prefix", params: []Param{{"agent", "1"}, {"agent.id", "2"}},
			wantErr: `params "agent" and "agent.id" conflict: "agent" cannot be both a value and a parent of nested params`},
		{name: "prefix then leaf", params: []Param{{"a.b.c", "1"}, {"a.b", "2"}},
			wantErr: `params "a.b.c" and "a.b" conflict: "a.b" cannot be both a value and a parent of nested params`},
	}
	runEncodeCases(t, mustLookup(t, "json"), cases)
}

// jsonNameCases is shared by json and jsonrpc (which adds a method).
func jsonNameCases(opts Options) []checkCase {
	return []checkCase{
		{name: "none", names: nil, opts: opts},
		{name: "valid", names: []string{"event", "agent.id", "agent.name", "a.b.c", "a.b.d", "x y", "名前", "a-b"}, opts: opts},
		{name: "empty", names: []string{"a", ""}, opts: opts, wantErr: "param #2: name is empty"},
		{name: "double dot", names: []string{"a..b"}, opts: opts,
			wantErr: `param "a..b": empty name segment (a name cannot start or end with "." or contain "..")`},
		{name: "leading dot", names: []string{".a"}, opts: opts,
			wantErr: `param ".a": empty name segment (a name cannot start or end with "." or contain "..")`},
		{name: "trailing dot", names: []string{"a."}, opts: opts,
			wantErr: `param "a.": empty name segment (a name cannot start or end with "." or contain "..")`},
		{name: "duplicate", names: []string{"a", "b", "a"}, opts: opts, wantErr: `param "a" is declared more than once (#1 and #3)`},
		{name: "leaf and prefix", names: []string{"agent", "agent.id"}, opts: opts,
			wantErr: `params "agent" and "agent.id" conflict: "agent" cannot be both a value and a parent of nested params`},
		{name: "prefix and leaf", names: []string{"agent.id.x", "b", "agent.id"}, opts: opts,
			wantErr: `params "agent.id.x" and "agent.id" conflict: "agent.id" cannot be both a value and a parent of nested params`},
		{name: "invalid utf8", names: []string{"a", "b\xff"}, opts: opts, wantErr: `param "b\xff": name is not valid UTF-8`},
		{name: "similar prefix is fine", names: []string{"agent", "agents.id", "agent_id"}, opts: opts},
	}
}

func TestJSONCheckNames(t *testing.T) {
	runCheckCases(t, mustLookup(t, "json"), jsonNameCases(Options{}))
}

// TestJSONStringMatchesStdlib pins writeJSONString to encoding/json with
// HTML escaping off.
func TestJSONStringMatchesStdlib(t *testing.T) {
	for _, s := range []string{"", "plain", `"\`, "<>&", "\x00\x01\x08\x09\x0a\x0c\x0d\x1f\x7f", "\u2028\u2029", "\xff\xc3(\xed\xa0\x80", "Zoë 😀 \ufffd"} {
		checkJSONString(t, s)
	}
}

func checkJSONString(t testing.TB, s string) {
	t.Helper()
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	writeJSONString(&got, s)
	if got.String()+"\n" != want.String() {
		t.Fatalf("writeJSONString(%q) = %s, encoding/json = %s", s, got.String(), want.String())
	}
}

// TestJSONFloatMatchesStdlib pins number formatting to json.Marshal.
func TestJSONFloatMatchesStdlib(t *testing.T) {
	for _, f := range []float64{0, 1, -1, 0.1, 1e20, 1e21, 123456789e13, 1e-6, 9.99e-7, 1e-7, 5e-324, math.MaxFloat64, -1.5e-9} {
		want, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONFloat(nil, f); string(got) != string(want) {
			t.Errorf("appendJSONFloat(%v) = %s, json.Marshal = %s", f, got, want)
		}
	}
}

func TestJSONNumberValid(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "-12", "1.5", "0.25e10", "1E+2", "1e-2", "123456789012345678901234567890"} {
		if !jsonNumberValid(s) {
			t.Errorf("%q should be valid", s)
		}
	}
	for _, s := range []string{"", "-", "01", "1.", ".5", "1e", "1e+", "+1", "0x1", "1.5.5", "NaN", "1 ", "--1", "1e5e5"} {
		if jsonNumberValid(s) {
			t.Errorf("%q should be invalid", s)
		}
	}
}
