package callhook

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	// the examples use reverse_proxy and console logs
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/callhook/caddy-callhook/module/intake"
)

func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../caddyfile_examples/*.Caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	return files
}

// TestExamplesAreFormatted: `caddy fmt` finds nothing to change in any
// shipped example, so running one prints no "input is not formatted".
func TestExamplesAreFormatted(t *testing.T) {
	for _, f := range examples(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := caddyfile.Format(raw); !bytes.Equal(got, raw) {
			t.Errorf("%s is not caddy fmt-clean; run: caddy fmt --overwrite %s", filepath.Base(f), f)
		}
	}
}

var envPlaceholder = regexp.MustCompile(`\{env\.([A-Za-z0-9_]+)\}`)

// TestExamplesRenderOnSamples: every webhook of every shipped example
// renders on the sample data of each event it fires on, so copying an
// example makes no dead deliveries on ordinary input.
func TestExamplesRenderOnSamples(t *testing.T) {
	for _, f := range examples(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, _ := os.ReadFile(f)
			for _, m := range envPlaceholder.FindAllStringSubmatch(string(raw), -1) {
				t.Setenv(m[1], "sample-"+strings.ToLower(m[1]))
			}
			var out, errOut bytes.Buffer
			status, err := runRender(renderOptions{config: f, format: "text"}, nil, &out, &errOut)
			if status != 0 {
				t.Errorf("exit %d: %v\n%s", status, err, out.String())
			}
		})
	}
}

// TestSampleEvents: every canonical event has sample data that decodes.
func TestSampleEvents(t *testing.T) {
	h := &Handler{}
	if err := prepareHandler(h, &App{}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range intake.EventNames {
		if len(sampleEvents[ev]) == 0 {
			t.Errorf("no sample for %s", ev)
		}
		for _, b := range sampleEvents[ev] {
			if _, err := decodeRenderData(h, ev, []byte(b)); err != nil {
				t.Errorf("%s sample: %v", ev, err)
			}
		}
	}
}

// TestRenderFlagsSampleFailures: with no --event and --data, render runs
// each webhook on the samples and fails on a when that breaks there.
func TestRenderFlagsSampleFailures(t *testing.T) {
	cfg := tempCaddyfile(t, `:8080 {
	callhook {
		webhook crm {
			on after_call
			url https://crm.example.com/calls
			when "call.duration > 0"
			param id call.call_id
		}
	}
}
`)
	var out, errOut bytes.Buffer
	status, err := runRender(renderOptions{config: cfg, format: "text"}, nil, &out, &errOut)
	if status != exitRenderFailed || err == nil || !strings.Contains(err.Error(), "sample after_call") {
		t.Fatalf("exit %d, %v\n%s", status, err, out.String())
	}
	if !strings.Contains(out.String(), "webhook crm: when:") {
		t.Errorf("the output does not show the failing when:\n%s", out.String())
	}
}

// TestExamplesRenderGETQueryOnce: the routing lookups of the shipped
// examples send the caller once in the query, as `render` shows it.
func TestExamplesRenderGETQueryOnce(t *testing.T) {
	for _, tt := range []struct{ file, event, want string }{
		{"ringostat.Caddyfile", "call_forwarding", "GET https://crm.example.com/api/manager?phone=%2B380501234567\n"},
		{"zadarma.Caddyfile", "before_call", "GET https://crm.example.com/api/route?phone=anonymous\n"},
		{"binotel.Caddyfile", "before_call", "GET https://crm.example.com/api/customers?phone=anonymous\n"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			var out, errOut bytes.Buffer
			f := filepath.Join("..", "caddyfile_examples", tt.file)
			status, err := runRender(renderOptions{config: f, event: tt.event, format: "text"}, nil, &out, &errOut)
			if status != 0 {
				t.Fatalf("exit %d: %v\n%s", status, err, out.String())
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("render does not show %q:\n%s", tt.want, out.String())
			}
		})
	}
}

// TestRenderSamplesLackOptionalFields: the samples include an event with
// only its call_id, so a helper that fails on a missing field (e164 of no
// caller) fails render, naming the param and its line, instead of making
// the first such call's delivery dead on arrival.
func TestRenderSamplesLackOptionalFields(t *testing.T) {
	cfg := tempCaddyfile(t, `:8080 {
	callhook {
		webhook crm {
			on call_answered
			url https://crm.example.com/calls
			param id call.call_id
			param phone "e164(call.caller, 'UA')"
		}
	}
}
`)
	var out, errOut bytes.Buffer
	status, err := runRender(renderOptions{config: cfg, format: "text"}, nil, &out, &errOut)
	if status != exitRenderFailed || err == nil || !strings.Contains(err.Error(), "sample call_answered") {
		t.Fatalf("exit %d, %v\n%s", status, err, out.String())
	}
	if !strings.Contains(out.String(), "sample with only call_id") || !strings.Contains(out.String(), "webhook crm: param phone: a field it uses is missing (nil)") ||
		!strings.Contains(out.String(), "Caddyfile:7") {
		t.Errorf("the output does not name the failing param and its line:\n%s", out.String())
	}
}

// TestRenderPreviewsReply: render shows the answer the caller gets when
// the sync lookup fails (the reply's fallback), and fails naming the
// param when that reply cannot be rendered (the caller would get 500).
func TestRenderPreviewsReply(t *testing.T) {
	var out, errOut bytes.Buffer
	f := filepath.Join("..", "caddyfile_examples", "ringostat.Caddyfile")
	status, err := runRender(renderOptions{config: f, event: "call_forwarding", format: "text"}, nil, &out, &errOut)
	want := "# reply to the caller (target ringostat, event call_forwarding), when no sync webhook answers (every sync.<name> nil)\n" +
		"HTTP 200\nContent-Type: text/plain; charset=utf-8\nCache-Control: no-store\n\n380441112233\n"
	if status != 0 || !strings.Contains(out.String(), want) {
		t.Errorf("exit %d, %v; want %q in\n%s", status, err, want, out.String())
	}

	cfg := tempCaddyfile(t, `:8080 {
	callhook {
		webhook crm {
			on before_call
			sync
			url https://crm.example.com/route
			param caller call.caller
		}
		reply before_call {
			param ext "sync.crm.json.ext"
		}
	}
}
`)
	out.Reset()
	status, err = runRender(renderOptions{config: cfg, event: "before_call", format: "json"}, nil, &out, &errOut)
	if status != exitRenderFailed || err == nil {
		t.Fatalf("exit %d, %v\n%s", status, err, out.String())
	}
	var results []renderResult
	if err := json.Unmarshal(out.Bytes(), &results); err != nil {
		t.Fatal(err)
	}
	last := results[len(results)-1]
	if last.Reply == nil || last.Webhook != "" || !strings.Contains(last.Error, "reply before_call: param ext:") || !strings.Contains(last.Error, "the caller would get 500") {
		t.Errorf("reply preview %+v", last)
	}
}

// tempCaddyfile writes src to a Caddyfile in a temporary directory.
func tempCaddyfile(t *testing.T, src string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}
