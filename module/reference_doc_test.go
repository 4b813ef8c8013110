package callhook

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/callhook/caddy-callhook/module/render"
)

// docKeywords are the Caddyfile keywords the parser accepts: the string
// cases of the switches in the named functions of file (a directive's
// options, its blocks' options, their sub-options).
func docKeywords(t *testing.T, file string, funcs ...string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || !slices.Contains(funcs, fn.Name.Name) {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			cc, ok := n.(*ast.CaseClause)
			if !ok {
				return true
			}
			for _, e := range cc.List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					if !slices.Contains(out, v) {
						out = append(out, v)
					}
				}
			}
			return true
		})
	}
	if len(out) == 0 {
		t.Fatalf("no keywords found in %v of %s: were they renamed?", funcs, file)
	}
	return out
}

// jsonNames are the JSON field names of the config structs, nested ones
// included.
func jsonNames(types ...any) []string {
	var out []string
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || seen[rt] {
			return
		}
		seen[rt] = true
		for i := range rt.NumField() {
			f := rt.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
			walk(f.Type)
		}
	}
	for _, v := range types {
		walk(reflect.TypeOf(v))
	}
	return out
}

// documented reports whether doc shows keyword as a code span or as the
// first word of a line in a code block (the grammar).
func documented(doc, keyword string) bool {
	q := regexp.QuoteMeta(keyword)
	return regexp.MustCompile("`"+q+"[` ]").MatchString(doc) ||
		regexp.MustCompile(`(?m)^\s+`+q+`(\s|$)`).MatchString(doc)
}

// TestReferenceListsEveryOption: docs/reference.md is the full reference, so
// every Caddyfile keyword the parser accepts and every JSON name of the
// config appears in it. A new option fails here until it is documented.
// (`queue nats` has its options in docs/nats.md, which the reference points
// to; they are not checked here.)
func TestReferenceListsEveryOption(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	reference := read("../docs/reference.md")
	checks := []struct {
		doc, docName string
		keywords     []string
	}{
		{reference, "docs/reference.md", docKeywords(t, "caddyfile.go", "parseGlobalOption", "UnmarshalCaddyfile", "parseWebhookOption", "parseReply")},
		{reference, "docs/reference.md", docKeywords(t, "queue_embedded.go", "UnmarshalCaddyfile")},
		{reference, "docs/reference.md", docKeywords(t, "dashboard.go", "UnmarshalCaddyfile")},
	}
	for _, c := range checks {
		t.Logf("keywords: %v", c.keywords)
		for _, k := range c.keywords {
			if !documented(c.doc, k) {
				t.Errorf("Caddyfile keyword %q is not in %s (as `%s` or a grammar line)", k, c.docName, k)
			}
		}
	}
	for _, name := range jsonNames(App{}, EmbeddedQueue{}, Handler{}, Dashboard{}, render.Param{}, render.Header{}) {
		if !strings.Contains(reference, `"`+name+`"`) {
			t.Errorf("JSON name %q is not in docs/reference.md", name)
		}
	}
}
