package encoders

import (
	"bytes"
	"encoding/xml"
	"math"
	"testing"
)

const xh = `<?xml version="1.0" encoding="UTF-8"?>` + "\n"

func TestXMLEncode(t *testing.T) {
	cases := []encodeCase{
		{name: "empty", want: xh + `<webhook></webhook>`},
		{name: "custom root", opts: Options{XMLRoot: "call-event"}, params: []Param{{"a", "1"}}, want: xh + `<call-event><a>1</a></call-event>`},
		{name: "declaration order", params: []Param{{"b", "1"}, {"a", "2"}}, want: xh + `<webhook><b>1</b><a>2</a></webhook>`},
		{name: "nesting grouped", params: []Param{{"agent.id", int64(7)}, {"event", "x"}, {"agent.name", "Bob"}, {"agent.team.id", int64(3)}},
			want: xh + `<webhook><agent><id>7</id><name>Bob</name><team><id>3</id></team></agent><event>x</event></webhook>`},
		{name: "nil and bools", params: []Param{{"n", nil}, {"e", ""}, {"t", true}, {"f", false}},
			want: xh + `<webhook><n></n><e></e><t>true</t><f>false</f></webhook>`},
		{name: "list repeats element", params: []Param{{"tags", []any{"a", "b", []any{"c"}}}, {"none", []any{}}, {"x", "1"}},
			want: xh + `<webhook><tags>a</tags><tags>b</tags><tags>c</tags><x>1</x></webhook>`},
		{name: "nested list", params: []Param{{"a.tags", []any{int64(1), nil}}},
			want: xh + `<webhook><a><tags>1</tags><tags></tags></a></webhook>`},
		{name: "map children sorted", params: []Param{{"contact", map[string]any{"name": "A", "addr": map[string]any{"city": "X"}, "ph": []any{"1", "2"}, "v.2": nil}}},
			want: xh + `<webhook><contact><addr><city>X</city></addr><name>A</name><ph>1</ph><ph>2</ph><v.2></v.2></contact></webhook>`},
		{name: "list of maps", params: []Param{{"leg", []any{map[string]any{"n": int64(1)}, map[string]any{}}}},
			want: xh + `<webhook><leg><n>1</n></leg><leg></leg></webhook>`},
		{name: "numbers", params: []Param{{"max", int64(math.MaxInt64)}, {"umax", uint64(math.MaxUint64)}, {"a", 0.1}, {"b", 1e21}, {"c", 1.5e-7}},
			want: xh + `<webhook><max>9223372036854775807</max><umax>18446744073709551615</umax><a>0.1</a><b>1000000000000000000000</b><c>0.00000015</c></webhook>`},
		{name: "escaping", params: []Param{{"s", `a&b<c>d"e'f`}, {"ws", "x\r\ny\tz"}},
			want: xh + `<webhook><s>a&amp;b&lt;c&gt;d&#34;e&#39;f</s><ws>x&#xD;&#xA;y&#x9;z</ws></webhook>`},
		{name: "unicode", params: []Param{{"s", "Zoë ✓ 😀 名前"}}, want: xh + `<webhook><s>Zoë ✓ 😀 名前</s></webhook>`},
		{name: "invalid utf8 replaced", params: []Param{{"s", "a\xffb\xc3"}}, want: xh + "<webhook><s>a\uFFFDb\uFFFD</s></webhook>"},
		{name: "forbidden chars replaced", params: []Param{{"s", "a\x00b\x08c\x1f\uFFFE\uFFFF\ud7ff"}},
			want: xh + "<webhook><s>a\uFFFDb\uFFFDc\uFFFD\uFFFD\uFFFD\ud7ff</s></webhook>"},
		{name: "exotic types", params: exotic,
			want: xh + `<webhook><i>-3</i><i32>32</i32><u8>8</u8><u64>18446744073709551615</u64><f32>0.1</f32><ss>a</ss><ss>b</ss><num>1.50</num><str>S</str><t>2024-05-06T07:08:09Z</t></webhook>`},
		{name: "bad name", params: []Param{{"agent id", "1"}},
			wantErr: `param "agent id": "agent id" is not a valid XML element name (spaces are not allowed)`},
		{name: "bad segment", params: []Param{{"a.1b", "1"}},
			wantErr: `param "a.1b": "1b" is not a valid XML element name (it must start with a letter or "_")`},
		{name: "empty segment", params: []Param{{"a..b", "1"}},
			wantErr: `param "a..b": "" is not a valid XML element name (name is empty)`},
		{name: "bad map key", params: []Param{{"contact", map[string]any{"ok": "1", "first name": "A"}}},
			wantErr: `param "contact": map key: "first name" is not a valid XML element name (spaces are not allowed)`},
		{name: "bad root", opts: Options{XMLRoot: "a:b"},
			wantErr: `xml root: "a:b" is not a valid XML element name (':' is not allowed)`},
		{name: "NaN", params: []Param{{"x", math.NaN()}}, wantErr: `param "x": NaN cannot be encoded`},
		{name: "conflict", params: []Param{{"a.b", "1"}, {"a", "2"}},
			wantErr: `params "a.b" and "a" conflict: "a" cannot be both a value and a parent of nested params`},
		{name: "duplicate", params: []Param{{"a", "1"}, {"a", "2"}}, wantErr: `param "a" is declared more than once`},
	}
	runEncodeCases(t, mustLookup(t, "xml"), cases)
}

