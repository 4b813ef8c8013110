package callhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

func TestMatchRoute(t *testing.T) {
	for i, tc := range []struct {
		path  string
		name  string
		args  []string
		depth int
	}{
		{"/", "overview", nil, 1},
		{"/callhook/", "overview", nil, 1},
		{"/callhook/deliveries", "deliveries", nil, 1},
		{"/callhook/deliveries/", "overview", nil, 1},
		{"/deliveries/msg_1", "delivery", []string{"msg_1"}, 2},
		{"/x/y/deliveries/msg_1/retry", "retry", []string{"msg_1"}, 3},
		{"/deliveries/msg_1/delete", "delete", []string{"msg_1"}, 3},
		{"/events", "events", nil, 1},
		{"/events/evt_1", "event", []string{"evt_1"}, 2},
		{"/events/evt_1/replay", "replay", []string{"evt_1"}, 3},
		{"/webhooks/shop/crm%2Fv2/resume", "resume", []string{"shop", "crm/v2"}, 4},
		{"/dead/retry", "dead-retry", nil, 2},
		{"/dead/delete", "dead-delete", nil, 2},
		{"/assets/style.css", "style", nil, 2},
		{"/callhook/nothing", "", nil, 0},
	} {
		r, ok := matchRoute(segments(tc.path))
		if tc.name == "" {
			if ok {
				t.Errorf("test %d: %s matched %+v", i, tc.path, r)
			}
			continue
		}
		if !ok || r.name != tc.name || strings.Join(r.args, "|") != strings.Join(tc.args, "|") || r.depth != tc.depth {
			t.Errorf("test %d: %s = %+v, %v; want %s %v depth %d", i, tc.path, r, ok, tc.name, tc.args, tc.depth)
		}
	}
}

func TestBasePath(t *testing.T) {
	for i, tc := range []struct {
		orig, stripped, want string
	}{
		{"/callhook/deliveries/msg_1", "/callhook/deliveries/msg_1", "/callhook/"},
		{"/ops/dash/deliveries/msg_1", "/deliveries/msg_1", "/ops/dash/"}, // handle_path /ops/dash/*
		{"/", "/", "/"},
		{"/dash/", "/", "/dash/"},
		{"/deliveries", "/deliveries", "/"},
		// A doubled slash must not make the base a protocol-relative URL.
		{"//evil.example/deliveries", "//evil.example/deliveries", "/evil.example/"},
		{"///evil.example/x/deliveries/msg_1", "///evil.example/x/deliveries/msg_1", "/evil.example/x/"},
		{"//", "//", "/"},
	} {
		r := httptest.NewRequest("GET", tc.stripped, nil)
		or := httptest.NewRequest("GET", tc.orig, nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.OriginalRequestCtxKey, *or))
		route, _ := matchRoute(segments(r.URL.EscapedPath()))
		if got := basePath(r, route.depth); got != tc.want {
			t.Errorf("test %d: base of %s (asked as %s) = %q, want %q", i, tc.stripped, tc.orig, got, tc.want)
		}
	}
}

// testDashboard is a dashboard over testAdmin's queue.
func testDashboard(t *testing.T, readOnly bool) (*Dashboard, *engine) {
	a, e := testAdmin(t)
	return &Dashboard{ReadOnly: readOnly, svc: a.svc, logger: zap.NewNop(), cop: http.NewCrossOriginProtection()}, e
}

func dash(h *Dashboard, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req, nil)
	return rec
}

var tokenPattern = regexp.MustCompile(`action="([^"]+)"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"`)

