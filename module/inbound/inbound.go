// Package inbound checks that a call event comes from the platform it
// claims to: the request signatures Twilio and Zadarma send, as their
// documentation and SDKs compute them. It knows nothing of Caddy.
package inbound

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/url"
	"slices"
	"strings"
)

// TwilioSignature is X-Twilio-Signature for a request to fullURL with the
// POST form params: base64 of the HMAC-SHA1, keyed with the auth token, of
// the URL followed by every param name and value, names sorted, and each
// name's values sorted (Twilio's "Webhooks security" page; the
// RequestValidator of its SDKs).
func TwilioSignature(token, fullURL string, params url.Values) string {
	var b strings.Builder
	b.WriteString(fullURL)
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		vs := slices.Clone(params[k])
		slices.Sort(vs)
		vs = slices.Compact(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	m := hmac.New(sha1.New, []byte(token))
	m.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// ErrTwilio is returned (wrapped) by VerifyTwilio.
var ErrTwilio = errors.New("twilio signature check failed")

// VerifyTwilio checks sig (X-Twilio-Signature) for a request to fullURL
// with form params (nil for a JSON body, whose SHA-256 Twilio sends as the
// URL's bodySHA256 instead). Like Twilio's SDKs it accepts the URL with
// and without the default port, since proxies differ in what they keep.
func VerifyTwilio(token, sig, fullURL string, params url.Values, body []byte) error {
	if sig == "" {
		return errors.New("missing X-Twilio-Signature header")
	}
	u, err := url.Parse(fullURL)
	if err != nil {
		return errors.New("cannot read the request URL to check X-Twilio-Signature")
	}
	if want := u.Query().Get("bodySHA256"); want != "" {
		sum := sha256.Sum256(body)
		if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(strings.ToLower(want))) != 1 {
			return errors.New("X-Twilio-Signature: the body does not match bodySHA256")
		}
		params = nil
	}
	for _, candidate := range portVariants(u) {
		if subtle.ConstantTimeCompare([]byte(TwilioSignature(token, candidate, params)), []byte(sig)) == 1 {
			return nil
		}
	}
	return errors.New("X-Twilio-Signature does not match: check the auth token, and set the public URL Twilio calls when Caddy is behind a proxy (verify twilio <token> <public_url>)")
}

// portVariants is the URL as given, without its port if it has the
// scheme's default one, and with the default port if it has none.
func portVariants(u *url.URL) []string {
	out := []string{u.String()}
	def := map[string]string{"https": "443", "http": "80"}[u.Scheme]
	if def == "" {
		return out
	}
	v := *u
	if u.Port() == "" {
		v.Host = u.Host + ":" + def
	} else {
		v.Host = u.Hostname()
		if strings.Contains(v.Host, ":") {
			v.Host = "[" + v.Host + "]"
		}
	}
	return append(out, v.String())
}

// zadarmaFields are the form fields, in order, whose concatenation Zadarma
// signs for each notification (Zadarma's API documentation, "Signature";
// the getSignatureString of each class in its PHP library user-api-v1,
// lib/Webhook).
var zadarmaFields = map[string][]string{
	"NOTIFY_START":     {"caller_id", "called_did", "call_start"},
	"NOTIFY_IVR":       {"caller_id", "called_did", "call_start"},
	"NOTIFY_INTERNAL":  {"caller_id", "called_did", "call_start"},
	"NOTIFY_END":       {"caller_id", "called_did", "call_start"},
	"NOTIFY_ANSWER":    {"caller_id", "destination", "call_start"},
	"NOTIFY_OUT_START": {"internal", "destination", "call_start"},
	"NOTIFY_OUT_END":   {"internal", "destination", "call_start"},
	"NOTIFY_RECORD":    {"pbx_call_id", "call_id_with_rec"},
}

// ZadarmaSignature is the Signature header Zadarma sends with a
// notification: base64 of the hex-encoded HMAC-SHA1 (PHP's hash_hmac
// returns hex), keyed with the API secret, of the event's fields
// concatenated. ok is false for an event Zadarma does not sign.
func ZadarmaSignature(secret string, form url.Values) (sig string, ok bool) {
	fields, ok := zadarmaFields[form.Get("event")]
	if !ok {
		return "", false
	}
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(form.Get(f))
	}
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString(m.Sum(nil)))), true
}

// VerifyZadarma checks sig (the Signature header) for a notification.
func VerifyZadarma(secret, sig string, form url.Values) error {
	if sig == "" {
		return errors.New("missing Signature header: set the API key and secret in Zadarma's API settings, so notifications are signed")
	}
	want, ok := ZadarmaSignature(secret, form)
	if !ok {
		return errors.New("not a signed Zadarma notification: the event field must be one of NOTIFY_START, NOTIFY_IVR, NOTIFY_INTERNAL, NOTIFY_ANSWER, NOTIFY_END, NOTIFY_OUT_START, NOTIFY_OUT_END, NOTIFY_RECORD")
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return errors.New("zadarma Signature does not match: check the API secret (verify zadarma <secret>)")
	}
	return nil
}

// ZadarmaEcho is the answer to Zadarma's URL check (GET ?zd_echo=<value>,
// answered with the value itself), or false when value is not one: the
// check sends a short token, and nothing else is echoed back.
func ZadarmaEcho(value string) (string, bool) {
	if value == "" || len(value) > 128 {
		return "", false
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", false
		}
	}
	return value, true
}
