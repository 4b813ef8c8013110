package callhook

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/intake"
)

// TestEventViewNamesAndFlattens: the admin API and the dashboard show a
// stored event's body as data (not data.data) and its request with the
// names expressions use (remote_ip, headers), not Go's; credentials in
// them stay redacted.
func TestEventViewNamesAndFlattens(t *testing.T) {
	ev := &intake.Event{Name: "after_call", CallID: "c-1",
		Data: map[string]any{"call_id": "c-1", "api_key": "k-Secret-1"},
		Request: intake.RequestInfo{Method: "POST", Path: "/calls", RemoteIP: "10.0.0.7",
			Headers: map[string]string{"content-type": "application/json", "x-api-key": "h-Secret-2"}}}
	stored := storedEvent("ev1", "shop", ev, time.Now())
	raw, err := json.Marshal(viewEvent(&stored, nil))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Data    map[string]any `json:"data"`
		Request map[string]any `json:"request"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Data["call_id"] != "c-1" || got.Data["data"] != nil {
		t.Errorf("data is not the event's body: %s", raw)
	}
	if got.Request["remote_ip"] != "10.0.0.7" || got.Request["method"] != "POST" || got.Request["headers"] == nil {
		t.Errorf("request lacks its json names: %s", raw)
	}
	for _, bad := range []string{"RemoteIP", "Headers", `"Method"`, "k-Secret-1", "h-Secret-2"} {
		if strings.Contains(string(raw), bad) {
			t.Errorf("the event view shows %s: %s", bad, raw)
		}
	}
}
