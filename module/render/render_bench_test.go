package render_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// The hot path of one call event is what the handler does before the queue:
// decode the body, render every webhook of the event, and (per attempt, in
// the sender) sign each body. These benchmarks measure that on the same
// webhooks the bench/ harness configures for its S1 and S5 scenarios, so a
// regression here shows up before anyone runs the harness.

// hotPathBody is a realistic after_call event (canonical fields, vendor
// extras, a nested object), as a PBX would post it.
const hotPathBody = `{
	"event": "after_call",
	"call_id": "1714557600.48213",
	"direction": "incoming",
	"insertion_type": "dynamic",
	"caller": "+79991234567",
	"callee": "+74951234567",
	"tracking_number": "+74957654321",
	"pool_name": "yandex-direct",
	"disposition": "ANSWERED",
	"start_time": "2024-05-01 13:00:00",
	"answer_time": 1714557612,
	"end_time": "2024-05-01T10:04:31Z",
	"duration": 271,
	"talk_time": "259",
	"wait_time": 12,
	"recording_url": "https://pbx.example.com/rec/1714557600.48213.mp3",
	"has_recording": "1",
	"first_call": true,
	"city": "Moscow",
	"utm_source": "yandex",
	"utm_medium": "cpc",
	"utm_campaign": "spring_sale",
	"landing_page": "https://shop.example.com/spring?utm_source=yandex",
	"agent_id": "301",
	"agent_name": "Olena",
	"client_id": "GA1.2.1234567890.1714550000",
	"tags": ["vip", "repeat"],
	"pbx": {"node": "pbx-2", "trunk": 7, "cost": 0.35},
	"sent_ns": 1714557600123456789
}`

const hotPathSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func hotPathParams(kv ...string) []render.Param {
	ps := make([]render.Param, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, render.Param{Name: kv[i], Expr: kv[i+1]})
	}
	return ps
}

// hotPathS1 is the S1 webhook: one signed JSON POST with 7 params.
func hotPathS1() []render.Config {
	return []render.Config{{
		Name: "crm", On: []string{"after_call"}, Format: "json", Secret: hotPathSecret,
		URL: "http://127.0.0.1:9410/s1/{param.call_id}",
		Params: hotPathParams(
			"call_id", "call.call_id",
			"caller", "call.caller",
			"duration", "call.duration",
			"started", "call.start_time",
			"source", "call.utm_source ?? 'direct'",
			"answered", "call.disposition == 'answered'",
			"sent_ns", "data.sent_ns",
		),
	}}
}

// hotPathS5 is the S5 set: five webhooks in the four formats, 5 to 8
// params each, two of them signed.
func hotPathS5() []render.Config {
	return []render.Config{
		{
			Name: "crm", On: []string{"after_call"}, Format: "json", Secret: hotPathSecret,
			URL: "http://127.0.0.1:9411/crm/{param.call_id}",
			Params: hotPathParams(
				"call_id", "call.call_id",
				"caller", "call.caller",
				"callee", "call.callee",
				"duration", "call.duration",
				"started", "call.start_time",
				"answered", "call.disposition == 'answered'",
				"source", "call.utm_source ?? 'direct'",
				"agent.name", "call.agent_name ?? ''",
			),
		},
		{
			Name: "erp", On: []string{"after_call"}, Format: "jsonrpc", RPCMethod: "calls.register",
			URL: "http://127.0.0.1:9412/rpc",
			Params: hotPathParams(
				"call_id", "call.call_id",
				"phone", "call.caller",
				"talk", "call.talk_time",
				"tags", "call.tags",
				"sent_ns", "data.sent_ns",
			),
		},
		{
			Name: "legacy", On: []string{"after_call"}, Format: "form", DateFormat: "datetime", Timezone: "Europe/Kyiv",
			URL: "http://127.0.0.1:9413/hook.php",
			Params: hotPathParams(
				"phone", "digits(call.caller ?? '')",
				"tracking", "call.tracking_number",
				"date", "call.start_time",
				"disposition", "call.disposition",
				"city", "call.city",
				"record", "call.recording_url",
			),
		},
		{
			Name: "billing", On: []string{"after_call"}, Format: "xml", XMLRoot: "call", DateFormat: "unix",
			URL: "http://127.0.0.1:9414/calls",
			Params: hotPathParams(
				"id", "call.call_id",
				"agent.id", "call.agent_id ?? 'none'",
				"agent.name", "call.agent_name",
				"talk", "call.talk_time",
				"ended", "call.end_time",
				"cost", "data.pbx.cost",
			),
		},
		{
			Name: "analytics", On: []string{"after_call"}, Format: "json", Secret: hotPathSecret,
			URL: "http://127.0.0.1:9415/collect?cid={param.client_id}",
			Params: hotPathParams(
				"client_id", "call.client_id ?? ''",
				"campaign", "call.utm_campaign",
				"medium", "call.utm_medium",
				"source", "call.utm_source",
				"landing", "call.landing_page",
				"first", "call.first_call",
				"value", "call.duration > 60 ? 1 : 0",
			),
		},
	}
}

