package render

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

type escaping int

const (
	escapeNone  escaping = iota
	escapePath           // before '?': path segment escaping
	escapeQuery          // after '?': query escaping
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
	inQuery := false
	for len(s) > 0 {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t.addText(s, &inQuery, esc)
			break
		}
		t.addText(s[:i], &inQuery, esc)
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return template{}, fmt.Errorf("unclosed placeholder in %q", s)
		}
		ph := s[i+1 : i+j]
		name, ok := strings.CutPrefix(ph, "param.")
		if !ok {
			return template{}, fmt.Errorf("unknown placeholder {%s}: only {param.NAME} (and {env.NAME}, resolved at load) can be used here", ph)
		}
		if !slices.Contains(params, name) {
			return template{}, fmt.Errorf("{param.%s} names no param of this webhook: declare `param %s <expression>`", name, name)
		}
		e := esc
		if esc == escapePath && inQuery {
			e = escapeQuery
		}
		t.parts = append(t.parts, part{text: name, param: true, escape: e})
		s = s[i+j+1:]
	}
	return t, nil
}

func (t *template) addText(s string, inQuery *bool, esc escaping) {
	if s == "" {
		return
	}
	if esc == escapePath && strings.ContainsAny(s, "?#") {
		*inQuery = true
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
