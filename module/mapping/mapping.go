// Package mapping is the expression layer: the environment expressions see,
// compiling and type-checking `param`, `when` and `field` expressions once at
// config load, and running them per event.
package mapping

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/callhook/caddy-callhook/internal/text"
	"github.com/callhook/caddy-callhook/module/intake"
)

// Env is what a param or `when` expression sees (SPEC §4).
type Env struct {
	Call    *intake.Call        `expr:"call"`
	Data    map[string]any      `expr:"data"`
	Event   string              `expr:"event"`
	Target  string              `expr:"target"`
	Request *intake.RequestInfo `expr:"request"`
	Webhook WebhookInfo         `expr:"webhook"`
}

// WebhookInfo is the `webhook` variable.
type WebhookInfo struct {
	Name string `expr:"name"`
}

// FieldEnv is what a `field` mapping sees: the decoded body, before the
// canonical call exists.
type FieldEnv struct {
	Data map[string]any `expr:"data"`
}

// Kind says what an expression must yield.
type Kind int

const (
	// Value expressions may yield anything (params, fields).
	Value Kind = iota
	// Bool expressions must yield a bool (`when`).
	Bool
)

// Limits that keep one expression from taking the process down.
const (
	maxNodes     = 2000
	memoryBudget = 1_000_000
	// maxSource bounds an expression's length. expr's parser recurses once
	// per "(" before it counts nodes, so a megabyte of parentheses in a
	// config overflows the stack, which is fatal, not a panic.
	maxSource = 64 << 10
)

// Program is one compiled expression.
type Program struct {
	source string
	prog   *vm.Program
}

// Source is the expression as written.
func (p *Program) Source() string { return p.source }

// Compile compiles and type-checks an expression against Env. The error
// carries expr's line:column and a caret under the problem.
func Compile(source string, kind Kind) (*Program, error) {
	return compile(source, kind, Env{})
}

// CompileField compiles a `field` mapping expression against FieldEnv.
func CompileField(source string) (*Program, error) {
	return compile(source, Value, FieldEnv{})
}

func compile(source string, kind Kind, env any) (*Program, error) {
	if strings.TrimSpace(source) == "" {
		return nil, errors.New("empty expression")
	}
	if len(source) > maxSource {
		return nil, fmt.Errorf("expression %s is %d bytes long; at most %d are allowed", quoteShort(source), len(source), maxSource)
	}
	opts := []expr.Option{
		expr.Env(env),
		expr.Patch(lenientCoalesce{}),
		expr.Patch(loopBudget{}),
		expr.MaxNodes(maxNodes),
	}
	opts = append(opts, functions...)
	if kind == Bool {
		opts = append(opts, expr.AsBool())
	}
	prog, err := expr.Compile(source, opts...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			shortenSnippet(fe, source)
		}
		return nil, fmt.Errorf("expression %s: %w", quoteShort(source), err)
	}
	return &Program{source: source, prog: prog}, nil
}

// vms are reused across runs: a VM keeps its stack between runs, which
// saves allocations on the per-event hot path.
var vms = sync.Pool{New: func() any { return &vm.VM{MemoryBudget: memoryBudget} }}

// Run evaluates the program. Runtime panics inside expr (and in our
// functions) come back as errors, never as a crash.
func (p *Program) Run(env any) (out any, err error) {
	m := vms.Get().(*vm.VM)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("expression %q panicked: %v", p.source, r)
			m = &vm.VM{MemoryBudget: memoryBudget} // don't reuse a VM in an unknown state
		}
		vms.Put(m)
	}()
	out, err = m.Run(p.prog, env)
	if err != nil {
		if strings.Contains(err.Error(), "memory budget exceeded") {
			return nil, fmt.Errorf("the expression allocates or loops over more than %d values for one event: %w", memoryBudget, err)
		}
		if strings.Contains(err.Error(), "interface {} is nil") {
			// expr's own words only say a conversion failed
			return nil, fmt.Errorf("a field it uses is missing (nil) in this event; give it a fallback with ?? (such as call.caller ?? '') or skip such events with when: %w", err)
		}
		return nil, err
	}
	return out, nil
}