func hotPathCompile(tb testing.TB, cs []render.Config) []*render.Webhook {
	tb.Helper()
	hooks := make([]*render.Webhook, len(cs))
	for i, c := range cs {
		w, err := render.Compile(c)
		if err != nil {
			tb.Fatal(err)
		}
		hooks[i] = w
	}
	if err := render.CheckSet("bench", hooks); err != nil {
		tb.Fatal(err)
	}
	return hooks
}

// hotPathRequest is an ingest request whose body the caller rewinds with
// body.Reset before each Decode, so the loop measures no request building.
func hotPathRequest() (*http.Request, *strings.Reader) {
	body := strings.NewReader(hotPathBody)
	r := httptest.NewRequest("POST", "/calls/after_call", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "pbx/18.2")
	r.Body = io.NopCloser(body)
	r.ContentLength = int64(len(hotPathBody))
	return r, body
}

// hotPath is one event: decode, render each webhook, sign each body. It
// returns the deliveries so the caller can check them once.
func hotPath(r *http.Request, hooks []*render.Webhook, now time.Time) ([]*queue.Delivery, error) {
	ev, err := intake.Decode(r, intake.Options{})
	if err != nil {
		return nil, err
	}
	ds := make([]*queue.Delivery, 0, len(hooks))
	for _, w := range hooks {
		if !w.Fires(ev.Name) {
			continue
		}
		d := w.Render(ev, "bench", render.NewID(), now)
		if d == nil {
			continue
		}
		if secrets := w.Secrets(); len(secrets) > 0 {
			d.Request.Header = append(d.Request.Header,
				[2]string{"webhook-signature", delivery.SignAll(secrets, d.ID, now.Unix(), d.Request.Body)})
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// TestHotPathWebhooks checks once that the benchmarked webhooks render what
// they claim to, so the benchmarks never time an error path.
func TestHotPathWebhooks(t *testing.T) {
	tests := []struct {
		name  string
		hooks []render.Config
		want  []string // one substring of each delivery's body (or URL for none)
	}{
		{"S1", hotPathS1(), []string{`"sent_ns":1714557600123456789`}},
		{"S5", hotPathS5(), []string{
			`"agent":{"name":"Olena"}`,
			`"method":"calls.register"`,
			`phone=79991234567&tracking=%2B74957654321&date=2024-05-01+16%3A00%3A00`, // 13:00 UTC in Kyiv,
			`<agent><id>301</id><name>Olena</name></agent>`,
			`"value":1`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, body := hotPathRequest()
			body.Reset(hotPathBody)
			ds, err := hotPath(r, hotPathCompile(t, tt.hooks), time.Unix(1714557700, 0))
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != len(tt.want) {
				t.Fatalf("got %d deliveries, want %d", len(ds), len(tt.want))
			}
			for i, d := range ds {
				if d.State != queue.Pending {
					t.Errorf("%s: state %s (%s), want pending", d.Webhook, d.State, d.LastError)
				}
				if !strings.Contains(string(d.Request.Body), tt.want[i]) {
					t.Errorf("%s: body %s does not contain %s", d.Webhook, d.Request.Body, tt.want[i])
				}
			}
		})
	}
}

func benchmarkHotPath(b *testing.B, cs []render.Config) {
	hooks := hotPathCompile(b, cs)
	r, body := hotPathRequest()
	now := time.Now()
	b.SetBytes(int64(len(hotPathBody)))
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(hotPathBody)
		ds, err := hotPath(r, hooks, now)
		if err != nil {
			b.Fatal(err)
		}
		if len(ds) != len(hooks) {
			b.Fatalf("got %d deliveries, want %d", len(ds), len(hooks))
		}
	}
	// µs/event is ns/op in the unit the targets are written in (≤ 20 µs).
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/event")
}

// BenchmarkHotPathS1 is one event with one signed JSON webhook.
func BenchmarkHotPathS1(b *testing.B) { benchmarkHotPath(b, hotPathS1()) }

// BenchmarkHotPathS5 is one event with five webhooks in the four formats
// (5 to 8 params each, two signed).
func BenchmarkHotPathS5(b *testing.B) { benchmarkHotPath(b, hotPathS5()) }

// BenchmarkRenderS5 is the render step of S5 alone (no decode, no signing).
func BenchmarkRenderS5(b *testing.B) {
	hooks := hotPathCompile(b, hotPathS5())
	r, body := hotPathRequest()
	body.Reset(hotPathBody)
	ev, err := intake.Decode(r, intake.Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		for _, w := range hooks {
			if d := w.Render(ev, "bench", "msg_bench", now); d == nil || d.State != queue.Pending {
				b.Fatalf("%s did not render", w.Name())
			}
		}
	}
}
