package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestRepeatAnswerHidesDeliveryErrors: a repeat's 200 names the first
// event's deliveries; one that died sending must not tell the event's
// sender what the SSRF guard resolved a {param.*} host to (nor quote a
// receiver), while a render error is still shown, as for a new event.
func TestRepeatAnswerHidesDeliveryErrors(t *testing.T) {
	startCaddy(t, `allow_destinations 127.0.0.1/32`, `
	handle /calls/* {
		callhook {
			webhook probe {
				on after_call
				url http://{param.host}:9/x
				param id call.call_id
				param host "'10.66.77.88'"
				max_attempts 1
			}
			webhook broken {
				on after_call
				url http://127.0.0.1:9/y
				param doubled "call.duration * 2"
			}
		}
	}`)
	body := `{"call_id":"repeat-ssrf-1"}`
	status, first := postJSON(t, "/calls/after_call", body)
	if status != 202 {
		t.Fatalf("status %d, %+v", status, first)
	}
	waitState(t, first.id("probe"), "dead")
	status, again := postJSON(t, "/calls/after_call", body)
	if status != 200 || len(again.Deliveries) != 2 {
		t.Fatalf("repeat: status %d, %+v", status, again)
	}
	for _, d := range again.Deliveries {
		t.Logf("%s: %s %q", d.Webhook, d.State, d.Error)
		if d.State != "dead" || d.Error == "" {
			t.Errorf("repeat's %s: state %q, error %q; want dead with a reason", d.Webhook, d.State, d.Error)
		}
		if strings.Contains(d.Error, "10.66.77.88") || strings.Contains(d.Error, "SSRF") {
			t.Errorf("repeat's %s tells the sender what the SSRF guard saw: %q", d.Webhook, d.Error)
		}
	}
	if e := fmt.Sprint(again.Deliveries[1].Error); again.Deliveries[1].Webhook == "broken" && !strings.Contains(e, "doubled") {
		t.Errorf("repeat's render error %q no longer names the param", e)
	}
}
