package integration

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func sig(secret, id, ts, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(id + "." + ts + "." + body))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// TestSecretRotation: a queued delivery is signed with its webhook's
// current secrets at each attempt (after a reload that rotates it, with
// one signature per secret); a delivery whose webhook was removed goes
// out signed with the secret it was rendered with, which the queue holds
// only sealed.
func TestSecretRotation(t *testing.T) {
	var ok atomic.Bool
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if !ok.Load() {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(204)
	})
	dir := t.TempDir()
	site := func(secret string, withGone bool) string {
		gone := ""
		if withGone {
			gone = fmt.Sprintf(`webhook gone {
				on after_call
				url %s/gone
				param id call.call_id
				secret gone-secret-1
				backoff 100ms 200ms
			}`, rc.URL)
		}
		return fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook crm {
				on after_call
				url %s/crm
				param id call.call_id
				secret %s
				backoff 100ms 200ms
			}
			%s
		}
	}`, rc.URL, secret, gone)
	}
	globals := "allow_destinations 127.0.0.1/32\n\t\tsecret_key callhook-test-secret-key-0123"
	startCaddyDir(t, dir, globals, site("old-secret-1", true))
	_, ans := postJSON(t, "/calls/after_call", `{"call_id":"s-1"}`)
	first := rc.waitHits(t, 2)
	for _, h := range first {
		want := map[string]string{"/crm": "old-secret-1", "/gone": "gone-secret-1"}[h.Path]
		if got := h.Header.Get("webhook-signature"); got != sig(want, h.Header.Get("webhook-id"), h.Header.Get("webhook-timestamp"), h.Body) {
			t.Errorf("%s before the rotation: signature %q", h.Path, got)
		}
	}

	// The queue holds no secret in plain text.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "old-secret-1") || strings.Contains(string(b), "gone-secret-1") {
				t.Errorf("%s holds a signing secret in plain text", p)
			}
		}
		return nil
	})

	reload(t, dir, globals, site("new-secret-2 old-secret-1", false))
	ok.Store(true)
	waitState(t, ans.id("crm"), "delivered")
	waitState(t, ans.id("gone"), "delivered")
	hits := rc.got()
	last := map[string]hit{}
	for _, h := range hits {
		last[h.Path] = h
	}
	h := last["/crm"]
	id, ts := h.Header.Get("webhook-id"), h.Header.Get("webhook-timestamp")
	if want := sig("new-secret-2", id, ts, h.Body) + " " + sig("old-secret-1", id, ts, h.Body); h.Header.Get("webhook-signature") != want {
		t.Errorf("after the rotation: webhook-signature %q, want %q", h.Header.Get("webhook-signature"), want)
	}
	h = last["/gone"]
	if want := sig("gone-secret-1", h.Header.Get("webhook-id"), h.Header.Get("webhook-timestamp"), h.Body); h.Header.Get("webhook-signature") != want {
		t.Errorf("removed webhook: webhook-signature %q, want the rendered secret's %q", h.Header.Get("webhook-signature"), want)
	}
	var d adminDelivery
	adminJSON(t, "GET", "/callhook/deliveries/"+ans.id("crm"), 200, &d)
	if d.Policy == nil || !d.Policy.Signed {
		t.Errorf("admin view: policy %+v, want signed", d.Policy)
	}
}