// shortenSnippet cuts expr's copy of the failing line down to a window
// around the caret: expr repeats the whole line, and a dot per column
// under it, which for a long expression is a message of many kilobytes.
func shortenSnippet(fe *file.Error, source string) {
	const width = 120
	lines := strings.Split(source, "\n")
	if fe.Line < 1 || fe.Line > len(lines) {
		return
	}
	line := []rune(strings.ReplaceAll(lines[fe.Line-1], "\t", " "))
	if len(line) <= width || fe.Column < 0 || fe.Column > len(line) {
		return
	}
	start := max(0, min(fe.Column-width/2, len(line)-width))
	end := min(len(line), start+width)
	var pre, post string
	if start > 0 {
		pre = "…"
	}
	if end < len(line) {
		post = "…"
	}
	dots := fe.Column - start + utf8.RuneCountInString(pre)
	fe.Snippet = "\n | " + pre + string(line[start:end]) + post + "\n | " + strings.Repeat(".", dots) + "^"
}

// quoteShort quotes an expression for an error message, shortened: expr's
// own message already shows the line with a caret under the problem.
func quoteShort(source string) string {
	cut, ok := text.Cut(source, 200)
	if !ok {
		return strconv.Quote(source)
	}
	return strconv.Quote(cut) + "…"
}

// RunBool evaluates a Bool program.
func (p *Program) RunBool(env any) (bool, error) {
	out, err := p.Run(env)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("expression %q yielded %T, not bool", p.source, out)
	}
	return b, nil
}

// lenientCoalesce makes member access on the left of `??` nil-safe, so
// `data.crm.name ?? ”` yields ” when data.crm is absent instead of failing
// with "cannot fetch name from <nil>". That is what users mean by `??`.
type lenientCoalesce struct{}

func (lenientCoalesce) Visit(n *ast.Node) {
	b, ok := (*n).(*ast.BinaryNode)
	if !ok || b.Operator != "??" {
		return
	}
	m := &markOptional{}
	ast.Walk(&b.Left, m)
	if _, isChain := b.Left.(*ast.ChainNode); m.found && !isChain {
		ast.Patch(&b.Left, &ast.ChainNode{Node: b.Left})
	}
}

// loopBudget charges every iteration of a predicate (the {...} of all, map,
// filter, reduce, ...) to expr's memory budget, by evaluating a one-element
// range before the body: expr counts ranges against the budget but has no
// step limit, so without this `let r = 1..1000; all(r, {all(r, {all(r,
// {true})})})` runs for minutes while allocating almost nothing. Nested
// loops over big arrays now fail the budget like big allocations do.
type loopBudget struct{}

func (loopBudget) Visit(n *ast.Node) {
	p, ok := (*n).(*ast.PredicateNode)
	if !ok {
		return
	}
	loc := p.Node.Location()
	one := func() ast.Node {
		i := &ast.IntegerNode{Value: 1}
		i.SetLocation(loc)
		return i
	}
	tick := &ast.BinaryNode{Operator: "..", Left: one(), Right: one()}
	tick.SetLocation(loc)
	seq := &ast.SequenceNode{Nodes: []ast.Node{tick, p.Node}}
	seq.SetLocation(loc)
	p.Node = seq
}

type markOptional struct{ found bool }

func (m *markOptional) Visit(n *ast.Node) {
	if mn, ok := (*n).(*ast.MemberNode); ok && !mn.Method {
		mn.Optional = true
		m.found = true
	}
}

// Normalize turns an expression result into the small set of types the
// renderer and encoders handle: nil, string, bool, int64, float64,
// time.Time, []any and map[string]any. Pointers (absent call fields are nil
// pointers) are dereferenced.
func Normalize(v any) any {
	switch x := v.(type) {
	case nil, string, bool, int64, float64, time.Time:
		return x
	case *time.Time:
		if x == nil {
			return nil
		}
		return *x
	case int:
		return int64(x)
	case *string:
		if x == nil {
			return nil
		}
		return *x
	case *int64:
		if x == nil {
			return nil
		}
		return *x
	case *bool:
		if x == nil {
			return nil
		}
		return *x
	case *float64:
		if x == nil {
			return nil
		}
		return *x
	case []string:
		if x == nil {
			return nil
		}
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = Normalize(e)
		}
		return out
	}
	return normalizeReflect(reflect.ValueOf(v))
}

func normalizeReflect(rv reflect.Value) any {
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return Normalize(rv.Elem().Interface())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := rv.Uint()
		if u > 1<<63-1 {
			return float64(u)
		}
		return int64(u)
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.String:
		return rv.String()
	case reflect.Bool:
		return rv.Bool()
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = Normalize(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		if rv.IsNil() {
			return nil
		}
		out := make(map[string]any, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			out[fmt.Sprint(iter.Key().Interface())] = Normalize(iter.Value().Interface())
		}
		return out
	}
	return fmt.Sprint(rv.Interface())
}
