package integration

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// withGlobalOptions adds Caddyfile global options beside callhook's to a
// config made by caddyfile.
func withGlobalOptions(cfg, opts string) string {
	return strings.Replace(cfg, "{\n", "{\n"+opts+"\n", 1)
}

// scrapeMetrics reads the admin endpoint's /metrics into one value per
// series, keyed name{label="value",...} with labels sorted; a histogram is
// its _count and _sum.
func scrapeMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://localhost:%d/metrics", adminPort))
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("scraping metrics: status %d: %s", res.StatusCode, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[name+key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[name+key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[name+"_count"+key] = float64(m.Histogram.GetSampleCount())
				out[name+"_sum"+key] = m.Histogram.GetSampleSum()
			}
		}
	}
	return out
}

// waitMetrics scrapes until every series in want has its value, or fails
// after a generous deadline listing the ones that do not (an "eventually",
// not a timing assertion).
func waitMetrics(t *testing.T, want map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := scrapeMetrics(t)
		var wrong []string
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if v, ok := got[k]; !ok || v != want[k] {
				if !ok {
					wrong = append(wrong, fmt.Sprintf("%s = (missing), want %v", k, want[k]))
				} else {
					wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, v, want[k]))
				}
			}
		}
		if len(wrong) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics after 30s:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetrics checks callhook's Prometheus metrics on Caddy's admin endpoint
// after accepted, duplicate and rejected events and delivered, retried and
// dead deliveries, and that a reload keeps them exported and counting.
func TestMetrics(t *testing.T) {
	ok := newReceiver(t, nil)
	flaky := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n%2 == 1 { // every delivery fails once, then succeeds
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	gone := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
	down := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })

	// Counters live as long as the process: a target of its own keeps this
	// run's series apart from other tests' and from earlier runs (-count).
	target := fmt.Sprintf("metrics-%d", time.Now().UnixNano())
	hook := func(name, url, extra string) string {
		return fmt.Sprintf(`
			webhook %s {
				on after_call
				url %s
				param id call.call_id
				%s
			}`, name, url, extra)
	}
	site := func(extraHook string) string {
		return `
	handle /calls/* {
		callhook {
			target ` + target + `
			token metrics-token` +
			hook("ok", ok.URL, "") +
			hook("flaky", flaky.URL, "backoff 10ms 50ms") +
			hook("gone", gone.URL, "") +
			// one failed attempt, then a retry an hour later: stays pending
			hook("down", down.URL, "backoff 1h 1h") +
			// no duration in the events: a render error, dead on arrival
			hook("broken", ok.URL+"/broken", `param doubled "call.duration * 2"`) +
			extraHook + `
		}
	}`
	}
	queueDir := t.TempDir()
	initServer(t, withGlobalOptions(caddyfile(queueDir, `allow_destinations 127.0.0.1/32`, site("")), "\tmetrics"), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}

	auth := []string{"Authorization", "Bearer metrics-token"}
	if status, ans := postJSON(t, "/calls/after_call", `{"call_id":"m-1"}`, auth...); status != http.StatusAccepted {
		t.Fatalf("status %d: %s", status, ans.Error)
	}
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"m-1"}`, auth...); status != http.StatusOK {
		t.Fatalf("repeated event: status %d, want 200", status)
	}
	for _, r := range []struct {
		path, body string
		header     []string
		status     int
	}{
		{"/calls/after_call", `{"call_id":"m-x"}`, nil, http.StatusUnauthorized},
		{"/calls/after_call", `{"call_id":`, auth, http.StatusBadRequest},
		{"/calls/hangup", `{"call_id":"m-x"}`, auth, http.StatusUnprocessableEntity},
		// a known event with a field of the wrong type: counted under its name
		{"/calls/after_call", `{"call_id":"m-y","duration":"long"}`, auth, http.StatusUnprocessableEntity},
	} {
		if status, _ := postJSON(t, r.path, r.body, r.header...); status != r.status {
			t.Fatalf("POST %s %s: status %d, want %d", r.path, r.body, status, r.status)
		}
	}

	events := func(event, outcome string, code int) string {
		return fmt.Sprintf(`callhook_events_received_total{code="%d",event=%q,outcome=%q,target=%q}`, code, event, outcome, target)
	}
	deliveries := func(webhook, outcome string) string {
		return fmt.Sprintf(`callhook_deliveries_total{outcome=%q,target=%q,webhook=%q}`, outcome, target, webhook)
	}
	attempts := func(webhook string) string {
		return fmt.Sprintf(`callhook_attempt_duration_seconds_count{target=%q,webhook=%q}`, target, webhook)
	}
	queued := func(state string) string {
		return fmt.Sprintf(`callhook_queue_deliveries{state=%q}`, state)
	}
	// counts after n events, each with its five deliveries
	want := func(n float64) map[string]float64 {
		return map[string]float64{
			events("after_call", "accepted", 202):  n,
			events("after_call", "duplicate", 200): 1,
			events("", "rejected", 401):            1,
			events("", "rejected", 400):            1,
			events("", "rejected", 422):            1,
			events("after_call", "rejected", 422):  1,

			deliveries("ok", "delivered"):    n,
			deliveries("ok", "retry"):        0,
			deliveries("ok", "dead"):         0,
			deliveries("flaky", "retry"):     n,
			deliveries("flaky", "delivered"): n,
			deliveries("gone", "dead"):       n,
			deliveries("gone", "retry"):      0,
			deliveries("down", "retry"):      n,
			deliveries("down", "dead"):       0,
			deliveries("broken", "dead"):     n,

			attempts("ok"):     n,
			attempts("flaky"):  2 * n,
			attempts("gone"):   n,
			attempts("down"):   n,
			attempts("broken"): 0, // never attempted

			queued("pending"):   n, // down, waiting an hour
			queued("leased"):    0,
			queued("delivered"): 2 * n, // ok, flaky
			queued("dead"):      2 * n, // gone, broken
		}
	}
	got := waitMetrics(t, want(1))
	if sum := got[fmt.Sprintf(`callhook_attempt_duration_seconds_sum{target=%q,webhook="ok"}`, target)]; sum <= 0 {
		t.Errorf("attempt duration sum for ok = %v, want > 0", sum)
	}

	// A reload that keeps the queue: the same collectors are registered into
	// the new config's registry (no "duplicate metrics collector
	// registration" error), and nothing is reset.
	initServer(t, withGlobalOptions(caddyfile(queueDir, `allow_destinations 127.0.0.1/32`,
		site(hook("added", ok.URL+"/added", ""))), "\tmetrics"), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	afterReload := want(1)
	afterReload[deliveries("added", "delivered")] = 0 // a new webhook's series start at zero
	afterReload[attempts("added")] = 0
	waitMetrics(t, afterReload)

	if status, ans := postJSON(t, "/calls/after_call", `{"call_id":"m-2"}`, auth...); status != http.StatusAccepted || len(ans.Deliveries) != 6 {
		t.Fatalf("after reload: status %d, deliveries %+v: %s", status, ans.Deliveries, ans.Error)
	}
	final := want(2)
	final[deliveries("added", "delivered")] = 1
	final[attempts("added")] = 1
	final[queued("delivered")] = 2*2 + 1
	waitMetrics(t, final)
}
