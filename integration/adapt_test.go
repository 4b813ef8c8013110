package integration

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

var update = flag.Bool("update", false, "rewrite the golden adapt fixtures")

func adapt(t *testing.T, name string, src []byte) ([]byte, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": name})
	return out, err
}

// TestExamples adapts every file in caddyfile_examples/, compares the JSON
// with its golden fixture, and validates it (every module provisioned, every
// expression compiled), as `caddy adapt` and `caddy validate` would.
func TestExamples(t *testing.T) {
	// the secrets the examples take from the environment
	for _, k := range []string{"PBX_TOKEN", "CRM_TOKEN", "CRM_WEBHOOK_SECRET", "CRM_WEBHOOK_SECRET_OLD", "TWILIO_HOOK_TOKEN", "CALLHOOK_SECRET_KEY"} {
		t.Setenv(k, "test-"+strings.ToLower(k))
	}
	files, err := filepath.Glob("../caddyfile_examples/*.Caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".Caddyfile")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := adapt(t, f, src)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := filepath.Join("testdata", "examples", name+".json")
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("golden fixture missing (run go test ./integration -run TestExamples -update): %v", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("adapted JSON differs from %s (run with -update if the change is intended):\n%s", golden, pretty.String())
			}
			var cfg caddy.Config
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&cfg); err != nil {
				t.Fatalf("validate: %v", err)
			}
		})
	}
}