func TestDashboardPagesAndActions(t *testing.T) {
	h, e := testDashboard(t, false)
	const secret = "planted-9QmZ"
	enqueueTest(t, e,
		&queue.Delivery{ID: "msg_dead", Target: "shop", Webhook: "crm", Event: "after_call", CallID: "c-1", State: queue.Dead,
			Request:   queue.Request{Method: "POST", URL: "https://h/p?api_token=" + secret, Header: [][2]string{{"Authorization", "Bearer " + secret}}, Body: []byte(`{"k":"` + secret + `"}`)},
			LastError: "redirect not followed (302 to https://h/login?api_token=" + secret + ")",
			Attempts:  []queue.Attempt{{Start: time.Now(), Status: 302, Error: "to https://h/?token=" + secret, Response: []byte("echo " + secret)}}},
		&queue.Delivery{ID: "msg_pending", Target: "shop", Webhook: "crm", State: queue.Pending, NextAttempt: time.Now().Add(time.Hour), Request: queue.Request{Method: "POST", URL: "https://h/"}},
	)
	for _, path := range []string{"/", "/deliveries", "/deliveries?state=dead&webhook=crm", "/deliveries/msg_dead", "/deliveries/msg_pending", "/events", "/dead/retry?webhook=crm", "/dead/delete"} {
		rec := dash(h, httptest.NewRequest("GET", path, nil))
		body := rec.Body.String()
		if rec.Code != 200 || !strings.Contains(body, "</html>") {
			t.Fatalf("GET %s: %d %s", path, rec.Code, body)
		}
		if strings.Contains(body, secret) {
			t.Errorf("GET %s shows the secret: %s", path, body)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
	}
	for path, want := range map[string]int{"/deliveries/msg_none": 404, "/nothing": 404, "/deliveries?state=bogus": 400, "/deliveries/msg_dead/retry": 405} {
		if rec := dash(h, httptest.NewRequest("GET", path, nil)); rec.Code != want || !strings.Contains(rec.Body.String(), "</html>") {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
		}
	}

	// The page gives the cookie and the form's token.
	rec := dash(h, httptest.NewRequest("GET", "/deliveries/msg_dead", nil))
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookies %+v", cookies)
	}
	forms := map[string]string{}
	for _, m := range tokenPattern.FindAllStringSubmatch(rec.Body.String(), -1) {
		forms[m[1]] = m[2]
	}
	tok := forms["/deliveries/msg_dead/retry"]
	if tok == "" {
		t.Fatalf("no retry form on the page: %v", forms)
	}
	post := func(path, token string, hdr ...string) int {
		form := url.Values{"csrf": {token}}
		req := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(cookies[0])
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return dash(h, req).Code
	}
	if code := post("/deliveries/msg_dead/retry", tok, "Sec-Fetch-Site", "cross-site"); code != 403 {
		t.Errorf("cross-site POST: %d, want 403", code)
	}
	if code := post("/deliveries/msg_dead/retry", tok, "Origin", "https://evil.example"); code != 403 {
		t.Errorf("POST from another origin: %d, want 403", code)
	}
	if code := post("/deliveries/msg_dead/retry", ""); code != 403 {
		t.Errorf("POST without token: %d, want 403", code)
	}
	if code := post("/deliveries/msg_dead/retry", forms["/deliveries/msg_dead/delete"]); code != 403 {
		t.Errorf("POST with another action's token: %d, want 403", code)
	}
	if d, _ := e.q.Get(context.Background(), "msg_dead"); d.State != queue.Dead {
		t.Fatalf("a refused POST changed the delivery: %s", d.State)
	}
	if code := post("/deliveries/msg_dead/retry", tok, "Sec-Fetch-Site", "same-origin"); code != 303 {
		t.Fatalf("same-origin POST with the token: %d, want 303", code)
	}
	if d, _ := e.q.Get(context.Background(), "msg_dead"); d.State != queue.Pending {
		t.Errorf("after retry the delivery is %s", d.State)
	}
	if code := post("/deliveries/msg_dead/retry", tok); code != 409 {
		t.Errorf("retrying a pending delivery: %d, want 409", code)
	}

	enqueueTest(t, e, &queue.Delivery{ID: "msg_dead2", Target: "shop", Webhook: "crm", State: queue.Dead, Request: queue.Request{Method: "POST", URL: "https://h/"}})
	ro := &Dashboard{ReadOnly: true, svc: h.svc, logger: zap.NewNop(), cop: http.NewCrossOriginProtection()}
	rec = dash(ro, httptest.NewRequest("GET", "/deliveries/msg_dead2", nil))
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "<form method=\"post\"") || !strings.Contains(rec.Body.String(), "read-only") {
		t.Error("a read-only dashboard shows action forms")
	}
	if code := dash(ro, httptest.NewRequest("POST", "/deliveries/msg_dead2/retry", nil)).Code; code != 403 {
		t.Errorf("read-only POST: %d, want 403", code)
	}
}

// TestDashboardResume: a paused webhook is on the overview with a Resume
// form that lifts the pause.
func TestDashboardResume(t *testing.T) {
	h, e := testDashboard(t, false)
	ctx := context.Background()
	if err := e.q.SetPause(ctx, "shop", "crm v2", &queue.Pause{Target: "shop", Webhook: "crm v2", Since: time.Now(), Reason: "5 failures"}); err != nil {
		t.Fatal(err)
	}
	rec := dash(h, httptest.NewRequest("GET", "/ops/", nil))
	m := tokenPattern.FindStringSubmatch(rec.Body.String())
	if rec.Code != 200 || m == nil || m[1] != "/ops/webhooks/shop/crm%20v2/resume" {
		t.Fatalf("overview: %d, form %v\n%s", rec.Code, m, rec.Body.String())
	}
	req := httptest.NewRequest("POST", m[1], strings.NewReader(url.Values{"csrf": {m[2]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(rec.Result().Cookies()[0])
	if rec := dash(h, req); rec.Code != 303 || rec.Header().Get("Location") != "/ops/?done=resumed" {
		t.Fatalf("resume: %d %s", rec.Code, rec.Header().Get("Location"))
	}
	if ps, _ := e.q.Pauses(ctx); len(ps) != 0 {
		t.Errorf("still paused: %v", ps)
	}
}

// TestDashboardSyncCall: a failed sync call is marked in the list and on
// its page, which explains it and has no Retry (only Delete).
func TestDashboardSyncCall(t *testing.T) {
	h, e := testDashboard(t, false)
	enqueueTest(t, e, &queue.Delivery{ID: "msg_sync", Target: "shop", Webhook: "route", Event: "before_call", CallID: "c-1", State: queue.Dead,
		Request:   queue.Request{Method: "GET", URL: "https://h/route?caller=1"},
		LastError: "webhook route: sync call failed (not retried): http 502"})
	list := dash(h, httptest.NewRequest("GET", "/deliveries?state=dead", nil)).Body.String()
	if !strings.Contains(list, ">sync call</span>") {
		t.Errorf("the dead list does not mark the sync call:\n%s", list)
	}
	rec := dash(h, httptest.NewRequest("GET", "/deliveries/msg_sync", nil))
	page := rec.Body.String()
	if !strings.Contains(page, `id="sync-call"`) || strings.Contains(page, `id="retry"`) || !strings.Contains(page, `id="delete"`) {
		t.Errorf("the sync call's page:\n%s", page)
	}
	if d, _ := e.q.Get(context.Background(), "msg_sync"); d.State != queue.Dead {
		t.Errorf("state %s", d.State)
	}
}
