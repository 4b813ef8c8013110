package render

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

type escaping int

const (
	escapeNone     escaping = iota
	escapePath              // before '?': path segment escaping
	escapeQuery             // after '?': query escaping
	escapeFragment          // after '#': like query, but a space is %20 ('+' is literal there)
)

// template is text with {param.NAME} holes, parsed once at load.
type template struct {
	parts []part
}

type part struct {
	text   string // literal text, or the param name when isParam
	param  bool
	escape escaping
}

// parseTemplate splits s on {param.NAME}. Any other {placeholder} left
// after {env.*} expansion is an error: it would be sent literally.
func parseTemplate(s string, params []string, esc escaping) (template, error) {
	var t template
	pos := esc // where the text so far has got to: path, query or fragment
	for len(s) > 0 {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t.addText(s, &pos)
			break
		}
		t.addText(s[:i], &pos)
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			// not quoting s: it may be a header value holding a secret
			return template{}, fmt.Errorf("unclosed placeholder: a { at byte %d has no }", i)
		}
		ph := s[i+1 : i+j]
		name, ok := strings.CutPrefix(ph, "param.")
		if !ok {
			return template{}, fmt.Errorf("unknown placeholder {%s}: only {param.NAME} (and {env.NAME}, resolved at load) can be used here", ph)
		}
		if !slices.Contains(params, name) {
			return template{}, fmt.Errorf("{param.%s} names no param of this webhook: declare `param %s <expression>`", name, name)
		}
		t.parts = append(t.parts, part{text: name, param: true, escape: pos})
		s = s[i+j+1:]
	}
	return t, nil
}

// addText appends literal text and moves pos past a '?' or '#' in it.
func (t *template) addText(s string, pos *escaping) {
	if s == "" {
		return
	}
	if *pos != escapeNone {
		if strings.Contains(s, "#") {
			*pos = escapeFragment
		} else if *pos == escapePath && strings.Contains(s, "?") {
			*pos = escapeQuery
		}
	}
	t.parts = append(t.parts, part{text: s})
}

// fill renders the template with value(name) for each param, escaped for
// its position.
func (t template) fill(value func(name string) string) string {
	if len(t.parts) == 1 && !t.parts[0].param {
		return t.parts[0].text
	}
	var b strings.Builder
	for _, p := range t.parts {
		if !p.param {
			b.WriteString(p.text)
			continue
		}
		v := value(p.text)
		switch p.escape {
		case escapePath:
			b.WriteString(url.PathEscape(v))
		case escapeQuery:
			b.WriteString(url.QueryEscape(v))
		case escapeFragment:
			b.WriteString(strings.ReplaceAll(url.QueryEscape(v), "+", "%20"))
		default:
			b.WriteString(v)
		}
	}
	return b.String()
}

func (t template) hasParams() bool {
	for _, p := range t.parts {
		if p.param {
			return true
		}
	}
	return false
}

// inQuery returns the names of the params the query part uses. One used
// only in the path or the fragment (which is never sent) is not there.
func (t template) inQuery() []string {
	var out []string
	for _, p := range t.parts {
		if p.param && p.escape == escapeQuery && !slices.Contains(out, p.text) {
			out = append(out, p.text)
		}
	}
	return out
}
