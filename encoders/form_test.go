package encoders

import (
	"math"
	"testing"
)

func TestFormEncode(t *testing.T) {
	cases := []encodeCase{
		{name: "empty", params: nil, want: ""},
		{name: "declaration order", params: []Param{{"b", "1"}, {"a", "2"}, {"c", "3"}}, want: "b=1&a=2&c=3"},
		{name: "nil and empty string", params: []Param{{"x", nil}, {"y", ""}}, want: "x=&y="},
		{name: "bools", params: []Param{{"t", true}, {"f", false}}, want: "t=true&f=false"},
		{name: "list repeats key", params: []Param{{"tags", []any{"a", "b"}}, {"n", int64(1)}}, want: "tags=a&tags=b&n=1"},
		{name: "empty list writes nothing", params: []Param{{"a", "1"}, {"t", []any{}}, {"b", "2"}}, want: "a=1&b=2"},
		{name: "leading empty list", params: []Param{{"t", []any{}}, {"b", "2"}}, want: "b=2"},
		{name: "nested list flattens", params: []Param{{"t", []any{[]any{int64(1), int64(2)}, nil, true}}}, want: "t=1&t=2&t=&t=true"},
		{name: "map php style sorted", params: []Param{{"contact", map[string]any{
			"name": "A", "addr": map[string]any{"zip": "1", "city": "X"}, "tags": []any{"x", "y"},
		}}}, want: "contact%5Baddr%5D%5Bcity%5D=X&contact%5Baddr%5D%5Bzip%5D=1&contact%5Bname%5D=A&contact%5Btags%5D=x&contact%5Btags%5D=y"},
		{name: "map key escaped", params: []Param{{"m", map[string]any{"a b&": int64(1)}}}, want: "m%5Ba+b%26%5D=1"},
		{name: "empty map writes nothing", params: []Param{{"m", map[string]any{}}, {"a", "1"}}, want: "a=1"},
		{name: "bracket name escaped", params: []Param{{"contact[name]", "A"}}, want: "contact%5Bname%5D=A"},
		{name: "dots do not nest", params: []Param{{"agent.id", int64(7)}, {"agent", "x"}}, want: "agent.id=7&agent=x"},
		{name: "ints", params: []Param{{"max", int64(math.MaxInt64)}, {"min", int64(math.MinInt64)}, {"zero", int64(0)}},
			want: "max=9223372036854775807&min=-9223372036854775808&zero=0"},
		{name: "floats plain decimal", params: []Param{{"a", 0.1}, {"b", 1e21}, {"c", 1.5e-7}, {"d", -2.5}, {"e", 100.0}},
			want: "a=0.1&b=1000000000000000000000&c=0.00000015&d=-2.5&e=100"},
		{name: "escaping", params: []Param{{"q", "a&b=c+d e"}, {"h", `<"'>`}, {"nl", "x\r\ny"}, {"pct", "100%"}},
			want: "q=a%26b%3Dc%2Bd+e&h=%3C%22%27%3E&nl=x%0D%0Ay&pct=100%25"},
		{name: "unreserved kept", params: []Param{{"k", "AZaz09-_.~"}}, want: "k=AZaz09-_.~"},
		{name: "unicode", params: []Param{{"名前", "Zoë ✓"}}, want: "%E5%90%8D%E5%89%8D=Zo%C3%AB+%E2%9C%93"},
		{name: "invalid utf8 kept as bytes", params: []Param{{"b", "x\xffy"}, {"n\xfe", "1"}}, want: "b=x%FFy&n%FE=1"},
		{name: "exotic types", params: exotic,
			want: "i=-3&i32=32&u8=8&u64=18446744073709551615&f32=0.1&ss=a&ss=b&num=1.50&str=S&t=2024-05-06T07%3A08%3A09Z"},
		{name: "NaN", params: []Param{{"a", "1"}, {"x", math.NaN()}}, wantErr: `param "x": NaN cannot be encoded`},
		{name: "Inf in list", params: []Param{{"x", []any{1.0, math.Inf(-1)}}}, wantErr: `param "x": -Inf cannot be encoded`},
		{name: "Inf in map", params: []Param{{"m", map[string]any{"k": math.Inf(1)}}}, wantErr: `param "m": +Inf cannot be encoded`},
	}
	runEncodeCases(t, mustLookup(t, "form"), cases)
}

func TestFormCheckNames(t *testing.T) {
	runCheckCases(t, mustLookup(t, "form"), []checkCase{
		{name: "none", names: nil},
		{name: "anything goes", names: []string{"a", "a", "agent.id", "agent", "contact[name]", "a b", ".x."}},
		{name: "empty", names: []string{"a", ""}, wantErr: "param #2: name is empty"},
	})
}

func TestQueryEscapeMatchesStdlib(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "&=+%#?/:;@$,!*'()[]{}<>\"|\\^`", "\x00\x1f\x7f\x80\xff", "Zoë ✓ 名前", "~-_."} {
		checkQueryEscape(t, s)
	}
}
