package encoders

import (
	"math"
	"testing"
)

func TestJSONRPCEncode(t *testing.T) {
	opts := Options{RPCMethod: "call.answered", RPCID: "d-42"}
	cases := []encodeCase{
		{name: "empty", opts: opts, want: `{"jsonrpc":"2.0","method":"call.answered","params":{},"id":"d-42"}`},
		{name: "params as json", opts: opts, params: []Param{{"b", int64(1)}, {"agent.id", "7"}, {"tags", []any{"x"}}, {"agent.ok", true}, {"n", nil}},
			want: `{"jsonrpc":"2.0","method":"call.answered","params":{"b":1,"agent":{"id":"7","ok":true},"tags":["x"],"n":null},"id":"d-42"}`},
		{name: "escaped method and id", opts: Options{RPCMethod: `a"b<c>`, RPCID: "x\ny\xff"}, params: []Param{{"a", "1"}},
			want: `{"jsonrpc":"2.0","method":"a\"b<c>","params":{"a":"1"},"id":"x\ny\ufffd"}`},
		{name: "empty id kept as string", opts: Options{RPCMethod: "m"}, want: `{"jsonrpc":"2.0","method":"m","params":{},"id":""}`},
		{name: "no method", opts: Options{RPCID: "1"}, params: []Param{{"a", "1"}}, wantErr: "jsonrpc method is empty"},
		{name: "NaN", opts: opts, params: []Param{{"x", []any{math.NaN()}}}, wantErr: `param "x": NaN cannot be encoded`},
		{name: "conflict", opts: opts, params: []Param{{"a", "1"}, {"a.b", "2"}},
			wantErr: `params "a" and "a.b" conflict: "a" cannot be both a value and a parent of nested params`},
	}
	runEncodeCases(t, mustLookup(t, "jsonrpc"), cases)
}

func TestJSONRPCCheckNames(t *testing.T) {
	enc := mustLookup(t, "jsonrpc")
	runCheckCases(t, enc, jsonNameCases(Options{RPCMethod: "m"}))
	runCheckCases(t, enc, []checkCase{
		{name: "no method", names: []string{"a"}, wantErr: "jsonrpc method is empty"},
	})
}
