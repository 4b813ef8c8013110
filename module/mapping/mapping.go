// Package mapping is the expression layer: the environment expressions see,
// compiling and type-checking `param`, `when` and `field` expressions once at
// config load, and running them per event.
package mapping

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

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
	opts := []expr.Option{
		expr.Env(env),
		expr.Patch(lenientCoalesce{}),
		expr.MaxNodes(maxNodes),
	}
	opts = append(opts, functions...)
	if kind == Bool {
		opts = append(opts, expr.AsBool())
	}
	prog, err := expr.Compile(source, opts...)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", source, err)
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
		return nil, err
	}
	return out, nil
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
