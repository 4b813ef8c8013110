package callhook

import (
	"strings"
	"testing"

	"github.com/callhook/caddy-callhook/module/render"
)

// TestSampleFailuresAtLoad: a webhook that fails on an event without its
// optional fields is named at load (the warning caddy validate prints),
// with the param; a nil-safe one is not.
func TestSampleFailuresAtLoad(t *testing.T) {
	h := &Handler{Webhooks: []Webhook{
		{Name: "crm", On: []string{"call_answered", "after_call"}, URL: "https://crm.example.com/calls",
			Params: []render.Param{{Name: "phone", Expr: "e164(call.caller, 'UA')"}}},
		{Name: "safe", On: []string{"call_answered"}, URL: "https://crm.example.com/calls",
			Params: []render.Param{{Name: "phone", Expr: "e164(call.caller ?? '+380441234567', 'UA')"}}},
	}}
	if err := prepareHandler(h, &App{}); err != nil {
		t.Fatal(err)
	}
	fs := h.sampleFailures()
	if len(fs) != 1 {
		t.Fatalf("failures %+v, want one, for crm", fs)
	}
	f := fs[0]
	if f.webhook != "crm" || f.event != "call_answered" || !strings.Contains(f.sample, "only call_id") ||
		!strings.Contains(f.reason, "param phone: a field it uses is missing (nil)") {
		t.Errorf("failure %+v", f)
	}
}
