package intake

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"
	"unicode/utf8"
)

// The fuzz targets check that any input gives either a 4xx *Error with a
// usable message, or an event with a call ID and a canonical name that can be
// encoded; never a panic. Seeds live in testdata/fuzz/<FuzzName>/.

var fuzzOpts = Options{Location: time.FixedZone("MSK", 3*3600), StripToken: true}

func FuzzDecodeJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		r, _ := http.NewRequest("POST", "http://x/hook/after_call", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		checkDecode(t, r)
	})
}

func FuzzDecodeForm(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		r, _ := http.NewRequest("POST", "http://x/hook/after_call", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		checkDecode(t, r)
	})
}

func FuzzDecodeQuery(f *testing.F) {
	f.Fuzz(func(t *testing.T, query string) {
		r := &http.Request{
			Method:     "GET",
			URL:        &url.URL{Path: "/hook/after_call", RawQuery: query},
			Header:     http.Header{},
			RemoteAddr: "192.0.2.1:1234",
		}
		checkDecode(t, r)
	})
}

func checkDecode(t *testing.T, r *http.Request) {
	t.Helper()
	ev, err := Decode(r, fuzzOpts)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v is %T, not *Error", err, err)
		}
		if e.Status < 400 || e.Status > 499 {
			t.Fatalf("status %d for %q", e.Status, e.Msg)
		}
		if e.Msg == "" || !utf8.ValidString(e.Msg) {
			t.Fatalf("bad message %q", e.Msg)
		}
		if ev != nil {
			t.Fatal("event returned with an error")
		}
		return
	}
	if ev.CallID == "" || ev.Call == nil || ev.Call.CallID == nil || *ev.Call.CallID != ev.CallID {
		t.Fatalf("call id %q, call %+v", ev.CallID, ev.Call)
	}
	if !IsEventName(ev.Name) {
		t.Fatalf("event name %q", ev.Name)
	}
	if _, ok := ev.Data["token"]; ok && r.Method == "GET" {
		t.Fatal("token kept in query data")
	}
	// What Decode returns is stored and rendered: it must encode.
	if _, err := json.Marshal(ev.Call); err != nil {
		t.Fatalf("call does not encode: %v", err)
	}
	if _, err := json.Marshal(ev.Data); err != nil {
		t.Fatalf("data does not encode: %v", err)
	}
}
