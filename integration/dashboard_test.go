package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"
)

// The planted secrets: one per place a credential can come from. None of
// them may leave through the admin API, the dashboard, the logs or the CLI.
var planted = map[string]string{
	"url query":           "qry-Secret-4kT9",
	"userinfo (Location)": "usr-Secret-7hW2",
	"authorization":       "hdr-Secret-2mQ8",
	"x-api-key":           "key-Secret-5vB3",
	"signing secret":      "sig-Secret-8pL1xZ",
	"receiver location":   "loc-Secret-3nR6",
	"receiver echo body":  "hdr-Secret-2mQ8", // the bad receiver echoes Authorization
	"event data":          "evt-Secret-6cJ4",
}

const (
	dashUser = "operator"
	dashPass = "dash-pass-Zx81"
)

// dashboardFixture is a real Caddy with the dashboard mounted twice
// (handle_path behind basic_auth, handle read-only) and deliveries in
// every state, made by real receivers.
type dashboardFixture struct {
	ids     map[string]map[string]string // call_id -> webhook -> delivery id
	events  map[string]string            // call_id -> event id
	badUp   *atomic.Bool
	redirUp *atomic.Bool // the redirecting receiver is fixed (answers 204)
	bad     *receiver
	logFile string
	auth    string // Authorization header of the operator
}

