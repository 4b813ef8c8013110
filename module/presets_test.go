package callhook

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/callhook/caddy-callhook/module/intake"
)

// decodeAs decodes a request the way a handler with `input <preset>` does.
func decodeAs(t *testing.T, preset, path, ctype, body string) *intake.Event {
	t.Helper()
	h := &Handler{Input: preset}
	if err := h.compile(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", path, strings.NewReader(body))
	r.Header.Set("Content-Type", ctype)
	ev, err := intake.Decode(r, intake.Options{Remap: h.fields.Remap, EventFrom: h.eventFrom, Location: time.UTC})
	if err != nil {
		t.Fatalf("%s: %v", preset, err)
	}
	return ev
}

func str(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestPresets decodes a sample payload per vendor, built from the field
// names and values the vendor documents, and checks the canonical fields.
func TestPresets(t *testing.T) {
	t.Run("zadarma", func(t *testing.T) {
		// NOTIFY_END as Zadarma's API documentation lists its fields (and
		// its PHP library, user-api-v1, lib/Webhook/NotifyEnd.php)
		form := url.Values{
			"event": {"NOTIFY_END"}, "call_start": {"2024-03-01 10:15:00"}, "pbx_call_id": {"in_1b2c3d"},
			"caller_id": {"+380501234567"}, "called_did": {"+380441112233"}, "internal": {"101"},
			"duration": {"42"}, "disposition": {"answered"}, "status_code": {"16"},
			"is_recorded": {"1"}, "call_id_with_rec": {"1709287000.123456"},
		}
		ev := decodeAs(t, "zadarma", "/zadarma", "application/x-www-form-urlencoded", form.Encode())
		c := ev.Call
		if ev.Name != "after_call" || ev.CallID != "in_1b2c3d" || str(c.Caller) != "+380501234567" ||
			str(c.Callee) != "+380441112233" || str(c.TrackingNumber) != "+380441112233" || str(c.AgentID) != "101" ||
			*c.Duration != 42 || str(c.Disposition) != "answered" || !*c.HasRecording || str(c.Direction) != "incoming" ||
			!c.StartTime.Equal(time.Date(2024, 3, 1, 10, 15, 0, 0, time.UTC)) {
			t.Errorf("NOTIFY_END: %s %+v", ev.Name, c)
		}
		if ev.Data["call_id_with_rec"] != "1709287000.123456" {
			t.Errorf("call_id_with_rec not kept in data")
		}
		// NOTIFY_OUT_START: internal, destination (NotifyOutStart.php)
		form = url.Values{"event": {"NOTIFY_OUT_START"}, "call_start": {"2024-03-01 10:20:00"}, "pbx_call_id": {"out_9"},
			"internal": {"101"}, "destination": {"+380671112233"}}
		ev = decodeAs(t, "zadarma", "/zadarma", "application/x-www-form-urlencoded", form.Encode())
		if ev.Name != "before_outgoing_call" || str(ev.Call.Callee) != "+380671112233" || str(ev.Call.Direction) != "outgoing" {
			t.Errorf("NOTIFY_OUT_START: %s %+v", ev.Name, ev.Call)
		}
		// NOTIFY_START asks for a routing answer
		form = url.Values{"event": {"NOTIFY_START"}, "call_start": {"2024-03-01 10:15:00"}, "pbx_call_id": {"in_1"},
			"caller_id": {"+380501234567"}, "called_did": {"+380441112233"}}
		if ev = decodeAs(t, "zadarma", "/zadarma", "application/x-www-form-urlencoded", form.Encode()); ev.Name != "before_call" {
			t.Errorf("NOTIFY_START: %s", ev.Name)
		}
	})
	t.Run("binotel", func(t *testing.T) {
		// apiCallCompleted: requestType and callDetails[...] (Binotel's
		// "API CALL COMPLETED" description), sent as a PHP-style form
		form := url.Values{
			"requestType":                        {"apiCallCompleted"},
			"callDetails[generalCallID]":         {"2561134563"},
			"callDetails[startTime]":             {"1709287000"},
			"callDetails[callType]":              {"0"},
			"callDetails[internalNumber]":        {"901"},
			"callDetails[externalNumber]":        {"0671234567"},
			"callDetails[waitsec]":               {"5"},
			"callDetails[billsec]":               {"37"},
			"callDetails[disposition]":           {"ANSWER"},
			"callDetails[employeeData][name]":    {"Olena"},
			"callDetails[pbxNumberData][number]": {"0443334455"},
		}
		ev := decodeAs(t, "binotel", "/binotel", "application/x-www-form-urlencoded", form.Encode())
		c := ev.Call
		if ev.Name != "after_call" || ev.CallID != "2561134563" || str(c.Caller) != "0671234567" || str(c.AgentID) != "901" ||
			str(c.AgentName) != "Olena" || str(c.TrackingNumber) != "0443334455" || *c.TalkTime != 37 || *c.WaitTime != 5 ||
			str(c.Disposition) != "answered" || str(c.Direction) != "incoming" || c.StartTime.Unix() != 1709287000 {
			t.Errorf("apiCallCompleted: %s %+v", ev.Name, c)
		}
		// apiCallSettings: asked while the call rings
		form = url.Values{"requestType": {"apiCallSettings"}, "generalCallID": {"2561134999"}, "externalNumber": {"0671234567"},
			"pbxNumber": {"0443334455"}, "companyID": {"12345"}, "callType": {"0"}}
		ev = decodeAs(t, "binotel", "/binotel", "application/x-www-form-urlencoded", form.Encode())
		if ev.Name != "before_call" || ev.CallID != "2561134999" || str(ev.Call.TrackingNumber) != "0443334455" {
			t.Errorf("apiCallSettings: %s %+v", ev.Name, ev.Call)
		}
	})
	t.Run("twilio", func(t *testing.T) {
		// the voice request and status callback parameters of Twilio's
		// "TwiML voice: your response" / status callback pages
		form := url.Values{"CallSid": {"CA5ef8732a3c49700934481addd5ce1659"}, "AccountSid": {"AC0000"},
			"From": {"+14158675309"}, "To": {"+18005551212"}, "CallStatus": {"ringing"}, "Direction": {"inbound"},
			"FromCity": {"SAN FRANCISCO"}, "FromState": {"CA"}, "FromCountry": {"US"}}
		ev := decodeAs(t, "twilio", "/twilio/voice", "application/x-www-form-urlencoded", form.Encode())
		if ev.Name != "before_call" || ev.CallID != "CA5ef8732a3c49700934481addd5ce1659" || str(ev.Call.Caller) != "+14158675309" ||
			str(ev.Call.Callee) != "+18005551212" || str(ev.Call.Direction) != "incoming" || str(ev.Call.City) != "SAN FRANCISCO" {
			t.Errorf("ringing: %s %+v", ev.Name, ev.Call)
		}
		form.Set("CallStatus", "completed")
		form.Set("CallDuration", "65")
		form.Set("RecordingUrl", "https://api.twilio.com/2010-04-01/Accounts/AC0000/Recordings/RE1")
		ev = decodeAs(t, "twilio", "/twilio/status", "application/x-www-form-urlencoded", form.Encode())
		if ev.Name != "after_call" || *ev.Call.Duration != 65 || str(ev.Call.Disposition) != "answered" || !*ev.Call.HasRecording ||
			str(ev.Call.RecordingURL) == nil {
			t.Errorf("completed: %s %+v", ev.Name, ev.Call)
		}
	})
	t.Run("callrail", func(t *testing.T) {
		// a post-call webhook body with the field names of CallRail's
		// webhook documentation; CallRail sends no event name, so the path
		// names it
		body := `{"resource_id":"CAL8154748ae6bd4e278a7cddd38a662f4f","answered":true,"direction":"inbound",
			"business_phone_number":"+18005551234","customer_phone_number":"+14045551234","tracking_phone_number":"+14045559999",
			"duration":67,"start_time":"2024-03-01T10:15:00.000-05:00","recording":"https://app.callrail.com/calls/CAL8154/recording",
			"first_call":true,"customer_city":"Atlanta","customer_state":"GA","customer_country":"US",
			"landing_page_url":"https://example.com/plumbing","referring_url":"https://www.google.com/","keywords":"emergency plumber",
			"utm_source":"google","utm_medium":"cpc","utm_campaign":"spring"}`
		ev := decodeAs(t, "callrail", "/callrail/after_call", "application/json", body)
		c := ev.Call
		if ev.Name != "after_call" || ev.CallID != "CAL8154748ae6bd4e278a7cddd38a662f4f" || str(c.Caller) != "+14045551234" ||
			str(c.TrackingNumber) != "+14045559999" || *c.Duration != 67 || str(c.Disposition) != "answered" || !*c.FirstCall ||
			str(c.KeyPhrase) != "emergency plumber" || str(c.UTMSource) != "google" || str(c.Direction) != "incoming" ||
			c.StartTime.UTC().Hour() != 15 {
			t.Errorf("callrail: %s %+v", ev.Name, c)
		}
	})
	t.Run("ringostat", func(t *testing.T) {
		// Ringostat lets the user pick the parameters of each webhook; the
		// preset reads the names of its parameter list
		body := `{"uniqueid":"1709287000.4521","caller":"380501234567","dst":"380441112233","calldate":"2024-03-01 10:15:00",
			"duration":52,"billsec":40,"disposition":"ANSWERED","recording":"https://app.ringostat.com/recordings/1.mp3",
			"call_type":"in","pool_name":"Google Ads","utm_source":"google","utm_medium":"cpc"}`
		ev := decodeAs(t, "ringostat", "/ringostat/after_call", "application/json", body)
		c := ev.Call
		if ev.CallID != "1709287000.4521" || str(c.Caller) != "380501234567" || str(c.Callee) != "380441112233" || *c.Duration != 52 ||
			*c.TalkTime != 40 || str(c.Disposition) != "answered" || str(c.Direction) != "incoming" || str(c.PoolName) != "Google Ads" {
			t.Errorf("ringostat: %+v", c)
		}
	})
}
