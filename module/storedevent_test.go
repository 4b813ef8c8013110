package callhook

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/intake"
)

// TestStoredEventMatchesEncodingJSON: the stored event, written without
// reflection, reads back (as the recovery reads it) to exactly what
// encoding/json's Marshal of the same struct reads back to, and equal
// events give equal bytes.
func TestStoredEventMatchesEncodingJSON(t *testing.T) {
	ev := &intake.Event{
		Name: "after_call", CallID: "c-1",
		Data: map[string]any{
			"call_id": "c-1", "duration": json.Number("42"), "price": json.Number("1.50"),
			"tags": []any{"a", json.Number("2"), nil, true}, "crm": map[string]any{"id": "x\"<y>", "deep": map[string]any{"z": false}},
			"note": "line\nbreak \u2028 ✓", "empty": map[string]any{},
		},
		Request: intake.RequestInfo{Method: "POST", Path: "/hooks/x", RemoteIP: "10.0.0.7",
			Headers: map[string]string{"content-type": "application/json", "x-b": "2", "x-a": "1"},
			Query:   map[string]string{"k": "v"}},
	}
	got := storedEvent("ev1", "shop", ev, time.Unix(0, 0)).Data
	want, err := json.Marshal(struct {
		Data    map[string]any     `json:"data"`
		Request intake.RequestInfo `json:"request"`
	}{ev.Data, ev.Request})
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		Data    map[string]any     `json:"data"`
		Request intake.RequestInfo `json:"request"`
	}
	read := func(b []byte) stored {
		t.Helper()
		var s stored
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		return s
	}
	if g, w := read(got), read(want); !reflect.DeepEqual(g, w) {
		t.Errorf("stored event reads back as\n%+v\nwant\n%+v\n(bytes %s)", g, w, got)
	}
	if again := storedEvent("ev1", "shop", ev, time.Unix(0, 0)).Data; !bytes.Equal(again, got) {
		t.Errorf("the same event stored twice differs:\n%s\n%s", got, again)
	}
}
