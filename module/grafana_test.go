package callhook

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestGrafanaDashboardMetrics: every metric docs/grafana-dashboard.json
// queries is one callhook exports, and every label it selects or groups
// by is one that metric has. A renamed metric or label fails here.
func TestGrafanaDashboardMetrics(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}

	// What callhook exports, with one series of each so Gather lists them.
	reg := prometheus.NewRegistry()
	if err := registerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	_, e := testAdmin(t)
	metrics.queue.track(e)
	defer metrics.queue.untrack(e)
	initWebhookSeries("t", "w")
	countEvent("t", "after_call", eventAccepted, 202)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]bool{} // series name -> label names
	for _, f := range families {
		names := []string{f.GetName()}
		if f.GetType().String() == "HISTOGRAM" {
			names = []string{f.GetName() + "_bucket", f.GetName() + "_sum", f.GetName() + "_count"}
		}
		for _, n := range names {
			labels[n] = map[string]bool{}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					labels[n][l.GetName()] = true
				}
			}
			if strings.HasSuffix(n, "_bucket") {
				labels[n]["le"] = true
			}
		}
	}

	metricName := regexp.MustCompile(`\b(callhook_[a-z_]+)(\{[^}]*\})?`)
	labelName := regexp.MustCompile(`([a-z_]+)\s*(=~|!=|!~|=)`)
	byClause := regexp.MustCompile(`by \(([^)]*)\)`)
	var exprs []string
	queried := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	for _, expr := range exprs {
		var used []string
		for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
			queried++
			name := m[1]
			have, ok := labels[name]
			if !ok {
				t.Errorf("%q queries %s, which callhook does not export", expr, name)
				continue
			}
			used = append(used, name)
			for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
				if !have[l[1]] {
					t.Errorf("%q selects label %s, which %s does not have", expr, l[1], name)
				}
			}
		}
		for _, by := range byClause.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(by[1], ",") {
				l = strings.TrimSpace(l)
				found := false
				for _, name := range used {
					found = found || labels[name][l]
				}
				if !found {
					t.Errorf("%q groups by %s, which none of %v has", expr, l, used)
				}
			}
		}
	}
	if queried < 10 {
		t.Errorf("the dashboard queries only %d metrics", queried)
	}
}