func startDashboardFixture(t *testing.T) *dashboardFixture {
	t.Helper()
	fx := &dashboardFixture{ids: map[string]map[string]string{}, events: map[string]string{}, badUp: new(atomic.Bool), redirUp: new(atomic.Bool)}
	good := newReceiver(t, nil)
	fx.bad = newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if fx.badUp.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		// A receiver that echoes what it was sent, token included.
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"bad receiver says no","you_sent":%q}`, r.Header.Get("Authorization"))
	})
	redirect := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if fx.redirUp.Load() {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Location", "https://bob:"+planted["userinfo (Location)"]+"@login.example/sso?api_token="+planted["receiver location"]+"&next=/hook")
		w.WriteHeader(http.StatusFound)
	})
	release := make(chan struct{})
	slow := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		select {
		case <-release:
		case <-time.After(2 * time.Minute):
		}
	})
	t.Cleanup(func() { close(release) }) // before the receivers close
	later := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })

	hash, err := bcrypt.GenerateFromPassword([]byte(dashPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	fx.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(dashUser+":"+dashPass))
	fx.logFile = filepath.Join(t.TempDir(), "caddy.log")

	site := fmt.Sprintf(`
	handle_path /ops/* {
		basic_auth {
			%[1]s %[2]s
		}
		callhook_dashboard
	}
	handle /callhook/* {
		callhook_dashboard {
			read_only
		}
	}
	handle {
		callhook {
			target shop
			event after_call
			webhook good {
				on after_call
				url %[3]s/good/{param.call_id}
				param call_id call.call_id
			}
			webhook bad {
				on after_call
				url "%[4]s/bad?token=%[9]s&keep=1"
				header Authorization "Bearer %[10]s"
				header X-Api-Key %[11]s
				secret %[12]s
				param call_id call.call_id
			}
			webhook redir {
				on after_call
				url %[5]s/r
				param call_id call.call_id
				# every attempt fails (3xx): its second failure, sent
				# 600ms after the first, pauses it, so the overview has
				# a webhook to resume
				disable_after 500ms
			}
			webhook slow {
				on after_call
				url %[6]s/slow
				timeout 1m
				param call_id call.call_id
			}
			webhook later {
				on after_call
				url %[7]s/later
				backoff 1h 2h
				param call_id call.call_id
			}
			webhook broken {
				on after_call
				url %[3]s/broken
				param call_id call.call_id
				param doubled "call.duration * 2"
			}
		}
	}`, dashUser, hash, good.URL, fx.bad.URL, redirect.URL, slow.URL, later.URL, "",
		planted["url query"], planted["authorization"], planted["x-api-key"], planted["signing secret"])
	cfg := caddyfile(t.TempDir(), "allow_destinations 127.0.0.1/32", site)
	cfg = withGlobalOptions(cfg, fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t\tlevel DEBUG\n\t}", fx.logFile))
	initServer(t, cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}

	// c-1 has no duration, so `broken` cannot render for it.
	post := func(i int, body string) {
		t.Helper()
		status, ans, _ := send(t, "POST", "/", "application/json", body, "X-Api-Key", planted["event data"])
		if status != 202 || len(ans.Deliveries) != 6 {
			t.Fatalf("event %d: status %d, %+v", i, status, ans)
		}
		call := fmt.Sprintf("c-%d", i)
		fx.ids[call] = map[string]string{}
		for _, d := range ans.Deliveries {
			fx.ids[call][d.Webhook] = d.ID
		}
	}
	// redir pauses itself at its second failure (disable_after 500ms):
	// c-2 is sent 600ms after c-1's redir delivery is dead, so c-2's
	// failure is the one that pauses it (with a shorter disable_after, two
	// failures can end too close together to pause, or a worker slow to
	// report the first can pause it at once). c-3 is sent once redir is
	// paused, so that its redir delivery always waits, pending, for the
	// resume (sent with the others, it would be dead or pending depending
	// on whether a worker had leased it before the pause).
	post(1, `{"call_id":"c-1","note":"api_key=`+planted["event data"]+`"}`)
	waitState(t, fx.ids["c-1"]["redir"], "dead")
	time.Sleep(600 * time.Millisecond)
	post(2, `{"call_id":"c-2","duration":10}`)
	waitStats(t, func(s adminStats) bool {
		return s.Delivered == 3 && s.Leased == 2 && s.Dead == 5 && s.Pending == 2
	})
	waitWebhookState(t, "shop/redir", "paused")
	post(3, `{"call_id":"c-3","duration":20}`)
	waitStats(t, func(s adminStats) bool {
		return s.Delivered == 5 && s.Leased == 3 && s.Dead == 6 && s.Pending == 4
	})
	for call, hooks := range fx.ids {
		var d struct {
			EventID string `json:"event_id"`
		}
		adminJSON(t, "GET", "/callhook/deliveries/"+hooks["good"], 200, &d)
		fx.events[call] = d.EventID
	}
	return fx
}

// noSecrets fails the test if any planted secret is in what.
func noSecrets(t *testing.T, where string, what []byte) {
	t.Helper()
	for place, s := range planted {
		if strings.Contains(string(what), s) {
			i := strings.Index(string(what), s)
			t.Errorf("%s shows the secret planted in the %s: …%s…", where, place, what[max(0, i-80):min(len(what), i+len(s)+20)])
		}
	}
}

// getPage fetches a dashboard page over plain HTTP, as the operator.
func (fx *dashboardFixture) getPage(t *testing.T, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", caddyBase+path, nil)
	req.Header.Set("Authorization", fx.auth)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, raw
}

// TestDashboardRedaction plants a secret in every place one can come from
// (URL query, user info, credential headers, the signing secret, a
// receiver's Location that lands in last_error and the attempt's error, a
// receiver's answer echoing the token, the event's own data and headers)
// and proves none of them leaves through the admin API, the dashboard's
// HTML, Caddy's log or the CLI.
func TestDashboardRedaction(t *testing.T) {
	fx := startDashboardFixture(t)

	// The admin API: lists, every delivery, every event, webhooks, stats.
	for _, path := range []string{"/callhook/deliveries?limit=1000", "/callhook/deliveries?state=dead", "/callhook/webhooks", "/callhook/stats", "/callhook/dead"} {
		_, raw, _ := adminCall(t, "GET", path)
		noSecrets(t, "GET "+path, raw)
	}
	var sawLocation bool
	for _, hooks := range fx.ids {
		for _, id := range hooks {
			_, raw, _ := adminCall(t, "GET", "/callhook/deliveries/"+id)
			noSecrets(t, "GET /callhook/deliveries/"+id, raw)
			if strings.Contains(string(raw), "api_token=[redacted]") {
				sawLocation = true
			}
		}
	}
	if !sawLocation {
		t.Error("no delivery shows the receiver's redirect with its token redacted: the Location case is not exercised")
	}
	for _, ev := range fx.events {
		status, raw, _ := adminCall(t, "GET", "/callhook/events/"+ev)
		if status != 200 {
			t.Errorf("GET /callhook/events/%s: %d %s", ev, status, raw)
		}
		noSecrets(t, "GET /callhook/events/"+ev, raw)
	}

	// The dashboard, every page.
	pages := []string{"/ops/", "/ops/deliveries", "/ops/deliveries?state=dead", "/ops/events", "/ops/dead/retry", "/ops/dead/delete", "/callhook/", "/callhook/deliveries"}
	for _, hooks := range fx.ids {
		for _, id := range hooks {
			pages = append(pages, "/ops/deliveries/"+id, "/callhook/deliveries/"+id)
		}
	}
	for _, ev := range fx.events {
		pages = append(pages, "/ops/events/"+ev)
	}
	for _, p := range pages {
		status, raw := fx.getPage(t, p)
		if status != 200 {
			t.Errorf("GET %s: %d %s", p, status, raw)
		}
		noSecrets(t, "dashboard "+p, raw)
	}

	// The CLI, a real binary against this Caddy's admin endpoint.
	bin := buildCaddy(t, t.TempDir())
	addr := fmt.Sprintf("localhost:%d", adminPort)
	for _, args := range [][]string{
		{"deliveries", "--state", "dead"},
		{"deliveries", "--format", "json"},
		{"deliveries", "--webhook", "redir", "--format", "json"},
		{"retry", fx.ids["c-1"]["good"]}, // delivered: refused, the error is printed
	} {
		out, _ := runCLI(t, bin, append(append([]string{"callhook"}, args...), "--address", addr)...)
		noSecrets(t, "caddy callhook "+strings.Join(args, " "), out)
	}
	out, err := runCLI(t, bin, "callhook", "deliveries", "--state", "dead", "--webhook", "redir", "--address", addr)
	if err != nil || !strings.Contains(string(out), fx.ids["c-2"]["redir"]) || !strings.Contains(string(out), "api_token=[redacted]") {
		t.Errorf("caddy callhook deliveries --state dead: %v\n%s", err, out)
	}

	// The log, at DEBUG.
	raw, err := os.ReadFile(fx.logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "api_token=[redacted]") {
		t.Error("the log has no redacted redirect reason: the outcome log case is not exercised")
	}
	noSecrets(t, "Caddy's log", raw)
}

func runCLI(t *testing.T, bin string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := osexec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir())
	return cmd.CombinedOutput()
}

// TestDashboardInBrowser loads every page in headless Chromium against a
// real Caddy, follows the links, presses retry, delete, retry all, delete
// all and replay and checks the queue changed, and checks that a
// cross-origin POST and a read-only dashboard refuse actions.
func TestDashboardInBrowser(t *testing.T) {
	tab := newTab(t)
	fx := startDashboardFixture(t)
	ctx, cancel := within(tab, 3*time.Minute)
	defer cancel()

	must, text := pageHelpers(t, ctx)
	seen := map[string]bool{}
	page := func() string { // the page's HTML, checked for secrets
		t.Helper()
		html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		must("reading the page", err)
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		seen[loc] = true
		noSecrets(t, "the page at "+loc, []byte(html))
		return html
	}
	// The operator's browser sends the basic_auth credentials, and no
	// JavaScript runs: every page and action must work without it.
	_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
	must("enabling the network domain", err)
	_, err = chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": fx.auth}})
	must("setting the credentials", err)
	_, err = chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
	must("disabling JavaScript", err)

	base := caddyBase + "/ops/"
	// Overview: counts by state, the webhooks.
	must("opening the overview", chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("count-dead"))))
	for id, want := range map[string]string{"count-pending": "4", "count-leased": "3", "count-delivered": "5", "count-dead": "6"} {
		if got := text("#" + id); got != want {
			t.Errorf("overview %s = %q, want %q", id, got, want)
		}
	}
	if got := text("#oldest-pending"); !strings.HasSuffix(got, "old") {
		t.Errorf("oldest pending: %q", got)
	}
	html := page()
	for _, w := range []string{"shop/good", "shop/bad", "shop/broken", "100.0%"} {
		if !strings.Contains(html, w) {
			t.Errorf("the overview lacks %q", w)
		}
	}
	screenshot(t, ctx, "dashboard-overview.png")

	// Follow the nav to the deliveries, filter by the form.
	must("following Deliveries", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`nav a[href="/ops/deliveries"]`)), chromedp.WaitVisible(chromedp.ID("deliveries"))))
	html = page()
	for _, hooks := range fx.ids {
		for _, id := range hooks {
			if !strings.Contains(html, id) {
				t.Errorf("the deliveries page lacks %s", id)
			}
		}
	}
	must("filtering dead ones of webhook bad", chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`select[name="state"]`), "dead"),
		chromedp.SetValue(chromedp.CSS(`input[name="webhook"]`), "bad"),
		chromedp.Click(chromedp.CSS(`form.filters button`)),
		chromedp.WaitVisible(chromedp.CSS(`#retry-all`)),
	))
	rows, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#deliveries tbody tr[data-id]`)))
	must("reading the rows", err)
	if len(rows) != 3 {
		t.Errorf("dead deliveries of bad: %d rows, want 3", len(rows))
	}
	page()

	// One delivery: the request redacted, each attempt.
	badID := fx.ids["c-1"]["bad"]
	must("following a delivery", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href="/ops/deliveries/`+badID+`"]`)), chromedp.WaitVisible(chromedp.ID("state"))))
	if got := text("#state"); got != "dead" {
		t.Errorf("state %q", got)
	}
	if got := text("#request-url"); !strings.Contains(got, "token=[redacted]&keep=1") {
		t.Errorf("request URL %q", got)
	}
	if got := text("#attempts"); !strings.Contains(got, "HTTP 400") || !strings.Contains(got, "ms") {
		t.Errorf("attempts %q", got)
	}
	html = page()
	if !strings.Contains(html, "[redacted]") || !strings.Contains(html, "bad receiver says no") {
		t.Errorf("the delivery page does not show the redacted request and the answer")
	}
	screenshot(t, ctx, "dashboard-delivery.png")

	// Retry it, with the receiver fixed: the queue changes.
	fx.badUp.Store(true)
	must("pressing Retry", chromedp.Do(ctx, chromedp.Click(chromedp.ID("retry")), chromedp.WaitVisible(chromedp.CSS(".flash"))))
	if got := text(".flash"); !strings.Contains(got, "Retried") {
		t.Errorf("flash after retry: %q", got)
	}
	waitState(t, badID, "delivered")

	// The redirected one: its reason is redacted; delete it.
	redirID := fx.ids["c-1"]["redir"]
	must("opening a redirected delivery", chromedp.Do(ctx, chromedp.Navigate(base+"deliveries/"+redirID), chromedp.WaitVisible(chromedp.ID("last-error"))))
	if got := text("#last-error"); !strings.Contains(got, "api_token=[redacted]") {
		t.Errorf("last error %q", got)
	}
	page()
	must("pressing Delete", chromedp.Do(ctx, chromedp.Click(chromedp.ID("delete")), chromedp.WaitVisible(chromedp.CSS(".flash"))))
	if status, _, _ := adminCall(t, "GET", "/callhook/deliveries/"+redirID); status != 404 {
		t.Errorf("after delete, GET the delivery: %d, want 404", status)
	}

	// Retry all dead of webhook bad, after the preview.
	must("opening dead of bad", chromedp.Do(ctx, chromedp.Navigate(base+"deliveries?state=dead&webhook=bad"), chromedp.WaitVisible(chromedp.ID("retry-all"))))
	must("pressing Retry all", chromedp.Do(ctx, chromedp.Click(chromedp.ID("retry-all")), chromedp.WaitVisible(chromedp.ID("preview"))))
	if got := text("#preview"); !strings.HasPrefix(got, "2 dead deliveries will be put back") {
		t.Errorf("preview %q", got)
	}
	page()
	must("confirming", chromedp.Do(ctx, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.CSS(".flash"))))
	if got := text(".flash"); !strings.Contains(got, "Retried 2 dead deliveries") {
		t.Errorf("flash %q", got)
	}
	fx.bad.waitHits(t, 6)
	if ds, _ := listDeliveries(t, "state=dead&webhook=bad"); len(ds) != 0 {
		t.Errorf("%d dead deliveries of bad left after retry all", len(ds))
	}

	// Delete all dead of webhook redir, after the preview.
	must("opening dead of redir", chromedp.Do(ctx, chromedp.Navigate(base+"deliveries?state=dead&webhook=redir"), chromedp.WaitVisible(chromedp.ID("delete-all"))))
	must("pressing Delete all", chromedp.Do(ctx, chromedp.Click(chromedp.ID("delete-all")), chromedp.WaitVisible(chromedp.ID("preview"))))
	if got := text("#preview"); !strings.HasPrefix(got, "1 dead delivery will be deleted") {
		t.Errorf("preview %q", got)
	}
	must("confirming", chromedp.Do(ctx, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.CSS(".flash"))))
	if ds, _ := listDeliveries(t, "state=dead&webhook=redir"); len(ds) != 0 {
		t.Errorf("%d dead deliveries of redir left after delete all", len(ds))
	}

	// Events: follow the nav, open one, replay it.
	must("following Events", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`nav a[href="/ops/events"]`)), chromedp.WaitVisible(chromedp.ID("events"))))
	page()
	ev := fx.events["c-2"]
	must("following an event", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#events a[href="/ops/events/`+ev+`"]`)), chromedp.WaitVisible(chromedp.ID("replay"))))
	if got := text("#event-data"); !strings.Contains(got, `"call_id": "c-2"`) {
		t.Errorf("event data %q", got)
	}
	page()
	// Replay first previews what goes out again, under new IDs.
	must("pressing Replay", chromedp.Do(ctx, chromedp.Click(chromedp.ID("replay")), chromedp.WaitVisible(chromedp.ID("confirm-replay"))))
	if got := text("#preview"); !strings.Contains(got, "shop/good") || !strings.Contains(got, "new ID") {
		t.Errorf("replay preview %q", got)
	}
	page()
	_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("confirm-replay")))
	must("confirming Replay", err)
	must("after replay", chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(".flash"))))
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	newEv := strings.TrimPrefix(strings.SplitN(loc, "?", 2)[0], base+"events/")
	if newEv == ev || newEv == "" {
		t.Fatalf("replay landed on %s", loc)
	}
	if ds, _ := listDeliveries(t, "event_id="+url.QueryEscape(newEv)); len(ds) != 6 {
		t.Errorf("the replayed event has %d deliveries, want 6", len(ds))
	}

	// Resume: every paused webhook on the overview has a Resume button.
	must("opening the overview", chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("webhooks"))))
	// webhook redir paused itself (disable_after 500ms, every attempt a 3xx).
	// Its receiver is fixed first: the deliveries that waited behind the
	// pause (c-3's and the replayed event's) must then be delivered.
	must("finding the paused webhook", chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`ul.paused button`))))
	fx.redirUp.Store(true)
	must("pressing Resume", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`ul.paused button`)), chromedp.WaitVisible(chromedp.CSS(".flash"))))
	if status, raw, _ := adminCall(t, "GET", "/callhook/webhooks"); status != 200 || strings.Contains(string(raw), `"paused"`) {
		t.Errorf("after Resume, GET /callhook/webhooks: %d %s; want no paused webhook", status, raw)
	}
	waitState(t, fx.ids["c-3"]["redir"], "delivered")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ds, _ := listDeliveries(t, "state=delivered&webhook=redir&event_id="+url.QueryEscape(newEv)); len(ds) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replayed event's redir delivery, waiting behind the pause, was not delivered after Resume")
		}
	}

	// A cross-origin form, even one carrying a valid token, is refused.
	victim := fx.ids["c-1"]["broken"] // dead: never rendered
	must("opening the victim", chromedp.Do(ctx, chromedp.Navigate(base+"deliveries/"+victim), chromedp.WaitVisible(chromedp.ID("delete"))))
	attrs, err := chromedp.Run(ctx, chromedp.Attributes(chromedp.CSS(`form[action$="/delete"] input[name=csrf]`)))
	must("reading the form token", err)
	token := attrs["value"]
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%sdeliveries/%s/delete"><input type="hidden" name="csrf" value="%s"><button id="go">win a prize</button></form>`, base, victim, token)
	}))
	defer evil.Close()
	must("opening the other site", chromedp.Do(ctx, chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.ID("go"))))
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("go")))
	must("posting from the other site", err)
	if resp.Status != http.StatusForbidden {
		t.Errorf("cross-origin POST answered %d, want 403", resp.Status)
	}
	if d := waitState(t, victim, "dead"); d.ID != victim {
		t.Error("the cross-origin POST deleted the delivery")
	}

	// The read-only mount shows no actions and refuses them.
	must("opening the read-only dashboard", chromedp.Do(ctx, chromedp.Navigate(caddyBase+"/callhook/deliveries/"+victim), chromedp.WaitVisible(chromedp.ID("state"))))
	if forms, _ := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`form[method="post"]`), chromedp.AtLeast(0))); len(forms) != 0 {
		t.Errorf("the read-only dashboard shows %d action forms", len(forms))
	}
	if got := text(".badge.ro"); got != "read-only" {
		t.Errorf("read-only badge %q", got)
	}

	// 360 px wide: no page scrolls sideways (tables scroll in their box).
	_, err = chromedp.Run(ctx, chromedp.EmulateViewport(360, 740))
	must("narrowing the window", err)
	for _, p := range []string{base, base + "deliveries", base + "deliveries/" + fx.ids["c-3"]["bad"], base + "events", base + "events/" + ev} {
		must("opening "+p, chromedp.Do(ctx, chromedp.Navigate(p), chromedp.WaitVisible(chromedp.CSS("main"))))
		w, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth`))
		must("measuring "+p, err)
		if w > 360 {
			t.Errorf("%s is %v px wide at a 360 px viewport", p, w)
		}
		// A one-word cell (after_call, delivered, shop/good) is never
		// broken mid-word: its table scrolls instead.
		broken, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("td, th")].filter(c => !c.classList.contains("err")).flatMap(c => {
			const out = [], walk = document.createTreeWalker(c, NodeFilter.SHOW_TEXT);
			for (let n; (n = walk.nextNode()); ) {
				const w = n.textContent.trim();
				if (!w || /\s/.test(w)) continue;
				const r = document.createRange(); r.selectNodeContents(n);
				if (new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1) out.push(w);
			}
			return out;
		})`))
		must("measuring the cells of "+p, err)
		if len(broken) > 0 {
			t.Errorf("%s breaks these words across lines at 360 px: %q", p, broken)
		}
	}
	t.Logf("pages checked in the browser: %d", len(seen))
}

// screenshot saves the tab as docs/<name> when CALLHOOK_SCREENSHOTS=1.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("CALLHOOK_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("..", "docs", name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved docs/%s", name)
}