// TestLoadErrors: configs that would misbehave fail at adapt or validate,
// with a message that names the webhook, what is wrong and the line of the
// option at fault (the webhook's own line only when no option is).
func TestLoadErrors(t *testing.T) {
	hook := func(body string) string {
		return "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl https://example.com/x\n" + body + "\n\t\t}\n\t}\n}\n"
	}
	tests := []struct {
		name, src string
		want      []string
	}{
		{"expression typo", hook("\t\t\tparam x call.calller"), []string{"webhook w: param x", "has no field calller", "Caddyfile:9"}},
		{"type error", hook("\t\t\tparam x \"call.duration + 'a'\""), []string{"param x", "mismatched types", "Caddyfile:9"}},
		{"unquoted expression", hook("\t\t\tparam x call.duration > 0"), []string{"quote it", "Caddyfile:9"}},
		{"when not bool", hook("\t\t\twhen call.duration"), []string{"webhook w: when", "bool", "Caddyfile:9"}},
		{"bad method", hook("\t\t\tmethod PATCH"), []string{"unsupported method \"PATCH\"", "Caddyfile:9"}},
		{"bad format", hook("\t\t\tformat yaml"), []string{"unknown format \"yaml\"", "Caddyfile:9"}},
		{"bad event", hook("\t\t\ton hangup"), []string{"unknown event \"hangup\"", "Caddyfile:9"}},
		{"bad date format", hook("\t\t\tdate_format YYYY-MM-DD"), []string{"formats no date or time component", "Caddyfile:9"}},
		{"bad timezone", hook("\t\t\ttimezone Mars/Olympus"), []string{"unknown timezone", "Caddyfile:9"}},
		{"bad xml name", hook("\t\t\tformat xml\n\t\t\tparam \"agent id\" call.agent_id"), []string{"webhook w", "agent id", "Caddyfile:10"}},
		{"json leaf and prefix", hook("\t\t\tparam agent call.agent_id\n\t\t\tparam agent.id call.agent_id"), []string{"webhook w", "agent", "Caddyfile:6"}},
		{"unknown url param", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl https://example.com/{param.nope}\n\t\t}\n\t}\n}\n", []string{"webhook w", "{param.nope}", "Caddyfile:8"}},
		{"bad url scheme", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl ftp://example.com/x\n\t\t}\n\t}\n}\n", []string{"webhook w", "http or https", "Caddyfile:8"}},
		{"forbidden header", hook("\t\t\theader Host evil.example.com"), []string{"webhook w", "header Host cannot be set", "Caddyfile:9"}},
		{"webhook header", hook("\t\t\theader webhook-id x"), []string{"webhook-id", "Caddyfile:9"}},
		{"get with json", hook("\t\t\tmethod GET"), []string{"method GET sends no body", "Caddyfile:9"}},
		{"backoff order", hook("\t\t\tbackoff 1h 1s"), []string{"shorter than the first", "Caddyfile:9"}},
		{"no events", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\turl https://example.com/x\n\t\t}\n\t}\n}\n", []string{"webhook w", "no events", "Caddyfile:6"}},
		{"duplicate names", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl https://a.example/x\n\t\t}\n\t\twebhook w {\n\t\t\ton before_call\n\t\t\turl https://a.example/x\n\t\t}\n\t}\n}\n", []string{"webhook name w is used twice"}},
		{"too many webhooks", tooMany(41), []string{"event after_call has 41 webhooks", "at most 40", "target default"}},
		{"unknown subdirective", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhok w\n\t}\n}\n", []string{"unknown callhook subdirective \"webhok\"", "Caddyfile:6"}},
		{"bad field", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\tfield phone data.x\n\t}\n}\n", []string{"field phone: not a canonical call field", "Caddyfile:6"}},
		{"bad input", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\tinput asterisk\n\t}\n}\n", []string{"unknown input preset \"asterisk\"", "Caddyfile:6"}},
		{"bad allow", "{\n\tcallhook {\n\t\tallow_destinations 10.0.0.0/33\n\t}\n}\n:8080 {\n\trespond 200\n}\n", []string{"allow_destinations", "10.0.0.0/33", "Caddyfile:3"}},
		{"loopback url", urlHook("", "http://127.0.0.1:8080/x"), []string{"webhook w", "url host 127.0.0.1 is loopback", "allow_destinations", "Caddyfile:10"}},
		{"localhost url", urlHook("", "http://localhost/x"), []string{"webhook w", "url host localhost is loopback", "allow_destinations", "Caddyfile:10"}},
		{"metadata url", urlHook("", "http://169.254.169.254/latest"), []string{"cloud metadata", "allow_destinations", "Caddyfile:10"}},
		{"private url outside allow", urlHook("allow_destinations 10.1.0.0/16", "https://10.2.0.1/x"), []string{"url host 10.2.0.1 is private", "allow_destinations", "Caddyfile:10"}},
		{"sync with ordered", syncCfg("\t\t\tordered", ""), []string{"webhook crm: sync and ordered cannot be combined", "Caddyfile:8"}},
		{"sync timeout", syncCfg("\t\t\ttimeout 31s", ""), []string{"webhook crm: timeout 31s is more than 30s", "Caddyfile:10"}},
		{"sync retried", syncCfg("\t\t\tmax_attempts 3", ""), []string{"webhook crm: max_attempts: a sync webhook is called once", "Caddyfile:10"}},
		{"reply unknown sync", syncCfg("", "\t\treply before_call {\n\t\t\tparam ext \"sync.crn?.json ?? ''\"\n\t\t}"), []string{"reply before_call: sync.crn names no webhook", "crm", "Caddyfile:11"}},
		{"reply async webhook", syncCfg("", "\t\twebhook log {\n\t\t\ton before_call\n\t\t\turl https://log.example/r\n\t\t}\n\t\treply before_call {\n\t\t\tparam ext \"sync.log?.json ?? ''\"\n\t\t}"), []string{"sync.log: webhook log is not a sync webhook", "Caddyfile:15"}},
		{"reply without sync webhook", syncCfg("", "\t\treply after_call {\n\t\t\tparam ext \"'1'\"\n\t\t}"), []string{"reply after_call: no sync webhook handles after_call", "Caddyfile:11"}},
		{"two replies", syncCfg("", "\t\treply before_call {\n\t\t\tparam a \"'1'\"\n\t\t}\n\t\treply before_call {\n\t\t\tparam a \"'2'\"\n\t\t}"), []string{"reply before_call: a second reply for the same event", "Caddyfile:14"}},
		{"text reply params", syncCfg("", "\t\treply before_call {\n\t\t\tformat text\n\t\t\tparam a \"'1'\"\n\t\t\tparam b \"'2'\"\n\t\t}"), []string{"format text writes exactly one param", "Caddyfile:11"}},
		{"reply expression typo", syncCfg("", "\t\treply before_call {\n\t\t\tparam a call.calller\n\t\t}"), []string{"reply before_call: param a", "calller", "Caddyfile:12"}},
		{"verify vendor", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\tverify binotel x\n\t}\n}\n", []string{"verify takes a vendor and its secret", "Caddyfile:6"}},
		{"verify no secret", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\tverify twilio\n\t}\n}\n", []string{"verify twilio <auth_token>", "Caddyfile:6"}},
		{"verify public url", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\tverify twilio tok public.example.com/x\n\t}\n}\n", []string{"verify twilio: public URL", "Caddyfile:6"}},
		{"verify twice", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\tverify zadarma a\n\t\tverify zadarma b\n\t}\n}\n", []string{"verify zadarma is set twice", "Caddyfile:7"}},
		{"allow_sources cidr", "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\tallow_sources 10.0.0.0/40\n\t}\n}\n", []string{"allow_sources", "10.0.0.0/40", "Caddyfile:6"}},
		{"bad rate_limit", hook("\t\t\trate_limit 20/h"), []string{"webhook w: rate_limit \"20/h\"", "unknown unit", "such as 20/s or 600/m", "Caddyfile:9"}},
		{"rate_limit not a number", hook("\t\t\trate_limit fast"), []string{"rate_limit \"fast\"", "such as 20/s or 600/m", "Caddyfile:9"}},
		{"rate_limit zero", hook("\t\t\trate_limit 0/s"), []string{"not a positive whole number", "Caddyfile:9"}},
		{"bad concurrency", hook("\t\t\tconcurrency -1"), []string{"webhook w: concurrency", "in flight at once", "Caddyfile:9"}},
		{"bad disable_after", hook("\t\t\tdisable_after soon"), []string{"disable_after \"soon\"", "Caddyfile:9"}},
		{"ordered with a value", hook("\t\t\tordered yes"), []string{"ordered takes no value", "Caddyfile:9"}},
		{"short secret_key", "{\n\tcallhook {\n\t\tsecret_key abc\n\t}\n}\n:8080 {\n\trespond 200\n}\n", []string{"secret_key is 3 characters", "Caddyfile:3"}},
		{"unknown global option", "{\n\tcallhook {\n\t\tworkerz 4\n\t}\n}\n:8080 {\n\trespond 200\n}\n", []string{"unknown callhook option \"workerz\"", "Caddyfile:3"}},
		// inside handle, Caddy appends the block's own location after callhook's
		{"inside handle", "{\n\tcallhook\n}\n:8080 {\n\thandle /hooks/* {\n\t\tcallhook {\n\t\t\twebhook w {\n\t\t\t\ton after_call\n\t\t\t\turl https://example.com/{param.nope}\n\t\t\t}\n\t\t}\n\t}\n}\n", []string{"{param.nope}", "at Caddyfile:9, at Caddyfile:12"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(t, "Caddyfile", []byte(tt.src))
			if err == nil {
				t.Fatalf("adapted without error:\n%s", tt.src)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// syncCfg is a config with the sync webhook crm on before_call (extra goes
// into it) and then the handler lines in rest.
func syncCfg(extra, rest string) string {
	if extra != "" {
		extra = "\n" + extra
	}
	return "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook crm {\n\t\t\ton before_call\n\t\t\tsync\n\t\t\turl https://crm.example/r" + extra + "\n\t\t}\n" + rest + "\n\t}\n}\n"
}

// urlHook is a config with one webhook calling url, and globals in the
// callhook global option.
func urlHook(globals, url string) string {
	return "{\n\tcallhook {\n\t\t" + globals + "\n\t}\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl " + url + "\n\t\t}\n\t}\n}\n"
}

// TestAllowedDestinations: a literal internal host inside allow_destinations
// adapts and validates; a host from a param is left to the dial-time guard.
func TestAllowedDestinations(t *testing.T) {
	for _, src := range []string{
		urlHook("allow_destinations 127.0.0.1/32", "http://127.0.0.1:8080/x"),
		urlHook("allow_destinations 127.0.0.1/32", "http://localhost:8080/x"),
		urlHook("allow_destinations 10.0.0.0/8", "https://10.2.0.1/x"),
		strings.Replace(urlHook("", "http://{param.host}/x"), "\t\t\ton after_call", "\t\t\ton after_call\n\t\t\tmethod GET\n\t\t\tformat form\n\t\t\tparam host data.host", 1),
	} {
		out, err := adapt(t, "Caddyfile", []byte(src))
		if err != nil {
			t.Errorf("adapt: %v\n%s", err, src)
			continue
		}
		var cfg caddy.Config
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		if err := caddy.Validate(&cfg); err != nil {
			t.Errorf("validate: %v\n%s", err, src)
		}
	}
}

func tooMany(n int) string {
	var b strings.Builder
	b.WriteString("{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n")
	for i := 0; i < n; i++ {
		b.WriteString("\t\twebhook w" + strings.Repeat("x", i) + " {\n\t\t\ton after_call\n\t\t\turl https://example.com/x\n\t\t}\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// TestJSONLoadErrors: the same checks hold for Caddy JSON, at provision time.
func TestJSONLoadErrors(t *testing.T) {
	tests := []struct {
		name, handler, want string
	}{
		{"typo", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://e.example/x","params":[{"name":"p","expr":"call.calller"}]}]}`, "webhook w: param p"},
		{"format", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://e.example/x","format":"yaml"}]}`, "unknown format"},
		{"token env empty", `{"handler":"callhook","token":"{env.CALLHOOK_SURELY_UNSET}"}`, "token: {env.CALLHOOK_SURELY_UNSET} is not set"},
		// an unset secret would send unsigned webhooks, an unset header `Bearer `
		{"secret env unset", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://e.example/x","secret":"{env.CALLHOOK_SURELY_UNSET}"}]}`, "webhook w: secret: {env.CALLHOOK_SURELY_UNSET} is not set"},
		{"header env unset", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://e.example/x","headers":[{"name":"Authorization","value":"Bearer {env.CALLHOOK_SURELY_UNSET}"}]}]}`, "webhook w: header Authorization: {env.CALLHOOK_SURELY_UNSET} is not set"},
		{"rate_limit", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://e.example/x","rate_limit":"5 per second"}]}`, "webhook w: rate_limit \"5 per second\""},
		{"concurrency", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://e.example/x","concurrency":-2}]}`, "webhook w: concurrency -2"},
		{"rotated secret without a current one", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://e.example/x","rotated_secrets":["old"]}]}`, "secret <new> <old>"},
		{"url env unset", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://{env.CALLHOOK_SURELY_UNSET}/x"}]}`, "webhook w: url: {env.CALLHOOK_SURELY_UNSET} is not set"},
		{"loopback url", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"http://127.0.0.1:9/x"}]}`, "webhook w: url host 127.0.0.1 is loopback, which the SSRF guard refuses: add 127.0.0.1/32 to allow_destinations"},
		{"localhost url", `{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"http://localhost/x"}]}`, "allow_destinations"},
		{"reply unknown sync", `{"handler":"callhook","webhooks":[{"name":"crm","on":["before_call"],"sync":true,"url":"https://crm.example/r"}],"replies":[{"event":"before_call","params":[{"name":"x","expr":"sync.nope ?? 1"}]}]}`, "reply before_call: sync.nope names no webhook"},
		{"sync with ordered", `{"handler":"callhook","webhooks":[{"name":"crm","on":["before_call"],"sync":true,"ordered":true,"url":"https://crm.example/r"}]}`, "sync and ordered cannot be combined"},
		{"verify env empty", `{"handler":"callhook","verify":[{"vendor":"twilio","secret":"{env.CALLHOOK_SURELY_UNSET}"}]}`, "verify twilio: the secret"},
		{"verify vendor", `{"handler":"callhook","verify":[{"vendor":"binotel","secret":"x"}]}`, "unknown vendor"},
		{"allow_sources", `{"handler":"callhook","allow_sources":["300.1.1.1"]}`, "allow_sources"},
		{"reply without sync", `{"handler":"callhook","replies":[{"event":"after_call","params":[{"name":"x","expr":"1"}]}]}`, "no sync webhook handles after_call"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[` + tt.handler + `]}]}}}}}`
			var c caddy.Config
			if err := json.Unmarshal([]byte(cfg), &c); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate error = %v, want %q", err, tt.want)
			}
		})
	}
}
