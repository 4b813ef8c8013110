package callhook

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/internal/text"
	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
)

// The dashboard's pages are html/template files and one stylesheet,
// compiled into the binary: nothing is fetched from anywhere, and no page
// needs JavaScript.
//
//go:embed dashboard
var dashboardFiles embed.FS

var dashboardPages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"short":      shortTime,
		"trimID":     trimID,
		"pathEscape": url.PathEscape,
		"excerpt":    excerpt,
		"ms":         func(f float64) string { return fmt.Sprintf("%.1f ms", f) },
		"q":          withQuery,
		"dead":       deadDeliveries[int],
		"list":       webhookList,
	}
	pages := map[string]*template.Template{}
	names, err := fs.Glob(dashboardFiles, "dashboard/*.html")
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "dashboard/"), ".html")
		if name == "layout" || name == "filters" {
			continue
		}
		pages[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(dashboardFiles, "dashboard/layout.html", "dashboard/filters.html", n))
	}
	return pages
}()

var dashboardStyle = func() []byte {
	b, err := dashboardFiles.ReadFile("dashboard/style.css")
	if err != nil {
		panic(err)
	}
	return b
}()

// view is one request to the dashboard.
type view struct {
	h     *Dashboard
	w     http.ResponseWriter
	r     *http.Request
	base  string
	route dashRoute
	csrf  string
	// scope is the one target this request may see ("" for all): the
	// customer portal's (dashboard_scope.go).
	scope string
}

// pageData is what every page's template gets.
type pageData struct {
	Title    string
	Base     string
	Nav      string
	ReadOnly bool
	// Scope is the one target a portal shows ("" in the operator's).
	Scope  string
	Flash  string
	Error  string
	Status int
	Data   any
	csrf   string
}

// Token is the form token of an action on this page, for this browser.
func (p pageData) Token(action string) string { return formToken(p.csrf, action) }

func (v *view) render(name, title string, data any) error {
	return v.write(http.StatusOK, name, pageData{Title: title, Data: data, Flash: flash(v.r.URL.Query())})
}

// fail shows an error page with the error's status.
func (v *view) fail(err error) error {
	status := errorStatus(err)
	if status >= 500 {
		v.h.logger.Error("callhook dashboard page failed", zap.String("path", v.r.URL.Path), zap.Error(err))
	}
	if status == http.StatusServiceUnavailable {
		v.w.Header().Set("Retry-After", "5")
	}
	return v.write(status, "error", pageData{Title: http.StatusText(status), Error: errorMessage(err), Status: status})
}

func (v *view) write(status int, name string, p pageData) error {
	p.Base, p.Nav, p.ReadOnly, p.csrf, p.Scope = v.base, v.route.name, v.h.ReadOnly, v.csrf, v.scope
	var buf bytes.Buffer
	if err := dashboardPages[name].Execute(&buf, p); err != nil {
		v.h.logger.Error("rendering a callhook dashboard page", zap.String("page", name), zap.Error(err))
		http.Error(v.w, "the dashboard page could not be rendered; see Caddy's log", http.StatusInternalServerError)
		return nil
	}
	v.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	v.w.WriteHeader(status)
	if v.r.Method != http.MethodHead {
		v.w.Write(buf.Bytes())
	}
	return nil
}

// setPageHeaders: nothing from elsewhere, no framing, no caching.
func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
}

func serveStyle(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	http.ServeContent(w, r, "style.css", time.Time{}, bytes.NewReader(dashboardStyle))
	return nil
}

// flash is the message of an action just done (from the redirect's query).
func flash(q url.Values) string {
	n, skipped := q.Get("n"), q.Get("skipped")
	switch q.Get("done") {
	case "retried":
		return "Retried: the delivery is back in the queue."
	case "deleted":
		return "Deleted the dead delivery."
	case "replayed":
		return "Replayed: the event was rendered again with the current config and queued."
	case "resumed":
		return "Resumed: the webhook's deliveries are sent again."
	case "retried_all":
		msg := "Retried " + deadDeliveries(digits(n)) + "."
		if s := digits(skipped); s != "0" {
			msg += " Skipped " + s + " that still fail to render with the running config (fix the config, reload, and retry again, or delete them)."
		}
		return msg
	case "deleted_all":
		return "Deleted " + deadDeliveries(digits(n)) + "."
	}
	return ""
}

// deadDeliveries is "1 dead delivery" or "N dead deliveries".
func deadDeliveries[N int | string](n N) string {
	s := fmt.Sprint(n)
	if s == "1" {
		return "1 dead delivery"
	}
	return s + " dead deliveries"
}

// digits keeps a count from the query as a number, nothing else.
func digits(s string) string {
	if s == "" || strings.Trim(s, "0123456789") != "" || len(s) > 9 {
		return "0"
	}
	return s
}

