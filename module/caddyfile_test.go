package callhook

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// hostileHandler is a handler block with one webhook whose body is opts.
func hostileHandler(opts string) string {
	return "callhook {\n\twebhook w {\n\t\ton after_call\n\t\turl https://crm.example.com/x\n" + opts + "\n\t}\n}"
}

func unmarshalHandler(src string) (*Handler, error) {
	d, ok := fuzzDispenser(src)
	if !ok {
		return nil, fmt.Errorf("the lexer refuses %.100q", src)
	}
	h := new(Handler)
	return h, h.UnmarshalCaddyfile(d)
}

// TestCaddyfileHostileValues: what a config can hold that would break the
// process or every request fails at load with a message naming the
// webhook, what is wrong and the line.
func TestCaddyfileHostileValues(t *testing.T) {
	tests := []struct {
		name, opts string
		want       []string
	}{
		{"megabyte of parentheses", "\t\tparam x \"" + strings.Repeat("(", 1<<20) + "1" + strings.Repeat(")", 1<<20) + "\"",
			[]string{"webhook w: param x: expression", "bytes long; at most 65536 are allowed", "Caddyfile:5"}},
		{"megabyte of negations in when", "\t\twhen \"" + strings.Repeat("!", 1<<20) + "true\"",
			[]string{"webhook w: when: expression", "bytes long", "Caddyfile:5"}},
		{"too many nodes", "\t\tparam x \"" + strings.Repeat("1 + ", 3000) + "1\"",
			[]string{"webhook w: param x", "exceeds maximum allowed nodes", "Caddyfile:5"}},
		{"control character in a header", "\t\theader X-A \"a\x01b\"",
			[]string{"webhook w: header X-A: the value contains CR, LF, NUL or another control character"}},
		{"line break in a header", "\t\theader X-A \"a\nX-Injected: 1\"",
			[]string{"webhook w: header X-A: the value contains CR, LF, NUL"}},
		{"credentials in the url", "\t\turl https://user:pass@crm.example.com/",
			[]string{"webhook w: url", "credentials in the URL would be logged"}},
		{"unknown placeholder", "\t\turl https://crm.example.com/{http.request.uri}",
			[]string{"webhook w: url: unknown placeholder {http.request.uri}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := unmarshalHandler(hostileHandler(tt.opts))
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %.300q does not mention %q", err, w)
				}
			}
			if len(err.Error()) > 4096 {
				t.Errorf("the error is %d bytes long", len(err.Error()))
			}
		})
	}
	for _, size := range []string{"0", "2TiB", "-1", "1e99", "lots"} {
		if _, err := unmarshalHandler("callhook {\n\tmax_body " + size + "\n}"); err == nil || !strings.Contains(err.Error(), "max_body") {
			t.Errorf("max_body %s: %v", size, err)
		}
	}
}

// TestCaddyfileManyParams: a webhook with a thousand params loads (no limit
// is needed: loading is linear in the params); the cost is logged.
func TestCaddyfileManyParams(t *testing.T) {
	for _, n := range []int{1000, 5000} {
		var opts strings.Builder
		for i := range n {
			fmt.Fprintf(&opts, "\t\tparam p%d.v%d \"call.call_id + '-%d'\"\n", i%20, i, i)
		}
		src := ":8080 {\n" + hostileHandler(opts.String()) + "\n}\n"
		start := time.Now()
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
		if err != nil {
			t.Fatalf("%d params: %v", n, err)
		}
		t.Logf("%d params: Caddyfile of %d KiB adapted in %v to %d KiB of JSON", n, len(src)>>10, time.Since(start), len(out)>>10)
	}
}

// TestProvisionHostileEnv: {env.*} is only known at load, so a header
// value from the environment with a line break is caught by Provision.
func TestProvisionHostileEnv(t *testing.T) {
	t.Setenv("CALLHOOK_TEST_HOSTILE", "tok\r\nX-Injected: 1")
	h, err := unmarshalHandler(hostileHandler("\t\theader Authorization \"Bearer {env.CALLHOOK_TEST_HOSTILE}\""))
	if err != nil {
		t.Fatalf("adapt should pass, the value is unknown then: %v", err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err = h.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "target default: webhook w: header Authorization: the value contains CR, LF") {
		t.Fatalf("Provision error = %v", err)
	}
	if strings.Contains(err.Error(), "X-Injected") {
		t.Errorf("the error quotes the secret value: %v", err)
	}
}

// TestCaddyfileOmitNilAndSecret: omit_nil adapts to "omit_nil": true; a
// value after it, and a whsec_ secret too short for Standard Webhooks, fail
// naming the line.
func TestCaddyfileOmitNilAndSecret(t *testing.T) {
	adapt := func(opts string) (string, error) {
		src := ":8080 {\n" + hostileHandler(opts) + "\n}\n"
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
		return string(out), err
	}
	out, err := adapt("\t\tparam caller call.caller\n\t\tomit_nil")
	if err != nil || !strings.Contains(out, `"omit_nil":true`) {
		t.Errorf("omit_nil: %v\n%s", err, out)
	}
	if _, err := adapt("\t\tomit_nil yes"); err == nil || !strings.Contains(err.Error(), "omit_nil takes no value") || !strings.Contains(err.Error(), "Caddyfile:6") {
		t.Errorf("omit_nil yes: %v", err)
	}
	if _, err := adapt("\t\tsecret whsec_abc"); err == nil || !strings.Contains(err.Error(), "at least 24 bytes") || !strings.Contains(err.Error(), "Caddyfile:6") {
		t.Errorf("secret whsec_abc: %v", err)
	}
}
