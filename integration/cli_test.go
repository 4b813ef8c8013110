package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// renderCaddyfile has two targets; `billing` fails to render for an event
// without a duration, on the line of its `param total`.
const renderCaddyfile = `{
	admin off
}

http://127.0.0.1:9 {
	handle /shop/* {
		callhook shop {
			webhook crm {
				on after_call
				url https://crm.example.com/calls/{param.call_id}?api_key=query-secret-1&src={param.source}
				header Authorization "Bearer {env.RENDER_TEST_TOKEN}"
				header X-Trace {param.call_id}
				param call_id call.call_id
				param source "call.utm_source ?? 'direct'"
				param started call.start_time
				secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
			}
			webhook billing {
				on after_call
				url https://billing.example.com/calls
				format xml
				xml_root call
				param id call.call_id
				param total "call.duration * 2"
			}
			webhook answered_only {
				on after_call
				url https://crm.example.com/answered
				when "call.disposition == 'answered'"
				param id call.call_id
			}
		}
	}
	handle /other/* {
		callhook other {
			webhook legacy {
				on after_call
				url http://legacy.example.com/hook.php
				method GET
				format form
				param phone call.caller
			}
		}
	}
}
`

type renderItem struct {
	Target  string `json:"target"`
	Event   string `json:"event"`
	Webhook string `json:"webhook"`
	Method  string `json:"method"`
	URL     string `json:"url"`
	Headers []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"headers"`
	Body    string `json:"body"`
	Signed  bool   `json:"signed"`
	Skipped string `json:"skipped"`
	Error   string `json:"error"`
}

func (r renderItem) header(name string) string {
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// TestRenderCLI runs `caddy callhook render` from a built binary.
func TestRenderCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Caddy binary")
	}
	home := t.TempDir()
	bin := buildCaddy(t, home)
	config := filepath.Join(home, "Caddyfile")
	write := func(name, content string) string {
		path := filepath.Join(home, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("Caddyfile", renderCaddyfile)
	full := write("full.json", `{"call_id":"c-1","caller":"+380441234567","duration":30,"start_time":"2026-11-25T10:00:00Z","disposition":"answered"}`)
	short := write("short.json", `{"call_id":"c-2","caller":"+380441234567"}`)
	noCallID := write("no_call_id.json", `{"caller":"+380441234567"}`)
	totalLine := 0
	for i, line := range strings.Split(renderCaddyfile, "\n") {
		if strings.Contains(line, "param total") {
			totalLine = i + 1
		}
	}

	run := func(t *testing.T, stdin string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"callhook", "render"}, args...)...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"), "HOME="+home, "RENDER_TEST_TOKEN=bearer-secret-2")
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), code
	}
	runJSON := func(t *testing.T, wantCode int, args ...string) []renderItem {
		t.Helper()
		stdout, stderr, code := run(t, "", append(args, "--format", "json")...)
		if code != wantCode {
			t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, wantCode, stdout, stderr)
		}
		var items []renderItem
		if err := json.Unmarshal([]byte(stdout), &items); err != nil {
			t.Fatalf("--format json printed no JSON array: %v\n%s", err, stdout)
		}
		return items
	}

	t.Run("text", func(t *testing.T) {
		stdout, stderr, code := run(t, "", "--config", config, "--event", "after_call", "--data", full)
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
		}
		for _, want := range []string{
			"POST https://crm.example.com/calls/c-1?api_key=[redacted]&src=direct\n",
			"Authorization: [redacted]\n",
			"X-Trace: c-1\n",
			"Content-Type: application/json\n",
			"webhook-id: msg_render\n",
			"webhook-signature: v1,<",
			`{"call_id":"c-1","source":"direct","started":"2026-11-25T10:00:00Z"}`,
			`<?xml version="1.0" encoding="UTF-8"?>` + "\n<call><id>c-1</id><total>60</total></call>",
			"GET http://legacy.example.com/hook.php?phone=%2B380441234567\n",
			"# webhook answered_only (target shop, event after_call)\nPOST https://crm.example.com/answered\n",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
		for _, secret := range []string{"bearer-secret-2", "query-secret-1", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
			if strings.Contains(stdout, secret) {
				t.Errorf("output shows the secret %q", secret)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		items := runJSON(t, 0, "--config", config, "--event", "after_call", "--data", full)
		byName := map[string]renderItem{}
		var got []string
		for _, it := range items {
			got = append(got, it.Target+"/"+it.Webhook)
			byName[it.Webhook] = it
			if it.Error != "" || it.Skipped != "" || it.Event != "after_call" {
				t.Errorf("%s: %+v", it.Webhook, it)
			}
		}
		slices.Sort(got)
		if want := "other/legacy shop/answered_only shop/billing shop/crm"; strings.Join(got, " ") != want {
			t.Fatalf("rendered %v, want %s", got, want)
		}
		crm := byName["crm"]
		if crm.Method != "POST" || crm.URL != "https://crm.example.com/calls/c-1?api_key=[redacted]&src=direct" ||
			crm.header("Authorization") != "[redacted]" || crm.header("webhook-id") != "msg_render" ||
			!strings.HasPrefix(crm.header("User-Agent"), "callhook/") || !crm.Signed {
			t.Errorf("crm: %+v", crm)
		}
		if b := byName["billing"]; b.header("Content-Type") != "application/xml; charset=utf-8" || !strings.HasSuffix(b.Body, "<call><id>c-1</id><total>60</total></call>") || b.Signed {
			t.Errorf("billing: %+v", b)
		}
	})

	t.Run("filters and secrets", func(t *testing.T) {
		items := runJSON(t, 0, "--config", config, "--event", "after_call", "--data", full, "--webhook", "crm", "--show-secrets")
		if len(items) != 1 || items[0].Webhook != "crm" {
			t.Fatalf("--webhook crm: %+v", items)
		}
		if got := items[0].header("Authorization"); got != "Bearer bearer-secret-2" {
			t.Errorf("--show-secrets: Authorization %q", got)
		}
		if !strings.Contains(items[0].URL, "api_key=query-secret-1") {
			t.Errorf("--show-secrets: url %s", items[0].URL)
		}
		items = runJSON(t, 0, "--config", config, "--event", "after_call", "--data", full, "--target", "other")
		if len(items) != 1 || items[0].Webhook != "legacy" {
			t.Fatalf("--target other: %+v", items)
		}
		items = runJSON(t, 0, "--config", config, "--event", "before_call", "--data", full)
		if len(items) != 0 {
			t.Errorf("before_call: %+v", items)
		}
	})

	t.Run("stdin, form and when", func(t *testing.T) {
		stdout, stderr, code := run(t, "call_id=f-1&duration=5&disposition=busy", "--config", config, "--event", "after_call", "--data", "-", "--target", "shop", "--format", "json")
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
		}
		var items []renderItem
		if err := json.Unmarshal([]byte(stdout), &items); err != nil || len(items) != 3 {
			t.Fatalf("%v: %s", err, stdout)
		}
		if !strings.Contains(items[1].Body, "<total>10</total>") {
			t.Errorf("form data: billing body %q", items[1].Body)
		}
		if items[2].Webhook != "answered_only" || items[2].Skipped == "" || items[2].URL != "" {
			t.Errorf("when false: %+v", items[2])
		}
	})

	t.Run("render error names the line", func(t *testing.T) {
		wantAt := fmt.Sprintf(", at %s:%d", config, totalLine)
		items := runJSON(t, 1, "--config", config, "--event", "after_call", "--data", short, "--target", "shop")
		if len(items) != 3 {
			t.Fatalf("%+v", items)
		}
		if e := items[1].Error; !strings.HasPrefix(e, "webhook billing: param total: ") || !strings.HasSuffix(e, wantAt) {
			t.Errorf("billing error %q, want it to end with %q", e, wantAt)
		}
		if items[0].Error != "" || items[0].URL == "" {
			t.Errorf("the other webhooks still render: %+v", items[0])
		}
		stdout, stderr, code := run(t, "", "--config", config, "--event", "after_call", "--data", short)
		if code != 1 || !strings.Contains(stdout, "# webhook billing (target shop, event after_call): NOT RENDERED") || !strings.Contains(stdout, wantAt) {
			t.Errorf("text: exit %d\n%s", code, stdout)
		}
		if !strings.Contains(stderr, "1 of 4 webhooks could not be rendered") {
			t.Errorf("stderr: %s", stderr)
		}
	})

	t.Run("JSON config", func(t *testing.T) {
		out, err := exec.Command(bin, "adapt", "--config", config).Output()
		if err != nil {
			t.Fatal(err)
		}
		jsonConfig := write("caddy.json", string(out))
		items := runJSON(t, 1, "--config", jsonConfig, "--event", "after_call", "--data", short, "--webhook", "billing")
		if len(items) != 1 || !strings.HasPrefix(items[0].Error, "webhook billing: param total: ") || strings.Contains(items[0].Error, ", at ") {
			t.Errorf("JSON config: %+v", items)
		}
	})

	t.Run("sample data", func(t *testing.T) {
		// no --data: the event's built-in sample; no --event either: all
		for _, args := range [][]string{{"--config", config, "--event", "after_call"}, {"--config", config}} {
			stdout, stderr, code := run(t, "", args...)
			if code == 2 || !strings.Contains(stdout, "# webhook crm (target shop, event after_call)") {
				t.Errorf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
			}
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			args     []string
			mentions string
		}{
			{"unknown event", []string{"--config", config, "--event", "hangup", "--data", full}, "hangup"},
			{"data without event", []string{"--config", config, "--data", full}, "--event is required with --data"},
			{"no config", []string{"--event", "after_call", "--data", full}, "--config is required"},
			{"missing config", []string{"--config", filepath.Join(home, "nope"), "--event", "after_call", "--data", full}, "reading the config"},
			{"unknown webhook", []string{"--config", config, "--event", "after_call", "--data", full, "--webhook", "nope"}, "billing, crm"},
			{"webhook not on event", []string{"--config", config, "--event", "before_call", "--data", full, "--webhook", "crm"}, "does not fire on before_call"},
			{"unknown target", []string{"--config", config, "--event", "after_call", "--data", full, "--target", "nope"}, "other, shop"},
			{"bad format", []string{"--config", config, "--event", "after_call", "--data", full, "--format", "yaml"}, "--format"},
			{"bad data", []string{"--config", config, "--event", "after_call", "--data", noCallID}, "missing call_id"},
			{"not JSON", []string{"--config", config, "--event", "after_call", "--data", config}, "JSON"},
			{"unknown flag", []string{"--config", config, "--event", "after_call", "--data", full, "--bogus"}, "unknown flag"},
			{"argument", []string{"--config", config, "--event", "after_call", "--data", full, "extra"}, "unexpected argument"},
		} {
			stdout, stderr, code := run(t, "", tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.mentions) {
				t.Errorf("%s: exit %d, want 2 with %q on stderr\nstdout: %s\nstderr: %s", tc.name, code, tc.mentions, stdout, stderr)
			}
		}
	})
}