// Page data.
type (
	overviewData struct {
		Stats            statsView
		OldestPendingAge string
		Webhooks         []webhookRow
		Paused           []webhookRow
		WebhooksError    string
		RecentDead       []deliveryView
	}

	webhookRow struct {
		WebhookState
		figures
	}

	deliveriesData struct {
		Filter     queue.Filter
		Query      url.Values
		Events     []string
		Deliveries []deliveryView
		Next       string
		First      bool
		DeadFilter bool
		// Scoped hides the target filter: a portal shows one target.
		Scoped bool
	}

	deliveryData struct {
		D    deliveryView
		Dead bool
	}

	eventsData struct {
		Filter queue.Filter
		Query  url.Values
		Events []string
		Rows   []eventRow
		Next   string
		First  bool
		Scoped bool
	}

	eventRow struct {
		ID, Target, Event, CallID, CreatedAt string
		States                               map[queue.State]int
	}

	eventData struct {
		E                     eventView
		DataJSON, RequestJSON string
	}

	confirmData struct {
		Filter queue.Filter
		Query  url.Values
		Count  deadCount
		Retry  bool
	}
)

// figures are a webhook's success rate and latency since this process
// started, from its Prometheus series (the webhook state's own counts when
// it has them).
type figures struct {
	OK, NotOK int64
	// Rate is the share of outcomes that were deliveries, "" with none.
	Rate string
	// Mean and P95 are attempt latencies, "" without attempts.
	Mean, P95 string
}

func webhookFigures(w WebhookState) figures {
	var f figures
	f.OK, f.NotOK = w.Delivered, w.Failed
	if f.OK+f.NotOK == 0 {
		f.OK = int64(counterValue(metrics.deliveries, w.Target, w.Webhook, delivery.OutcomeDelivered))
		f.NotOK = int64(counterValue(metrics.deliveries, w.Target, w.Webhook, delivery.OutcomeRetry) +
			counterValue(metrics.deliveries, w.Target, w.Webhook, delivery.OutcomeDead))
	}
	if total := f.OK + f.NotOK; total > 0 {
		f.Rate = fmt.Sprintf("%.1f%%", 100*float64(f.OK)/float64(total))
	}
	if h := histogramValue(metrics.attempts, w.Target, w.Webhook); h != nil && h.GetSampleCount() > 0 {
		f.Mean = seconds(h.GetSampleSum() / float64(h.GetSampleCount()))
		f.P95 = seconds(quantile(h, 0.95))
	}
	return f
}

func counterValue(v *prometheus.CounterVec, labels ...string) float64 {
	c, err := v.GetMetricWithLabelValues(labels...)
	if err != nil {
		return 0
	}
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

func histogramValue(v *prometheus.HistogramVec, labels ...string) *dto.Histogram {
	o, err := v.GetMetricWithLabelValues(labels...)
	if err != nil {
		return nil
	}
	m, ok := o.(prometheus.Metric)
	if !ok {
		return nil
	}
	var out dto.Metric
	if m.Write(&out) != nil {
		return nil
	}
	return out.GetHistogram()
}

// quantile estimates a quantile from the buckets, as Prometheus'
// histogram_quantile does (linear within the bucket).
func quantile(h *dto.Histogram, q float64) float64 {
	rank := q * float64(h.GetSampleCount())
	prevBound, prevCount := 0.0, 0.0
	for _, b := range h.GetBucket() {
		c := float64(b.GetCumulativeCount())
		if c >= rank {
			if math.IsInf(b.GetUpperBound(), 1) {
				return prevBound
			}
			if c == prevCount {
				return b.GetUpperBound()
			}
			return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = b.GetUpperBound(), c
	}
	return prevBound
}

func seconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

// shortTime shows a time (or an RFC 3339 time of the views) as
// "2006-01-02 15:04:05" in UTC.
func shortTime(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case string:
		var err error
		if t, err = time.Parse(time.RFC3339, x); err != nil {
			return x
		}
	}
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// excerpt cuts a text for a table cell.
func excerpt(s string, n int) string {
	if cut, ok := text.Cut(s, n); ok {
		return cut + "…"
	}
	return s
}

// withQuery is q with key set to value (paging links keep the filters).
func withQuery(q url.Values, kv ...string) string {
	out := url.Values{}
	for k, vs := range q {
		out[k] = vs
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			out.Del(kv[i])
		} else {
			out.Set(kv[i], kv[i+1])
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "?" + out.Encode()
}

func eventNames() []string { return intake.EventNames }

func prettyJSON(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if enc.Encode(v) != nil {
		return ""
	}
	return buf.String()
}
