package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const secretPrefix = "whsec_"

// ParseSecret turns a configured signing secret into key bytes. A
// "whsec_<base64>" secret (the Standard Webhooks form, what receivers' libraries
// expect) is decoded; any other string is used as its raw bytes. An empty
// string means "unsigned" and returns nil. Errors never quote the secret.
func ParseSecret(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	enc, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return []byte(s), nil
	}
	if enc == "" {
		return nil, errors.New("whsec_ secret is empty after the prefix")
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		// Some tools strip the padding; accept that rather than make the
		// operator re-encode.
		var err2 error
		if key, err2 = base64.RawStdEncoding.DecodeString(enc); err2 != nil {
			return nil, fmt.Errorf("whsec_ secret is not valid base64: %w", err)
		}
	}
	if len(key) == 0 {
		return nil, errors.New("whsec_ secret decodes to nothing")
	}
	return key, nil
}

// SignAll returns the webhook-signature value for one attempt signed with
// each secret: one `v1,` signature per secret, space-separated, as
// Standard Webhooks allows during a secret rotation. No secrets give "".
func SignAll(secrets [][]byte, msgID string, ts int64, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = Sign(s, msgID, ts, body)
	}
	return strings.Join(sigs, " ")
}

// Sign returns the Standard Webhooks webhook-signature value for one attempt:
// "v1," + base64(HMAC-SHA256(secret, msgID + "." + ts + "." + body)).
func Sign(secret []byte, msgID string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(msgID))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
