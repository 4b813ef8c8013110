package callhook

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
)

func TestDashboardTargetCaddyfile(t *testing.T) {
	for _, tc := range []struct{ src, target, err string }{
		{"callhook_dashboard {\n\ttarget {http.auth.user.id}\n}", "{http.auth.user.id}", ""},
		{"callhook_dashboard {\n\tread_only\n\ttarget acme\n}", "acme", ""},
		{"callhook_dashboard {\n\ttarget\n}", "", "target needs a value: the target to show, a literal or a placeholder such as {http.auth.user.id}, at Testfile:2"},
		{"callhook_dashboard {\n\ttarget \"\"\n}", "", "target is empty"},
		{"callhook_dashboard {\n\ttarget a b\n}", "", "target takes one value, got also \"b\""},
		{"callhook_dashboard {\n\ttarget a\n\ttarget b\n}", "", "target is set twice"},
		{"callhook_dashboard {\n\ttargets a\n}", "", "expected read_only or target"},
	} {
		d := new(Dashboard)
		err := d.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.src))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.src, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.err)
		case tc.err == "" && d.Target != tc.target:
			t.Errorf("%q: target %q, want %q", tc.src, d.Target, tc.target)
		}
	}
}

func TestMatchRouteWebhook(t *testing.T) {
	for path, want := range map[string]string{
		"/portal/webhooks/acme/crm":        "webhook acme|crm 3",
		"/webhooks/acme/crm%2Fv2/test":     "test acme|crm/v2 4",
		"/portal/webhooks/acme/crm/resume": "resume acme|crm 4",
		"/webhooks/acme/":                  "",
	} {
		r, ok := matchRoute(segments(path))
		got := ""
		if ok && (r.name == "webhook" || r.name == "test" || r.name == "resume") {
			got = r.name + " " + strings.Join(r.args, "|") + " " + string(rune('0'+r.depth))
		}
		if got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if a := (dashRoute{name: "test", args: []string{"acme", "crm"}}).action(); a != "webhooks/acme/crm/test" {
		t.Errorf("test action %q", a)
	}
}

// TestScopeOf: a placeholder is replaced per request; empty or still a
// placeholder is 403, never every target.
func TestScopeOf(t *testing.T) {
	h := &Dashboard{Target: "{http.auth.user.id}", logger: zap.NewNop(), svc: &adminService{logger: zap.NewNop()}}
	req := func(user string) (string, error) {
		r := httptest.NewRequest("GET", "/portal/", nil)
		repl := caddy.NewReplacer()
		if user != "" {
			repl.Set("http.auth.user.id", user)
		}
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		return h.scopeOf(r)
	}
	// Without a running engine every target is taken as known (the pages
	// answer 503 by themselves).
	if s, err := req("acme"); s != "acme" || err != nil {
		t.Errorf("acme: %q, %v", s, err)
	}
	for _, user := range []string{"", "  ", "{x}"} {
		if s, err := req(user); s != "" || errorStatus(err) != 403 || !strings.Contains(errorMessage(err), "empty for this request") {
			t.Errorf("user %q: %q, %v", user, s, err)
		}
	}
	h.Target = ""
	if s, err := req("acme"); s != "" || err != nil {
		t.Errorf("the operator's dashboard: %q, %v", s, err)
	}
}

func TestSendLimiter(t *testing.T) {
	l := &sendLimiter{max: 2, per: time.Minute, sent: map[string][]time.Time{}}
	now := time.Now()
	for i, want := range []bool{true, true, false} {
		if _, err := l.allow("a/b", now); (err == nil) != want {
			t.Errorf("send %d: %v", i+1, err)
		}
	}
	if _, err := l.allow("a/c", now); err != nil {
		t.Errorf("another webhook is limited by a/b: %v", err)
	}
	if wait, err := l.allow("a/b", now.Add(30*time.Second)); err == nil || wait != 30*time.Second {
		t.Errorf("after 30s: wait %v, %v", wait, err)
	}
	if _, err := l.allow("a/b", now.Add(time.Minute)); err != nil {
		t.Errorf("after a minute: %v", err)
	}
	if len(l.sent) != 1 {
		t.Errorf("the limiter keeps %d keys, want 1 (a/c's send is a minute old: dropped)", len(l.sent))
	}
}

func TestErrorClass(t *testing.T) {
	for reason, want := range map[string]string{
		"blocked by SSRF guard: 127.0.0.2 is loopback; add it": "guard",
		"connection refused":                            "refused",
		"timeout after 10s":                             "timeout",
		"tls error: x509: unknown authority":            "tls",
		"tls settings t1 are not in the running config": "tls",
		"no such host crm.invalid":                      "dns",
		"jsonrpc error -32601: Method not found":        "jsonrpc",
		"invalid url: no host":                          "invalid",
		"cannot sign: webhook gone":                     "invalid",
		"connection reset by receiver":                  "connection",
	} {
		if got := errorClass(delivery.Result{Reason: reason}); got != want {
			t.Errorf("%q: %s, want %s", reason, got, want)
		}
	}
	for status, want := range map[int]string{404: "http_4xx", 503: "http_5xx", 302: "redirect"} {
		if got := errorClass(delivery.Result{Reason: "http x", Attempt: queue.Attempt{Status: status}}); got != want {
			t.Errorf("status %d: %s, want %s", status, got, want)
		}
	}
}
