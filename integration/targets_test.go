package integration

import (
	"fmt"
	"strings"
	"testing"
)

// twoBlocks is a site with two callhook handler blocks of one target.
func twoBlocks(a, b string) string {
	return fmt.Sprintf(`
	handle /a/* {
		callhook shop {
			%s
		}
	}
	handle /b/* {
		callhook shop {
			%s
		}
	}`, a, b)
}

func hook(name, url string) string {
	return fmt.Sprintf("webhook %s {\n\t\t\t\ton after_call\n\t\t\t\turl %s\n\t\t\t\tparam id call.call_id\n\t\t\t}\n\t\t\t", name, url)
}

// TestTargetRulesSpanHandlerBlocks: SPEC §7's limits are per target, so they
// hold across handler blocks of one target; and an event that both blocks
// receive is queued by each, not answered by the second as a repeat.
func TestTargetRulesSpanHandlerBlocks(t *testing.T) {
	rc := newReceiver(t, nil)
	t.Run("dedup per block", func(t *testing.T) {
		startCaddy(t, "allow_destinations 127.0.0.1/32", twoBlocks(hook("crm", rc.URL+"/crm"), hook("erp", rc.URL+"/erp")))
		status, ans := postJSON(t, "/a/after_call", `{"call_id":"both-1"}`)
		if status != 202 || ans.id("crm") == "" {
			t.Fatalf("block a: status %d %+v", status, ans)
		}
		status, ans = postJSON(t, "/b/after_call", `{"call_id":"both-1"}`)
		if status != 202 || ans.id("erp") == "" {
			t.Fatalf("block b answered %d %+v: its webhook was never queued", status, ans)
		}
		if status, _ := postJSON(t, "/b/after_call", `{"call_id":"both-1"}`); status != 200 {
			t.Errorf("a repeat to block b: status %d, want 200", status)
		}
	})
	t.Run("names unique per target", func(t *testing.T) {
		status, body := loadCaddyfile(t, caddyfile(t.TempDir(), "allow_destinations 127.0.0.1/32", twoBlocks(hook("crm", rc.URL), hook("crm", rc.URL+"/other"))))
		if status < 400 || !strings.Contains(body, "webhook name crm is used twice") || !strings.Contains(body, "handler blocks of target shop") {
			t.Errorf("status %d: %s", status, body)
		}
	})
	t.Run("40 per event per target", func(t *testing.T) {
		var a, b strings.Builder
		for i := range 21 {
			a.WriteString(hook(fmt.Sprintf("a%d", i), rc.URL))
			b.WriteString(hook(fmt.Sprintf("b%d", i), rc.URL))
		}
		status, body := loadCaddyfile(t, caddyfile(t.TempDir(), "allow_destinations 127.0.0.1/32", twoBlocks(a.String(), b.String())))
		if status < 400 || !strings.Contains(body, "event after_call has 42 webhooks") {
			t.Errorf("status %d: %s", status, body)
		}
	})
}
