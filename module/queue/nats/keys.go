package nats

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Key prefixes in the bucket.
const (
	kDelivery = "d."
	kHistory  = "h."
	kEvent    = "e."
	kDedup    = "x."
	kPause    = "p."
)

// token encodes a caller's id as one key token. Ids made of letters,
// digits, '-' and '_' (UUIDs, the suite's ids) are kept as they are, so the
// bucket stays readable with the nats CLI; anything else is base64url behind
// a '=' that no kept id starts with.
func token(id string) string {
	safe := id != ""
	for i := 0; i < len(id) && safe; i++ {
		c := id[i]
		safe = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if safe {
		return id
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

func deliveryKey(id string) string { return kDelivery + token(id) }
func historyKey(id string) string  { return kHistory + token(id) }
func eventKey(id string) string    { return kEvent + token(id) }
func pauseKey(target, webhook string) string {
	return kPause + token(target) + "." + token(webhook)
}
func dedupKey(k string) string {
	sum := sha256.Sum256([]byte(k))
	return kDedup + hex.EncodeToString(sum[:])
}

// leaseToken is the opaque lease token: the lease's nonce and the id.
func leaseToken(nonce, id string) queue.Token { return queue.Token("n:" + nonce + ":" + id) }

func parseToken(t queue.Token) (nonce, id string, ok bool) {
	s, found := strings.CutPrefix(string(t), "n:")
	if !found {
		return "", "", false
	}
	nonce, id, found = strings.Cut(s, ":")
	if !found || len(nonce) != 16 || id == "" {
		return "", "", false
	}
	return nonce, id, true
}

func validBucket(b string) error {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("nats queue: stream name %q may hold only letters, digits, '-' and '_'", b)
		}
	}
	if b == "" || len(b) > 200 {
		return fmt.Errorf("nats queue: stream name %q must be 1 to 200 characters", b)
	}
	return nil
}

func joinURLs(urls []string) string { return strings.Join(urls, ",") }

// redactURLs shows server URLs without user info, for errors and logs.
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			out[i] = s
			if err != nil {
				out[i] = "(unparsable URL)"
			}
			continue
		}
		u.User = url.User("redacted")
		out[i] = u.String()
	}
	return strings.Join(out, ", ")
}
