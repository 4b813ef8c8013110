package integration

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// portalFixture is a real Caddy with two targets (acme, globex), each with
// a webhook that delivers and one that dies at its first failure, and the
// customer portal (callhook_dashboard { target {http.auth.user.id} })
// behind basic_auth with one user per target.
type portalFixture struct {
	acme, globex     map[string][]string // webhook -> delivery IDs
	acmeEv, globexEv string              // an event of each
	auth             map[string]string   // user -> Authorization
}

const portalPass = "portal-pass-Qk27"

func startPortalFixture(t *testing.T) *portalFixture {
	t.Helper()
	good := newReceiver(t, nil)
	bad := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	hash, err := bcrypt.GenerateFromPassword([]byte(portalPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	fx := &portalFixture{acme: map[string][]string{}, globex: map[string][]string{}, auth: map[string]string{}}
	for _, u := range []string{"acme", "globex", "stranger"} {
		fx.auth[u] = "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+portalPass))
	}
	users := fmt.Sprintf("acme %[1]s\n\t\t\tglobex %[1]s\n\t\t\tstranger %[1]s", hash)
	site := fmt.Sprintf(`
	handle /portal/* {
		basic_auth {
			%[1]s
		}
		callhook_dashboard {
			target {http.auth.user.id}
		}
	}
	handle_path /look/* {
		basic_auth {
			%[1]s
		}
		callhook_dashboard {
			target {http.auth.user.id}
			read_only
		}
	}
	handle /open/* {
		# no auth in front: the placeholder is empty
		callhook_dashboard {
			target {http.auth.user.id}
		}
	}
	handle /acme/* {
		callhook {
			target acme
			webhook crm {
				on after_call
				url %[2]s/acme/crm
				param call_id call.call_id
			}
			webhook leads {
				on after_call
				url %[2]s/acme/leads
				secret %[4]s
				param call_id call.call_id
			}
			webhook erp {
				on after_call
				url %[3]s/acme/erp
				max_attempts 1
				param call_id call.call_id
			}
		}
	}
	handle /globex/* {
		callhook {
			target globex
			webhook crm {
				on after_call
				url %[3]s/globex/crm
				max_attempts 1
				param call_id call.call_id
			}
		}
	}`, users, good.URL, bad.URL, testSecret)
	initServer(t, caddyfile(t.TempDir(), "allow_destinations 127.0.0.1/32", site), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	post := func(path, call string, into map[string][]string) string {
		t.Helper()
		status, ans := postJSON(t, path, `{"call_id":"`+call+`"}`)
		if status != 202 {
			t.Fatalf("%s: %d %+v", path, status, ans)
		}
		for _, d := range ans.Deliveries {
			into[d.Webhook] = append(into[d.Webhook], d.ID)
		}
		return ans.EventID
	}
	fx.acmeEv = post("/acme/after_call", "a-1", fx.acme)
	post("/acme/after_call", "a-2", fx.acme)
	fx.globexEv = post("/globex/after_call", "g-1", fx.globex)
	waitStats(t, func(s adminStats) bool { return s.Delivered == 4 && s.Dead == 3 })
	return fx
}

// portalClient is one browser of the portal: its cookie jar is kept when
// its user changes, as a shared computer's would be.
type portalClient struct {
	t    *testing.T
	c    *http.Client
	user string
	fx   *portalFixture
}

func (fx *portalFixture) client(t *testing.T, user string) *portalClient {
	jar, _ := cookiejar.New(nil)
	return &portalClient{t: t, user: user, fx: fx, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (pc *portalClient) do(method, path string, form url.Values) (int, string, http.Header) {
	pc.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, caddyBase+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if pc.user != "" {
		req.Header.Set("Authorization", pc.fx.auth[pc.user])
	}
	res, err := pc.c.Do(req)
	if err != nil {
		pc.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw), res.Header
}

var (
	tokenRe = regexp.MustCompile(`action="([^"]+)"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"`)
	errorRe = regexp.MustCompile(`<p class="error" role="alert"[^>]*>([^<]*)</p>`)
)

// token is the form token of the form posting to action on page.
func token(t *testing.T, page, action string) string {
	t.Helper()
	for _, m := range tokenRe.FindAllStringSubmatch(page, -1) {
		if m[1] == action {
			return m[2]
		}
	}
	t.Fatalf("no form posting to %s on the page:\n%s", action, page)
	return ""
}

func pageError(page string) string {
	if m := errorRe.FindStringSubmatch(page); m != nil {
		return m[1]
	}
	return ""
}

// TestPortalScope checks over HTTP that each customer of the portal sees,
// counts and acts on its own target only: another target's IDs answer
// exactly as unknown ones, its actions are refused even with a valid form
// token, bulk actions and previews are limited, and an empty or unknown
// target is refused.
func TestPortalScope(t *testing.T) {
	fx := startPortalFixture(t)
	acme, globex := fx.client(t, "acme"), fx.client(t, "globex")
	gDead, aDead := fx.globex["crm"][0], fx.acme["erp"]
	others := append([]string{"globex", fx.globexEv}, fx.globex["crm"]...)
	leak := func(who, where, page string, of []string) {
		t.Helper()
		for _, s := range of {
			if strings.Contains(page, s) {
				t.Errorf("%s sees %q on %s", who, s, where)
			}
		}
	}

	// Counts and lists of the own target only.
	for _, c := range []struct {
		pc              *portalClient
		delivered, dead string
		own, notOwn     []string
		ownHooks        string
	}{
		{acme, "4", "2", append(fx.acme["crm"], fx.acme["erp"]...), others, "acme/leads"},
		{globex, "0", "1", fx.globex["crm"], append(append([]string{"acme", fx.acmeEv}, fx.acme["crm"]...), fx.acme["erp"]...), "globex/crm"},
	} {
		status, page, _ := c.pc.do("GET", "/portal/", nil)
		if status != 200 || !strings.Contains(page, `id="count-delivered">`+c.delivered+`<`) || !strings.Contains(page, `id="count-dead">`+c.dead+`<`) || !strings.Contains(page, c.ownHooks) {
			t.Errorf("%s's overview: %d\n%s", c.pc.user, status, page)
		}
		if strings.Contains(page, "queue <code>") {
			t.Errorf("%s's overview shows the operator's queue settings", c.pc.user)
		}
		leak(c.pc.user, "the overview", page, c.notOwn)
		for _, path := range []string{"/portal/deliveries", "/portal/deliveries?target=" + c.notOwn[0], "/portal/deliveries?state=dead", "/portal/events", "/portal/events?target=" + c.notOwn[0], "/portal/dead/retry?target=" + c.notOwn[0]} {
			status, page, _ := c.pc.do("GET", path, nil)
			if status != 200 {
				t.Errorf("%s GET %s: %d %s", c.pc.user, path, status, pageError(page))
			}
			leak(c.pc.user, path, page, c.notOwn)
			if strings.HasPrefix(path, "/portal/deliveries") && !strings.Contains(path, "dead") {
				for _, id := range c.own {
					if !strings.Contains(page, id) {
						t.Errorf("%s GET %s lacks its own %s", c.pc.user, path, id)
					}
				}
			}
		}
	}
	if _, page, _ := acme.do("GET", "/portal/dead/retry?target=globex", nil); !strings.Contains(page, "<strong>2 dead deliveries</strong>") {
		t.Errorf("acme's bulk retry preview with target=globex: %s", page)
	}

	// Another target's IDs answer as unknown ones, word for word.
	unknown := "msg_00000000000000000000000000000000"
	for _, p := range [][2]string{{"/portal/deliveries/", gDead}, {"/portal/events/", fx.globexEv}, {"/portal/webhooks/globex/", "crm"}} {
		s1, other, _ := acme.do("GET", p[0]+p[1], nil)
		s2, none, _ := acme.do("GET", p[0]+unknown, nil)
		if p[0] == "/portal/webhooks/globex/" {
			s2, none, _ = acme.do("GET", "/portal/webhooks/nobody/"+unknown, nil)
			none = strings.NewReplacer(unknown, "crm", "nobody", "globex").Replace(none)
		}
		if s1 != 404 || s2 != 404 || pageError(other) != strings.ReplaceAll(pageError(none), unknown, p[1]) || pageError(other) == "" {
			t.Errorf("acme GET %s%s: %d %q; an unknown one: %d %q", p[0], p[1], s1, pageError(other), s2, pageError(none))
		}
	}

	// The replay preview (a GET) of another target's event answers as an
	// unknown event's does.
	s1, other, _ := acme.do("GET", "/portal/events/"+fx.globexEv+"/replay", nil)
	s2, none, _ := acme.do("GET", "/portal/events/"+unknown+"/replay", nil)
	if s1 != 404 || s2 != 404 || pageError(other) != strings.ReplaceAll(pageError(none), unknown, fx.globexEv) || strings.Contains(other, "crm") {
		t.Errorf("acme GET globex's replay preview: %d %q; an unknown one: %d %q", s1, pageError(other), s2, pageError(none))
	}

	// Actions on another target's work are refused, even with a valid
	// token: globex opens its dead delivery in a browser, acme signs in to
	// the same browser and presses its buttons.
	shared := fx.client(t, "globex")
	_, page, _ := shared.do("GET", "/portal/deliveries/"+gDead, nil)
	retryTok := token(t, page, "/portal/deliveries/"+gDead+"/retry")
	deleteTok := token(t, page, "/portal/deliveries/"+gDead+"/delete")
	_, page, _ = shared.do("GET", "/portal/events/"+fx.globexEv+"/replay", nil)
	replayTok := token(t, page, "/portal/events/"+fx.globexEv+"/replay")
	_, page, _ = shared.do("GET", "/portal/webhooks/globex/crm", nil)
	testTok := token(t, page, "/portal/webhooks/globex/crm/test")
	shared.user = "acme"
	for action, tok := range map[string]string{
		"/portal/deliveries/" + gDead + "/retry":    retryTok,
		"/portal/deliveries/" + gDead + "/delete":   deleteTok,
		"/portal/events/" + fx.globexEv + "/replay": replayTok,
		"/portal/webhooks/globex/crm/test":          testTok,
	} {
		status, page, _ := shared.do("POST", action, url.Values{"csrf": {tok}})
		if status != 404 {
			t.Errorf("acme POST %s with globex's token: %d %s, want 404", action, status, pageError(page))
		}
		leak("acme", "the answer of "+action, strings.ReplaceAll(page, gDead, ""), []string{"globex/crm"})
	}
	var d struct {
		State     string `json:"state"`
		RetriedAt string `json:"retried_at"`
	}
	adminJSON(t, "GET", "/callhook/deliveries/"+gDead, 200, &d)
	if d.State != "dead" {
		t.Errorf("globex's delivery is %s after acme's actions, want dead", d.State)
	}

	// A bulk retry names globex in its form: only acme's are retried.
	_, page, _ = acme.do("GET", "/portal/dead/retry", nil)
	status, _, hdr := acme.do("POST", "/portal/dead/retry", url.Values{"csrf": {token(t, page, "/portal/dead/retry")}, "target": {"globex"}})
	if status != 303 || !strings.Contains(hdr.Get("Location"), "n=2") || strings.Contains(hdr.Get("Location"), "globex") {
		t.Errorf("acme's bulk retry: %d, Location %q", status, hdr.Get("Location"))
	}
	adminJSON(t, "GET", "/callhook/deliveries/"+gDead, 200, &d)
	if d.State != "dead" || d.RetriedAt != "" {
		t.Errorf("globex's delivery after acme's bulk retry: %s, retried at %q", d.State, d.RetriedAt)
	}
	for _, id := range aDead {
		adminJSON(t, "GET", "/callhook/deliveries/"+id, 200, &d)
		if d.RetriedAt == "" {
			t.Errorf("acme's dead delivery %s was not retried", id)
		}
	}

	// Its own actions work.
	_, page, _ = acme.do("GET", "/portal/events/"+fx.acmeEv+"/replay", nil)
	if status, page, _ := acme.do("POST", "/portal/events/"+fx.acmeEv+"/replay", url.Values{"csrf": {token(t, page, "/portal/events/"+fx.acmeEv+"/replay")}}); status != 303 {
		t.Errorf("acme's replay of its own event: %d %s", status, pageError(page))
	}

	// The test form: a few a minute per webhook, then 429.
	_, page, _ = acme.do("GET", "/portal/webhooks/acme/crm", nil)
	tok := token(t, page, "/portal/webhooks/acme/crm/test")
	for i := 1; i <= 6; i++ {
		status, page, hdr := acme.do("POST", "/portal/webhooks/acme/crm/test", url.Values{"csrf": {tok}, "event": {"after_call"}, "data": {`{"call_id":"form-` + fmt.Sprint(i) + `"}`}})
		switch {
		case i <= 5 && (status != 200 || !strings.Contains(page, `id="test-status">204<`)):
			t.Errorf("test %d from the form: %d %s", i, status, pageError(page))
		case i == 6 && (status != 429 || !strings.Contains(page, "Too many tests") || hdr.Get("Retry-After") == ""):
			t.Errorf("test 6 from the form: %d, Retry-After %q, %s", status, hdr.Get("Retry-After"), pageError(page))
		}
	}
	// A render error from the form is a 422 on the page.
	_, page, _ = acme.do("GET", "/portal/webhooks/acme/erp", nil)
	if status, page, _ := acme.do("POST", "/portal/webhooks/acme/erp/test", url.Values{"csrf": {token(t, page, "/portal/webhooks/acme/erp/test")}, "data": {"{nope"}}); status != 400 || !strings.Contains(page, "not valid JSON") {
		t.Errorf("bad JSON from the form: %d %s", status, pageError(page))
	}

	// read_only combines with target.
	look := fx.client(t, "acme")
	status, page, _ = look.do("GET", "/look/deliveries/"+aDead[0], nil)
	if status != 200 || strings.Contains(page, "/retry") || strings.Contains(page, "Send test") {
		t.Errorf("read-only portal page: %d, has actions: %s", status, page)
	}
	if status, _, _ := look.do("GET", "/look/deliveries/"+gDead, nil); status != 404 {
		t.Errorf("read-only portal, globex's delivery: %d", status)
	}
	if status, page, _ := look.do("POST", "/look/webhooks/acme/crm/test", url.Values{"csrf": {"x"}}); status != 403 || !strings.Contains(pageError(page), "read-only") {
		t.Errorf("read-only portal, a test: %d %s", status, pageError(page))
	}

	// An empty or unknown target is refused, never "every target".
	for _, c := range []struct{ user, path, want string }{
		{"", "/open/", "empty for this request"},
		{"", "/open/deliveries/" + gDead, "empty for this request"},
		{"stranger", "/portal/", `no webhooks for &#34;stranger&#34;`},
		{"stranger", "/portal/deliveries?target=acme", `no webhooks for &#34;stranger&#34;`},
	} {
		pc := fx.client(t, c.user)
		status, page, _ := pc.do("GET", c.path, nil)
		if status != 403 || !strings.Contains(page, c.want) {
			t.Errorf("%q GET %s: %d %s", c.user, c.path, status, page)
		}
		leak(c.user, c.path, page, append(others, fx.acme["crm"]...))
	}
}
