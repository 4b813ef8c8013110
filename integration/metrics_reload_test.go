package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestMetricsForgetRemovedWebhooks reloads a config without one of its
// webhooks and scrapes: the removed webhook's series are gone (else every
// webhook ever configured stays, and cardinality grows with reloads),
// the kept one's go on counting.
func TestMetricsForgetRemovedWebhooks(t *testing.T) {
	rc := newReceiver(t, nil)
	dir := t.TempDir()
	hook := func(name string) string {
		return fmt.Sprintf(`
			webhook %s {
				on after_call
				url %s/%s
				param call_id call.call_id
			}`, name, rc.URL, name)
	}
	site := func(hooks ...string) string {
		return `
	handle /calls/* {
		callhook {
			target shop` + strings.Join(hooks, "") + `
		}
	}`
	}
	startCaddyDir(t, dir, "allow_destinations 127.0.0.1/32", site(hook("kept"), hook("gone")))
	if status, ans := postJSON(t, "/calls/after_call", `{"call_id":"m-1"}`); status != 202 {
		t.Fatalf("status %d, %+v", status, ans)
	}
	waitMetrics(t, map[string]float64{
		`callhook_deliveries_total{outcome="delivered",target="shop",webhook="kept"}`: 1,
		`callhook_deliveries_total{outcome="delivered",target="shop",webhook="gone"}`: 1,
	})

	reload(t, dir, "allow_destinations 127.0.0.1/32", site(hook("kept")))
	got := scrapeMetrics(t)
	for series := range got {
		// Only this test's target: other tests of the package leave series
		// of their own "gone" webhooks, whose engines were replaced (a new
		// queue directory), not reloaded.
		if strings.Contains(series, `target="shop",webhook="gone"`) {
			t.Errorf("the removed webhook's series is still exported: %s", series)
		}
	}
	if got[`callhook_deliveries_total{outcome="delivered",target="shop",webhook="kept"}`] != 1 {
		t.Errorf("the kept webhook's count was lost: %v", got)
	}
	if status, ans := postJSON(t, "/calls/after_call", `{"call_id":"m-2"}`); status != 202 {
		t.Fatalf("status %d, %+v", status, ans)
	}
	waitMetrics(t, map[string]float64{
		`callhook_deliveries_total{outcome="delivered",target="shop",webhook="kept"}`: 2,
	})
}
