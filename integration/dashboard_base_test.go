package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardBaseNeverOffSite mounts the dashboard at the site root and
// asks for it as //evil.example/...: the doubled slash is part of the
// path, not a host, so no link, stylesheet, form or redirect may point at
// //evil.example (a browser reads that as another site).
func TestDashboardBaseNeverOffSite(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, "allow_destinations 127.0.0.1/32", fmt.Sprintf(`
	handle /hooks {
		callhook {
			target shop
			event after_call
			webhook crm {
				on after_call
				url %s/crm
				param call_id call.call_id
			}
		}
	}
	handle {
		callhook_dashboard
	}`, rc.URL))
	status, ans, _ := send(t, "POST", "/hooks", "application/json", `{"call_id":"base-1"}`)
	if status != 202 {
		t.Fatalf("event: status %d, %+v", status, ans)
	}
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
	res, page := get("//evil.example/events/" + url.PathEscape(ans.EventID))

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
