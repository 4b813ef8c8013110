package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestDashboardBaseNeverOffSite mounts the dashboard at the site root and
// asks for it as //evil.example/...: the doubled slash is part of the
// path, not a host, so no link, stylesheet, form or redirect may point at
// //evil.example (a browser reads that as another site).
func TestDashboardBaseNeverOffSite(t *testing.T) {
	rc := newReceiver(t, nil)
	ans := startRootDashboard(t, fmt.Sprintf(`
			webhook crm {
				on after_call
				url %s/crm
				param call_id call.call_id
			}`, rc.URL), "base-1")
	offSite := regexp.MustCompile(`(?i)(href|src|action)="(//|/\\|https?:)`)

	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(caddyBase + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 {
			t.Fatalf("GET %s: status %d: %s", path, res.StatusCode, raw)
		}
		if m := offSite.FindString(string(raw)); m != "" {
			t.Errorf("GET %s: the page links off-site: %s…", path, m)
		}
		return res, string(raw)
	}
	get("//evil.example/deliveries")
	get("///evil.example/")
	get("//evil.example/events/" + url.PathEscape(ans.EventID))
	res, page := get("//evil.example/events/" + url.PathEscape(ans.EventID) + "/replay") // the preview, with the form

	// The redirect after an action stays on the site too.
	var cookie *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "callhook_dashboard" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("the event page set no dashboard cookie")
	}
	if strings.HasPrefix(cookie.Path, "//") {
		t.Errorf("cookie path %q is protocol-relative", cookie.Path)
	}
	token := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if token == nil {
		t.Fatalf("no replay form on the event page:\n%s", page)
	}
	req, _ := http.NewRequest("POST", caddyBase+"//evil.example/events/"+url.PathEscape(ans.EventID)+"/replay",
		strings.NewReader(url.Values{"csrf": {token[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("replay: status %d: %s", res.StatusCode, raw)
	}
	if loc := res.Header.Get("Location"); !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.Contains(loc, `\`) {
		t.Errorf("the redirect after replay goes to %q: off-site", loc)
	}
}

// TestDashboardActionLogNamesUser: an action taken on the dashboard is
// logged with the user basic_auth authenticated, and where from.
func TestDashboardActionLogNamesUser(t *testing.T) {
	rc := newReceiver(t, nil)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw-1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	cfg := caddyfile(t.TempDir(), "allow_destinations 127.0.0.1/32", fmt.Sprintf(`
	handle /hooks {
		callhook {
			event after_call
			webhook crm {
				on after_call
				url %s/crm
				param call_id call.call_id
			}
		}
	}
	handle {
		basic_auth {
			alice %s
		}
		callhook_dashboard
	}`, rc.URL, hash))
	cfg = withGlobalOptions(cfg, fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}", logFile))
	initServer(t, cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	status, ans, _ := send(t, "POST", "/hooks", "application/json", `{"call_id":"who-1"}`)
	if status != 202 {
		t.Fatalf("event: status %d, %+v", status, ans)
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pw-1"))
	replay := "/events/" + url.PathEscape(ans.EventID) + "/replay"
	if res := dashboardPost(t, replay, replay, auth); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("replay: status %d", res.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw, _ := os.ReadFile(logFile)
		for _, line := range strings.Split(string(raw), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) != nil || e["msg"] != "event replayed by hand" {
				continue
			}
			if e["user"] != "alice" || e["via"] != "dashboard" || e["remote_ip"] == nil {
				t.Errorf("the replay's log line does not name the user: %s", line)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line for the replay in:\n%s", raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dashboardPost posts the form of the page at pagePath (on the dashboard
// mounted at the site root) to action, as a browser would: with the
// page's cookie and token. The redirect is not followed.
func dashboardPost(t *testing.T, pagePath, action, auth string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", caddyBase+pagePath, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var cookie *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "callhook_dashboard" {
			cookie = c
		}
	}
	token := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(page))
	if cookie == nil || token == nil {
		t.Fatalf("GET %s: no form cookie or token (status %d):\n%s", pagePath, res.StatusCode, page)
	}
	req, _ = http.NewRequest("POST", caddyBase+action, strings.NewReader(url.Values{"csrf": {token[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// TestDashboardReplayPreview: Replay first shows what will be sent again
// (the webhooks of the running config) and says it goes out under new IDs;
// only the confirmation's POST queues anything.
func TestDashboardReplayPreview(t *testing.T) {
	rc := newReceiver(t, nil)
	ans := startRootDashboard(t, fmt.Sprintf(`
			webhook crm {
				on after_call
				url %[1]s/crm
				param call_id call.call_id
			}
			webhook erp {
				on after_call
				url %[1]s/erp
				param call_id call.call_id
			}
			webhook ringing {
				on before_call
				url %[1]s/ringing
				param call_id call.call_id
			}`, rc.URL), "preview-1")
	rc.waitHits(t, 2)
	replay := "/events/" + url.PathEscape(ans.EventID) + "/replay"
	res, err := http.Get(caddyBase + replay)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	page := string(raw)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: status %d: %s", replay, res.StatusCode, page)
	}
	for _, want := range []string{"shop/crm", "shop/erp", "new ID", "webhook-id", `id="confirm-replay"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the replay preview lacks %q", want)
		}
	}
	if strings.Contains(page, "shop/ringing") {
		t.Error("the preview lists a webhook that does not fire for after_call")
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(rc.got()); n != 2 {
		t.Fatalf("the preview sent something: the receiver has %d requests, want 2", n)
	}
	if res := dashboardPost(t, replay, replay, ""); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("confirming the replay: status %d", res.StatusCode)
	}
	rc.waitHits(t, 4)
}

// startRootDashboard starts Caddy with callhook (target shop, event
// after_call, the webhooks given) on /hooks and the dashboard at the site
// root, and posts one event for callID.
func startRootDashboard(t *testing.T, webhooks, callID string) answer {
	t.Helper()
	startCaddy(t, "allow_destinations 127.0.0.1/32", `
	handle /hooks {
		callhook {
			target shop
			event after_call`+webhooks+`
		}
	}
	handle {
		callhook_dashboard
	}`)
	status, ans, _ := send(t, "POST", "/hooks", "application/json", `{"call_id":"`+callID+`"}`)
	if status != 202 {
		t.Fatalf("event: status %d, %+v", status, ans)
	}
	return ans
}
