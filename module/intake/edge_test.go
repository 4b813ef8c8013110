package intake

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestCallIDLimit(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		status int
	}{
		{"at the limit", strings.Repeat("a", MaxCallID), 0},
		{"one over", strings.Repeat("a", MaxCallID+1), http.StatusBadRequest},
		{"2000 bytes", strings.Repeat("x", 2000), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(newReq("POST", "/after_call", ctJSON, `{"call_id":"`+tt.id+`"}`), Options{})
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			var ie *Error
			if !errors.As(err, &ie) || ie.Status != tt.status {
				t.Fatalf("err = %v, want status %d", err, tt.status)
			}
			if !strings.Contains(ie.Msg, "at most 256 bytes") {
				t.Errorf("message %q does not name the limit", ie.Msg)
			}
		})
	}
}

func TestFormBodyThatIsJSON(t *testing.T) {
	for _, body := range []string{`{"call_id":"c1"}`, " [1,2]\n"} {
		_, err := Decode(newReq("POST", "/after_call", ctForm, body), Options{})
		var ie *Error
		if !errors.As(err, &ie) || ie.Status != http.StatusBadRequest || !strings.Contains(ie.Msg, "Content-Type: application/json") {
			t.Errorf("body %q: err = %v, want a 400 with a Content-Type hint", body, err)
		}
	}
	// a form value that merely starts with a brace is still a form
	if _, err := Decode(newReq("POST", "/after_call", ctForm, "call_id=%7Bx"), Options{}); err != nil {
		t.Errorf("form with a brace: %v", err)
	}
}

func TestRemoteIPOption(t *testing.T) {
	r := newReq("GET", "/after_call?call_id=1", "", "")
	r.RemoteAddr = "10.0.0.1:5555"
	ev, err := Decode(r, Options{RemoteIP: "203.0.113.9"})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Request.RemoteIP != "203.0.113.9" {
		t.Errorf("RemoteIP = %q, want the client IP from the option", ev.Request.RemoteIP)
	}
	ev, _ = Decode(r, Options{})
	if ev.Request.RemoteIP != "10.0.0.1" {
		t.Errorf("RemoteIP = %q, want the peer address", ev.Request.RemoteIP)
	}
}

func TestVerifyHook(t *testing.T) {
	var gotForm url.Values
	var gotBody string
	opts := Options{Verify: func(r *http.Request, body []byte, form url.Values) error {
		gotForm, gotBody = form, string(body)
		if form.Get("sig") != "ok" {
			return errors.New("bad signature")
		}
		return nil
	}}
	if _, err := Decode(newReq("POST", "/after_call", ctForm, "call_id=1&sig=ok"), opts); err != nil {
		t.Fatal(err)
	}
	if gotBody != "call_id=1&sig=ok" || gotForm.Get("call_id") != "1" {
		t.Errorf("verify saw body %q form %v", gotBody, gotForm)
	}
	_, err := Decode(newReq("POST", "/after_call", ctForm, "call_id=1&sig=no"), opts)
	var ie *Error
	if !errors.As(err, &ie) || ie.Status != http.StatusUnauthorized {
		t.Fatalf("err = %v, want 401", err)
	}
	// a JSON body reaches the hook without form values
	gotForm = url.Values{"x": nil}
	Decode(newReq("POST", "/after_call", ctJSON, `{"call_id":"1"}`), opts)
	if gotForm != nil || gotBody != `{"call_id":"1"}` {
		t.Errorf("JSON: verify saw form %v body %q", gotForm, gotBody)
	}
}
