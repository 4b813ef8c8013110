package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestFormGETEdges: through Caddy, a GET form webhook with omit_nil leaves
// out a field the event lacks, sends a param its URL's query carries once,
// and a value that would make the URL longer than receivers accept gives a
// dead delivery saying so instead of a 414 retried for days.
func TestFormGETEdges(t *testing.T) {
	crm := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook lookup {
				on after_call
				url %s/calls?id={param.id}
				method GET
				format form
				omit_nil
				param id call.call_id
				param caller call.caller
				param note "data.note"
			}
		}
	}`, crm.URL))
	res, raw, _ := postRaw(t, "/calls/after_call", "application/json", `{"call_id":"e-1","note":"hi"}`)
	if res.StatusCode != 202 {
		t.Fatalf("%d %s", res.StatusCode, raw)
	}
	got := crm.waitHits(t, 1)
	if q := got[0].Query; q != "id=e-1&note=hi" {
		t.Errorf("query %q, want id once and no caller", q)
	}
	res, raw, _ = postRaw(t, "/calls/after_call", "application/json", `{"call_id":"e-2","note":"`+strings.Repeat("x", 9000)+`"}`)
	var a answer
	json.Unmarshal([]byte(raw), &a)
	if res.StatusCode != 202 || len(a.Deliveries) != 1 || a.Deliveries[0].State != "dead" ||
		!strings.Contains(a.Deliveries[0].Error, "more than 8192, which receivers refuse (414 URI Too Long)") {
		t.Errorf("%d %s", res.StatusCode, raw)
	}
}
