package mapping

import (
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"

	"github.com/callhook/caddy-callhook/module/intake"
)

// ReplyEnv is what a reply's expressions see (SPEC §9): the event, as for
// params, and `sync`, each sync webhook's answer by name.
type ReplyEnv struct {
	Call    *intake.Call        `expr:"call"`
	Data    map[string]any      `expr:"data"`
	Event   string              `expr:"event"`
	Target  string              `expr:"target"`
	Request *intake.RequestInfo `expr:"request"`
	// Sync maps a sync webhook's name to {status, headers, body, json} when
	// it answered 2xx in time, and to nil otherwise.
	Sync map[string]any `expr:"sync"`
}

// CompileReply compiles a reply param against ReplyEnv and returns the
// sync webhooks it names (sync.NAME or sync["NAME"]), so the caller can
// check that they exist.
func CompileReply(source string) (*Program, []string, error) {
	prog, err := compile(source, Value, ReplyEnv{})
	if err != nil {
		return nil, nil, err
	}
	tree, err := parser.Parse(source)
	if err != nil {
		return nil, nil, err
	}
	v := &syncNames{}
	ast.Walk(&tree.Node, v)
	return prog, v.names, nil
}

type syncNames struct{ names []string }

func (v *syncNames) Visit(n *ast.Node) {
	m, ok := (*n).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "sync" {
		return
	}
	if s, ok := m.Property.(*ast.StringNode); ok {
		v.names = append(v.names, s.Value)
	}
}
