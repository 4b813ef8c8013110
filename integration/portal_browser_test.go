package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestPortalInBrowser drives the customer portal in headless Chromium, as
// two customers who share a browser: each sees its own deliveries only,
// the other's IDs answer 404, the other's buttons are refused, an empty
// placeholder answers 403, and "Send test" reaches the receiver. With
// CALLHOOK_SCREENSHOTS=1 it saves docs/portal-overview.png and
// docs/portal-webhook.png.
func TestPortalInBrowser(t *testing.T) {
	tab := newTab(t)
	fx := startPortalFixture(t)
	ctx, cancel := within(tab, 3*time.Minute)
	defer cancel()
	must, text := pageHelpers(t, ctx)
	html := func() string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		must("reading the page", err)
		return s
	}
	signIn := func(user string) {
		t.Helper()
		h := network.Headers{}
		if user != "" {
			h["Authorization"] = fx.auth[user]
		}
		_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h})
		must("signing in as "+user, err)
	}
	_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
	must("enabling the network domain", err)
	_, err = chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
	must("disabling JavaScript", err)
	base := caddyBase + "/portal/"

	// acme: its counts, its webhooks, its deliveries; nothing of globex.
	signIn("acme")
	must("opening acme's portal", chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("count-dead"))))
	for id, want := range map[string]string{"count-delivered": "4", "count-dead": "2", "count-pending": "0", "scope": "acme"} {
		if got := text("#" + id); got != want {
			t.Errorf("acme's overview %s = %q, want %q", id, got, want)
		}
	}
	page := html()
	for _, s := range append([]string{"globex", fx.globexEv}, fx.globex["crm"]...) {
		if strings.Contains(page, s) {
			t.Errorf("acme's overview shows %q", s)
		}
	}
	screenshot(t, ctx, "portal-overview.png")
	must("following Deliveries", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`nav a[href="/portal/deliveries"]`)), chromedp.WaitVisible(chromedp.ID("deliveries"))))
	rows, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#deliveries tbody tr[data-id]`)))
	must("reading the rows", err)
	if len(rows) != 6 {
		t.Errorf("acme's deliveries: %d rows, want its 6", len(rows))
	}
	for _, r := range rows {
		if id := r.AttributeValue("data-id"); strings.Contains(strings.Join(fx.globex["crm"], " "), id) {
			t.Errorf("acme's deliveries list globex's %s", id)
		}
	}
	if n, _ := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`form.filters input[name="target"]`), chromedp.AtLeast(0))); len(n) != 0 {
		t.Error("the portal's filter form offers a target field")
	}

	// The webhook page and Send test.
	must("opening acme/leads", chromedp.Do(ctx, chromedp.Navigate(base+"webhooks/acme/leads"), chromedp.WaitVisible(chromedp.ID("send-test"))))
	if got := text("#webhook-settings"); !strings.Contains(got, "signed") || strings.Contains(html(), testSecret) {
		t.Errorf("webhook settings: %q", got)
	}
	must("sending a test", chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("test-data"), `{"call_id":"browser-1"}`),
		chromedp.Click(chromedp.ID("send-test")),
		chromedp.WaitVisible(chromedp.ID("test-result"))))
	if got := text("#test-outcome"); got != "delivered" {
		t.Errorf("test outcome %q", got)
	}
	if got := text("#test-request-headers"); !strings.Contains(got, "msg_test_") || !strings.Contains(got, "webhook-signature") {
		t.Errorf("test request headers %q", got)
	}
	if got := text("#test-request-body"); !strings.Contains(got, "browser-1") {
		t.Errorf("test request body %q", got)
	}
	screenshot(t, ctx, "portal-webhook.png")

	// globex's IDs answer 404 to acme.
	for _, path := range []string{"deliveries/" + fx.globex["crm"][0], "events/" + fx.globexEv, "webhooks/globex/crm"} {
		must("opening globex's "+path, chromedp.Do(ctx, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS(".error"))))
		if got := text("h1"); got != "404 Not Found" {
			t.Errorf("acme opening %s: %q", path, got)
		}
	}

	// globex opens its dead delivery; acme signs in to the same browser
	// and presses Retry: refused.
	signIn("globex")
	gDead := fx.globex["crm"][0]
	must("opening globex's dead delivery", chromedp.Do(ctx, chromedp.Navigate(base+"deliveries/"+gDead), chromedp.WaitVisible(chromedp.ID("retry"))))
	if got := text("#scope"); got != "globex" {
		t.Errorf("globex's scope badge %q", got)
	}
	if page := html(); strings.Contains(page, "acme") {
		t.Error("globex's page mentions acme")
	}
	signIn("acme")
	must("pressing globex's Retry as acme", chromedp.Do(ctx, chromedp.Click(chromedp.ID("retry")), chromedp.WaitVisible(chromedp.CSS(".error"))))
	if got := text("h1"); got != "404 Not Found" {
		t.Errorf("acme pressing globex's Retry: %q", got)
	}
	var d struct {
		State     string `json:"state"`
		RetriedAt string `json:"retried_at"`
	}
	adminJSON(t, "GET", "/callhook/deliveries/"+gDead, 200, &d)
	if d.State != "dead" || d.RetriedAt != "" {
		t.Errorf("globex's delivery is %s, retried at %q, after acme pressed Retry", d.State, d.RetriedAt)
	}

	// globex sees its own, not acme's.
	signIn("globex")
	must("opening globex's portal", chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("count-dead"))))
	if got, want := text("#count-dead")+"/"+text("#count-delivered"), "1/0"; got != want {
		t.Errorf("globex's dead/delivered = %s, want %s", got, want)
	}

	// No user: the placeholder is empty, and the page says so.
	signIn("")
	must("opening the portal with no user", chromedp.Do(ctx, chromedp.Navigate(caddyBase+"/open/"), chromedp.WaitVisible(chromedp.CSS(".error"))))
	if got := text("h1"); got != "403 Forbidden" || !strings.Contains(text(".error"), "empty for this request") {
		t.Errorf("no user: %q, %q", got, text(".error"))
	}
}
