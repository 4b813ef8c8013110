package natswq

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
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

// leaseToken is the opaque lease token: the partition, the revision of the
// record when it was leased (the fence of the outcome's write), the lease's
// nonce (held in the owner's memory) and the id.
func leaseToken(part int, rev uint64, nonce, id string) queue.Token {
	return queue.Token(fmt.Sprintf("w:%d:%d:%s:%s", part, rev, nonce, id))
}

type tokenParts struct {
	part  int
	rev   uint64
	nonce string
	id    string
}

func parseToken(t queue.Token, parts int) (tokenParts, bool) {
	s, found := strings.CutPrefix(string(t), "w:")
	if !found {
		return tokenParts{}, false
	}
	f := strings.SplitN(s, ":", 4)
	if len(f) != 4 || len(f[2]) != 16 || f[3] == "" {
		return tokenParts{}, false
	}
	pi, err1 := strconv.Atoi(f[0])
	rev, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pi < 0 || pi >= parts {
		return tokenParts{}, false
	}
	return tokenParts{part: pi, rev: rev, nonce: f[2], id: f[3]}, true
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
