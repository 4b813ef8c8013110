package integration

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// hit is one request a receiver got.
type hit struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   string
	At     time.Time
}

// receiver is a real HTTP server on 127.0.0.1 that records what it gets and
// answers with whatever the test's respond func says.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	hits    []hit
	respond func(n int, w http.ResponseWriter, r *http.Request) // n counts from 1
	notify  chan struct{}
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	return newReceiverOn(t, "127.0.0.1:0", respond)
}

func newReceiverOn(t *testing.T, addr string, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{respond: respond, notify: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	rc.Server.Listener = ln
	rc.Server.Start()
	t.Cleanup(rc.Server.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.hits = append(rc.hits, hit{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(body), At: time.Now()})
	n := len(rc.hits)
	respond := rc.respond
	rc.mu.Unlock()
	select {
	case rc.notify <- struct{}{}:
	default:
	}
	if respond != nil {
		respond(n, w, r)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) setRespond(f func(n int, w http.ResponseWriter, r *http.Request)) {
	rc.mu.Lock()
	rc.respond = f
	rc.mu.Unlock()
}

func (rc *receiver) got() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

// waitHits waits until the receiver has at least n hits, or fails the test
// after a generous deadline (this is an "eventually", not a timing assertion).
func (rc *receiver) waitHits(t *testing.T, n int) []hit {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if h := rc.got(); len(h) >= n {
			return h
		}
		select {
		case <-rc.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("receiver %s got %d requests, want %d", rc.URL, len(rc.got()), n)
		}
	}
}

func base64Decode(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

// verifySignature checks a Standard Webhooks signature independently of the
// plugin's code.
func verifySignature(t *testing.T, secret []byte, h hit) {
	t.Helper()
	id, ts, sig := h.Header.Get("webhook-id"), h.Header.Get("webhook-timestamp"), h.Header.Get("webhook-signature")
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(id + "." + ts + "." + h.Body))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if sig != want {
		t.Errorf("webhook-signature = %q, want %q (id %q, ts %q)", sig, want, id, ts)
	}
}
