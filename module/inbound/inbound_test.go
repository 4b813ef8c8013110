package inbound

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
)

// Vectors from twilio-python, tests/unit/test_request_validator.py (the
// SDK's own test of its RequestValidator): token "12345".
const (
	twilioToken = "12345"
	twilioURL   = "https://mycompany.com/myapp.php?foo=1&bar=2"
)

var twilioParams = url.Values{
	"CallSid": {"CA1234567890ABCDE"},
	"Digits":  {"1234"},
	"From":    {"+14158675309"},
	"To":      {"+18005551212"},
	"Caller":  {"+14158675309"},
}

func TestTwilioSignatureVectors(t *testing.T) {
	if got := TwilioSignature(twilioToken, twilioURL, twilioParams); got != "RSOYDt4T1cUTdK1PDd93/VVr8B8=" {
		t.Errorf("signature = %s", got)
	}
	// a repeated name: values sorted (test_compute_signature_duplicate_*)
	dup := url.Values{"Sid": {"CA123"}, "SidAccount": {"AC123"}, "Digits": {"5678", "1234"}}
	if got := TwilioSignature(twilioToken, twilioURL, dup); got != "IK+Dwps556ElfBT0I3Rgjkr1wJU=" {
		t.Errorf("duplicate names: signature = %s", got)
	}
}

func TestVerifyTwilio(t *testing.T) {
	ok := []struct{ url, sig string }{
		{twilioURL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
		// test_validation_removes_port_on_https
		{strings.Replace(twilioURL, ".com", ".com:1234", 1), "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
		// test_validation_adds_port_on_https: signed with :443
		{twilioURL, "kvajT1Ptam85bY51eRf/AJRuM3w="},
		// test_validation_adds_port_on_http: signed with :80
		{strings.Replace(twilioURL, "https", "http", 1), "0ZXoZLH/DfblKGATFgpif+LLRf4="},
	}
	for _, tt := range ok {
		if err := VerifyTwilio(twilioToken, tt.sig, tt.url, twilioParams, nil); err != nil {
			t.Errorf("%s %s: %v", tt.url, tt.sig, err)
		}
	}
	// test_validation_of_body_succeeds: a JSON body signed through bodySHA256
	body := `{"property": "value", "boolean": true}`
	bodyURL := twilioURL + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
	if err := VerifyTwilio(twilioToken, "a9nBmqA0ju/hNViExpshrM61xv4=", bodyURL, nil, []byte(body)); err != nil {
		t.Errorf("bodySHA256: %v", err)
	}
	if err := VerifyTwilio(twilioToken, "a9nBmqA0ju/hNViExpshrM61xv4=", bodyURL, nil, []byte(body+" ")); err == nil {
		t.Error("bodySHA256 with another body passed")
	}
	bad := url.Values{}
	for k, v := range twilioParams {
		bad[k] = v
	}
	bad.Set("To", "+18005551213")
	for name, err := range map[string]error{
		"changed param": VerifyTwilio(twilioToken, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", twilioURL, bad, nil),
		"other token":   VerifyTwilio("54321", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", twilioURL, twilioParams, nil),
		"other url":     VerifyTwilio(twilioToken, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "https://mycompany.com/other.php?foo=1&bar=2", twilioParams, nil),
		"no signature":  VerifyTwilio(twilioToken, "", twilioURL, twilioParams, nil),
	} {
		if err == nil {
			t.Errorf("%s: passed", name)
		}
	}
}

// phpZadarma is the computation in Zadarma's PHP example (user-api-v1,
// examples/callinfo_callback.php):
// base64_encode(hash_hmac('sha1', $callerId.$calledDid.$callStart, API_SECRET)),
// where hash_hmac returns lower-case hex.
func phpZadarma(secret, s string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(s))
	return base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString(m.Sum(nil))))
}

func TestZadarmaSignature(t *testing.T) {
	const secret = "zadarma-test-secret"
	start := url.Values{
		"event": {"NOTIFY_START"}, "call_start": {"2024-03-01 10:15:00"}, "pbx_call_id": {"in_abc123"},
		"caller_id": {"+380501234567"}, "called_did": {"+380441112233"},
	}
	// computed independently with
	//   printf '%s' '+380501234567+3804411122332024-03-01 10:15:00' |
	//     openssl dgst -sha1 -hmac zadarma-test-secret -r | cut -d' ' -f1 | tr -d '\n' | base64
	const want = "OGY1NTMyOTkwNWJmNjhjNWY5NmIwYjgyNGNmY2RlNjY1MzZiMzAxNg=="
	if got, ok := ZadarmaSignature(secret, start); !ok || got != want {
		t.Errorf("NOTIFY_START: %s, want %s", got, want)
	}
	if len(want) != 56 { // base64 of 40 hex characters
		t.Errorf("signature %q is not base64 of a hex digest", want)
	}
	cases := map[string]struct {
		form url.Values
		str  string
	}{
		"answer":    {url.Values{"event": {"NOTIFY_ANSWER"}, "caller_id": {"1"}, "destination": {"2"}, "call_start": {"3"}}, "123"},
		"out start": {url.Values{"event": {"NOTIFY_OUT_START"}, "internal": {"100"}, "destination": {"2"}, "call_start": {"3"}}, "10023"},
		"out end":   {url.Values{"event": {"NOTIFY_OUT_END"}, "internal": {"100"}, "destination": {"2"}, "call_start": {"3"}, "caller_id": {"x"}}, "10023"},
		"end":       {url.Values{"event": {"NOTIFY_END"}, "caller_id": {"1"}, "called_did": {"2"}, "call_start": {"3"}, "duration": {"9"}}, "123"},
		"record":    {url.Values{"event": {"NOTIFY_RECORD"}, "pbx_call_id": {"in_1"}, "call_id_with_rec": {"r.2"}}, "in_1r.2"},
	}
	for name, c := range cases {
		sig, ok := ZadarmaSignature(secret, c.form)
		if !ok || sig != phpZadarma(secret, c.str) {
			t.Errorf("%s: %s", name, sig)
		}
		if err := VerifyZadarma(secret, sig, c.form); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := VerifyZadarma(secret, want, url.Values{"event": {"NOTIFY_START"}, "caller_id": {"+380501234568"}, "called_did": {"+380441112233"}, "call_start": {"2024-03-01 10:15:00"}}); err == nil {
		t.Error("changed caller_id passed")
	}
	if err := VerifyZadarma("other", want, start); err == nil {
		t.Error("other secret passed")
	}
	if err := VerifyZadarma(secret, want, url.Values{"event": {"NOTIFY_SMS"}}); err == nil {
		t.Error("unsigned event passed")
	}
}

func TestZadarmaEcho(t *testing.T) {
	for v, ok := range map[string]bool{"a1B2c3": true, "": false, "<script>": false, strings.Repeat("a", 129): false} {
		if got, gotOK := ZadarmaEcho(v); gotOK != ok || (ok && got != v) {
			t.Errorf("%q: %q %v", v, got, gotOK)
		}
	}
}
