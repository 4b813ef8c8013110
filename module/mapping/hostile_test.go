package mapping

import (
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// TestHostileSources: expressions too long or too deep fail to compile with
// a short message; none of them takes the process down. expr's parser
// recurses once per "(" before counting nodes, and a goroutine stack
// overflow is fatal, so the length limit is what stands between a
// megabyte of parentheses and a crash.
func TestHostileSources(t *testing.T) {
	tests := []struct {
		name, src string
		err       string // "" means it compiles
	}{
		{"parens 1M", strings.Repeat("(", 1_000_000) + "1" + strings.Repeat(")", 1_000_000), "bytes long; at most 65536 are allowed"},
		{"parens unclosed 1M", strings.Repeat("(", 1_000_000), "bytes long; at most 65536 are allowed"},
		{"not 1M", strings.Repeat("!", 1_000_000) + "true", "bytes long"},
		{"parens 30k", strings.Repeat("(", 30_000) + "1" + strings.Repeat(")", 30_000), ""},
		{"lists 30k", strings.Repeat("[", 30_000) + "1" + strings.Repeat("]", 30_000), "exceeds maximum allowed nodes"},
		{"not 60k", strings.Repeat("!", 60_000) + "true", "exceeds maximum allowed nodes"},
		{"minus 60k", strings.Repeat("-", 60_000) + "1", "exceeds maximum allowed nodes"},
		{"sum 3000", strings.Repeat("1 + ", 3000) + "1", "exceeds maximum allowed nodes"},
		{"long string", "'" + strings.Repeat("a", 60_000) + "'", ""},
		{"long identifier", strings.Repeat("a", 60_000), "unknown name"},
		{"unclosed string", "'" + strings.Repeat("a", 1000), "literal not terminated"},
		{"invalid utf8", "call.caller + '\xff'", ""},
		{"nul", "call.caller\x00", "unrecognized character: U+0000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.src, Value)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error = %.300v, want %q", err, tt.err)
			}
			// a long source is not echoed back whole (expr's own message
			// may still name a long identifier)
			if len(err.Error()) > 1000 && tt.name != "long identifier" {
				t.Errorf("message is %d bytes long: %.300s", len(err.Error()), err)
			}
		})
	}
}

// TestLoopBudget: every iteration of a predicate counts against the memory
// budget, so loops nested over large arrays end with an error instead of
// running for minutes, and ordinary loops are unaffected.
func TestLoopBudget(t *testing.T) {
	items := make([]any, 2000)
	for i := range items {
		items[i] = int64(i)
	}
	env := testEnv()
	env.Data = map[string]any{"items": items}
	tests := []struct {
		src  string
		want any // nil means a budget error
	}{
		{src: "let r = 1..1000; all(r, {all(r, {all(r, {true})})})"},
		{src: "let r = 1..10000; any(r, {any(r, {# < 0})})"},
		{src: "count(data.items, {let i = #; any(data.items, {# == i + 1}) && any(data.items, {# == i - 1})})"},
		{src: "reduce(1..100000, {reduce(1..100, {#acc + #}, 0) + #acc}, 0)"},
		{src: "len(map(1..100000000, # * 2))"},
		{src: "len(1..999999)", want: 999999},
		{src: "let r = 1..500; count(r, {any(r, {# == 500})})", want: 500},
		{src: "map(call.tags, upper(#))", want: []any{"VIP", "NEW"}},
		{src: "sum(map(data.items, # * 2))", want: int64(3998000)},
		{src: "reduce(1..10, #acc + #, 0)", want: 55},
		{src: "sortBy(call.tags, #)", want: []any{"new", "vip"}},
		{src: "groupBy(1..4, # % 2)[0]", want: []any{2, 4}},
		{src: "len(filter(1..300000, # > 0))", want: 300000},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := Compile(tt.src, Value)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Run(env)
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), "the expression allocates or loops over more than 1000000 values for one event: memory budget exceeded") {
					t.Fatalf("want a budget error, got %v, %v", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g, w := Normalize(got), Normalize(tt.want); !equal(g, w) {
				t.Fatalf("got %#v, want %#v", g, w)
			}
		})
	}
}

// TestPanicsInFunctions: our functions assume the argument types the
// checker let through; when data (typed any) brings another type, the
// panic comes back as an error from Run, and the VM it happened on keeps
// working for the next run.
func TestPanicsInFunctions(t *testing.T) {
	env := testEnv()
	env.Data = map[string]any{"n": int64(7), "list": []any{1}, "s": "x", "m": map[string]any{}}
	tests := []struct{ src, err string }{
		{"digits(data.n)", "interface conversion"},
		{"digits(data.list)", "interface conversion"},
		{"digits(data.missing)", "interface conversion"},
		{"e164(data.n, 'UA')", "interface conversion"},
		{"e164(call.caller ?? '', data.m)", "interface conversion"},
		{"format_date(data.s, 'date')", "format_date: first argument is string, not a time"},
		{"format_date(call.start_time, data.n)", "interface conversion"},
		{"e164(data.s, 'UA')", "e164: \"x\" is not a phone number"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := Compile(tt.src, Value)
			if err != nil {
				t.Fatal(err)
			}
			// in parallel, to catch a VM shared or reused in a broken state
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Go(func() {
					_, errs[i] = p.Run(env)
					ok, _ := Compile("digits('a1b2') == '12'", Bool)
					if b, err := ok.RunBool(env); err != nil || !b {
						errs[i] = err
					}
				})
			}
			wg.Wait()
			for _, err := range errs {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.err)
				}
				if !utf8.ValidString(err.Error()) {
					t.Errorf("message is not UTF-8: %q", err)
				}
			}
		})
	}
}