func TestXMLCheckNames(t *testing.T) {
	runCheckCases(t, mustLookup(t, "xml"), []checkCase{
		{name: "none", names: nil},
		{name: "valid", names: []string{"event", "agent.id", "agent.name", "_x", "a-b_c9", "Call"}},
		{name: "valid root", names: []string{"a"}, opts: Options{XMLRoot: "call.event-v1"}},
		{name: "space", names: []string{"agent id"},
			wantErr: `param "agent id": "agent id" is not a valid XML element name (spaces are not allowed)`},
		{name: "digit first", names: []string{"agent.1st"},
			wantErr: `param "agent.1st": "1st" is not a valid XML element name (it must start with a letter or "_")`},
		{name: "dash first", names: []string{"-a"},
			wantErr: `param "-a": "-a" is not a valid XML element name (it must start with a letter or "_")`},
		{name: "xml prefix", names: []string{"a.XmlThing"},
			wantErr: `param "a.XmlThing": "XmlThing" is not a valid XML element name (names starting with "xml" are reserved)`},
		{name: "colon", names: []string{"ns:a"},
			wantErr: `param "ns:a": "ns:a" is not a valid XML element name (':' is not allowed)`},
		{name: "non ascii", names: []string{"naïve"},
			wantErr: `param "naïve": "naïve" is not a valid XML element name (only ASCII letters, digits, "-" and "_" are allowed)`},
		{name: "brackets", names: []string{"contact[name]"},
			wantErr: `param "contact[name]": "contact[name]" is not a valid XML element name ('[' is not allowed)`},
		{name: "empty", names: []string{""}, wantErr: "param #1: name is empty"},
		{name: "empty segment", names: []string{"a..b"},
			wantErr: `param "a..b": empty name segment (a name cannot start or end with "." or contain "..")`},
		{name: "duplicate", names: []string{"a", "a"}, wantErr: `param "a" is declared more than once (#1 and #2)`},
		{name: "leaf and prefix", names: []string{"agent", "agent.id"},
			wantErr: `params "agent" and "agent.id" conflict: "agent" cannot be both a value and a parent of nested params`},
		{name: "bad root", names: []string{"a"}, opts: Options{XMLRoot: "1root"},
			wantErr: `xml root: "1root" is not a valid XML element name (it must start with a letter or "_")`},
		{name: "xml root reserved", names: []string{"a"}, opts: Options{XMLRoot: "xmlData"},
			wantErr: `xml root: "xmlData" is not a valid XML element name (names starting with "xml" are reserved)`},
	})
}

// TestXMLTextMatchesStdlib pins writeXMLText to xml.EscapeText.
func TestXMLTextMatchesStdlib(t *testing.T) {
	for _, s := range []string{"", "plain", `&<>"'`, "\t\r\n", "\x00\x01\x1f\x7f", "\xff\xc3(", "\ufffd\ufffe\uffff", "\U0010ffff 😀 Zoë"} {
		checkXMLText(t, s)
	}
}

func checkXMLText(t testing.TB, s string) {
	t.Helper()
	var want, got bytes.Buffer
	if err := xml.EscapeText(&want, []byte(s)); err != nil {
		t.Fatal(err)
	}
	writeXMLText(&got, s)
	if got.String() != want.String() {
		t.Fatalf("writeXMLText(%q) = %q, xml.EscapeText = %q", s, got.String(), want.String())
	}
}
