package callhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lineOf is the 1-based line of the first line of s that contains sub.
func lineOf(t *testing.T, s, sub string) int {
	t.Helper()
	for i, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	t.Fatalf("%q not found", sub)
	return 0
}

func TestIndexCaddyfile(t *testing.T) {
	const src = `(hooks) {
	webhook shared {
		on after_call
		url https://h/shared
		param x "call.duration * 2"
	}
}

:80 {
	handle /a/* {
		callhook {
			webhook crm {
				on after_call
				url https://h/a
				header X-Token "t"
				param id call.call_id
				param total "call.duration * 2"   # a
			}
			target alpha
		}
	}
	route /b/* {
		callhook beta {
			import hooks
			webhook crm {
				on after_call
				url https://h/b
				when "call.duration > 0"
				param total "call.duration * 3"   # b
			}
		}
	}
}
`
	path := filepath.Join(t.TempDir(), "Caddyfile")
	lines := indexCaddyfile(path, []byte(src))
	at := func(sub string) string { return fmt.Sprintf("%s:%d", path, lineOf(t, src, sub)) }
	for i, tc := range []struct {
		target, webhook, reason, want string
	}{
		{"alpha", "crm", "webhook crm: param total: invalid operation", at(`"call.duration * 2"   # a`)},
		{"alpha", "crm", "webhook crm: header X-Token: the rendered value contains CR, LF or NUL", at("X-Token")},
		{"alpha", "crm", "webhook crm: url \"x\" is not valid after filling in the params", at("https://h/a")},
		{"alpha", "crm", "webhook crm: something else", at("webhook crm {")},
		{"beta", "crm", "webhook crm: param total: invalid operation", at("# b")},
		{"beta", "crm", "webhook crm: when: invalid operation", at(`when "call.duration > 0"`)},
		{"beta", "shared", "webhook shared: param x: invalid operation", at(`param x "call.duration * 2"`)},
		{"gamma", "crm", "webhook crm: param total: x", ""},
	} {
		if got := lines.locate(tc.target, tc.webhook, tc.reason); got != tc.want {
			t.Errorf("test %d: locate(%s, %s, %q) = %q, want %q", i, tc.target, tc.webhook, tc.reason, got, tc.want)
		}
	}
}

func TestFindHandlers(t *testing.T) {
	cfg := `{"apps":{"http":{"servers":{
		"b":{"routes":[{"handle":[{"handler":"subroute","routes":[{"handle":[{"handler":"callhook","target":"inner"}]}]}]}]},
		"a":{"routes":[{"handle":[{"handler":"callhook","target":"outer"},{"handler":"static_response"}]}]}
	}}}}`
	hs, err := findHandlers([]byte(cfg))
	if err != nil || len(hs) != 2 || hs[0].Target != "outer" || hs[1].Target != "inner" {
		t.Fatalf("handlers %v, %v", hs, err)
	}
	if _, err := findHandlers([]byte(`{"x":{"handler":"callhook","targt":"typo"}}`)); err == nil || !strings.Contains(err.Error(), "targt") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestRunRender(t *testing.T) {
	dir := t.TempDir()
	const caddyfile = `:80 {
	callhook shop {
		event after_call
		webhook crm {
			on after_call
			url https://crm.example.com/c/{param.id}?token=abc
			header Authorization "Bearer {env.CALLHOOK_RENDER_UNIT}"
			param id call.call_id
			param twice "call.duration * 2"
		}
		webhook other {
			on before_call
			url https://h/
			param id call.call_id
		}
	}
}
`
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	config := write("test.Caddyfile", caddyfile)
	jsonConfig := write("config.json", `{"apps":{"http":{"servers":{"s":{"routes":[{"handle":[{"handler":"callhook","target":"j","webhooks":[{"name":"jw","on":["after_call"],"url":"https://h/{param.id}","params":[{"name":"id","expr":"call.call_id"}]}]}]}]}}}}}`)
	full := write("full.json", `{"call_id":"c-1","duration":4}`)
	short := write("short.json", `{"call_id":"c-1"}`)
	t.Setenv("CALLHOOK_RENDER_UNIT", "unit-secret")
	errAt := fmt.Sprintf(", at %s:%d", config, lineOf(t, caddyfile, "param twice"))

	for i, tc := range []struct {
		o        renderOptions
		stdin    string
		code     int
		contains []string
		lacks    []string
	}{
		{o: renderOptions{config: config, event: "after_call", data: full}, code: 0,
			contains: []string{"POST https://crm.example.com/c/c-1?token=[redacted]\n", "Authorization: [redacted]\n", `{"id":"c-1","twice":8}`},
			lacks:    []string{"unit-secret", "abc"}},
		{o: renderOptions{config: config, event: "after_call", data: full, showSecrets: true}, code: 0,
			contains: []string{"Authorization: Bearer unit-secret\n", "token=abc"}},
		{o: renderOptions{config: config, event: "after_call", data: short}, code: exitRenderFailed,
			contains: []string{"NOT RENDERED\n# error: webhook crm: param twice: ", "\n#  | call.duration * 2\n", errAt}},
		{o: renderOptions{config: config, event: "after_call", data: "-", format: "json"}, stdin: "call_id=f&duration=1", code: 0,
			contains: []string{`"body": "{\"id\":\"f\",\"twice\":2}"`, `"error": ""`}},
		{o: renderOptions{config: config, adapter: "caddyfile", event: "before_call", data: full}, code: 0,
			contains: []string{"# no webhook fires on before_call"}},
		{o: renderOptions{config: jsonConfig, event: "after_call", data: full, format: "json"}, code: 0,
			contains: []string{`"url": "https://h/c-1"`, `"target": "j"`}},
		{o: renderOptions{config: jsonConfig, adapter: "nope", event: "after_call", data: full}, code: exitUsage},
		{o: renderOptions{config: config, event: "after_call", data: full, webhook: "other"}, code: exitUsage},
		{o: renderOptions{config: config, event: "after_call", data: full, format: "yaml"}, code: exitUsage},
		{o: renderOptions{config: config, event: "after_call", data: filepath.Join(dir, "missing.json")}, code: exitUsage},
		{o: renderOptions{config: config, event: "after_call", data: "-"}, stdin: "  ", code: exitUsage},
	} {
		if tc.o.format == "" {
			tc.o.format = "text"
		}
		var stdout, stderr bytes.Buffer
		code, err := runRender(tc.o, strings.NewReader(tc.stdin), &stdout, &stderr)
		if code != tc.code || (code == 0) != (err == nil) {
			t.Errorf("test %d: exit %d (%v), want %d\n%s", i, code, err, tc.code, stdout.String())
			continue
		}
		for _, s := range tc.contains {
			if !strings.Contains(stdout.String(), s) {
				t.Errorf("test %d: output lacks %q:\n%s", i, s, stdout.String())
			}
		}
		for _, s := range tc.lacks {
			if strings.Contains(stdout.String(), s) {
				t.Errorf("test %d: output shows %q:\n%s", i, s, stdout.String())
			}
		}
		if tc.o.format == "json" && code != exitUsage && !json.Valid(stdout.Bytes()) {
			t.Errorf("test %d: not JSON: %s", i, stdout.String())
		}
	}
}
