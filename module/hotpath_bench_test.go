package callhook

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// BenchmarkServeHTTPS5 is the handler's whole share of one event with the
// five S5 webhooks (the ones bench/ and module/render's BenchmarkHotPathS5
// use): token check, decode, render, the enqueue call and the JSON answer.
// The queue is in memory, so this is the CPU callhook adds on top of the
// durable write, which BenchmarkEnqueue* in module/queue/embedded measure.

// benchQueue keeps nothing: it answers Enqueue as a queue that stored the
// event would, so the benchmark times the handler, not a disk. Any other
// method panics (the embedded nil interface): the benchmark calls none.
type benchQueue struct {
	queue.Queue
	n atomic.Int64
}

func (q *benchQueue) Enqueue(_ context.Context, env *queue.Envelope) (queue.EnqueueResult, error) {
	q.n.Add(int64(len(env.Deliveries)))
	refs := make([]queue.Ref, len(env.Deliveries))
	for i, d := range env.Deliveries {
		refs[i] = queue.Ref{ID: d.ID, Webhook: d.Webhook, State: queue.Pending}
	}
	return queue.EnqueueResult{EventID: env.Event.ID, Refs: refs}, nil
}

const benchSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func benchParams(kv ...string) []render.Param {
	ps := make([]render.Param, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, render.Param{Name: kv[i], Expr: kv[i+1]})
	}
	return ps
}

// benchWebhooksS5 are bench/'s S5 webhooks as Caddy JSON would give them.
func benchWebhooksS5() []Webhook {
	on := []string{"after_call"}
	return []Webhook{
		{Name: "crm", On: on, Format: "json", Secret: benchSecret, URL: "http://127.0.0.1:9411/crm/{param.call_id}",
			Params: benchParams("call_id", "call.call_id", "caller", "call.caller", "callee", "call.callee", "duration", "call.duration",
				"started", "call.start_time", "answered", "call.disposition == 'answered'", "source", "call.utm_source ?? 'direct'",
				"agent.name", "call.agent_name ?? ''")},
		{Name: "erp", On: on, Format: "jsonrpc", RPCMethod: "calls.register", URL: "http://127.0.0.1:9412/rpc",
			Params: benchParams("call_id", "call.call_id", "phone", "call.caller", "talk", "call.talk_time", "tags", "call.tags", "sent_ns", "data.sent_ns")},
		{Name: "legacy", On: on, Format: "form", DateFormat: "datetime", Timezone: "Europe/Kyiv", URL: "http://127.0.0.1:9413/hook.php",
			Params: benchParams("phone", "digits(call.caller ?? '')", "tracking", "call.tracking_number", "date", "call.start_time",
				"disposition", "call.disposition", "city", "call.city", "record", "call.recording_url")},
		{Name: "billing", On: on, Format: "xml", XMLRoot: "call", DateFormat: "unix", URL: "http://127.0.0.1:9414/calls",
			Params: benchParams("id", "call.call_id", "agent.id", "call.agent_id ?? 'none'", "agent.name", "call.agent_name",
				"talk", "call.talk_time", "ended", "call.end_time", "cost", "data.pbx.cost")},
		{Name: "analytics", On: on, Format: "json", Secret: benchSecret, URL: "http://127.0.0.1:9415/collect?cid={param.client_id}",
			Params: benchParams("client_id", "call.client_id ?? ''", "campaign", "call.utm_campaign", "medium", "call.utm_medium",
				"source", "call.utm_source", "landing", "call.landing_page", "first", "call.first_call", "value", "call.duration > 60 ? 1 : 0")},
	}
}

// benchHandler compiles the handler as Provision does, minus what needs a
// running Caddy: the app is one whose engine has the in-memory queue and an
// idle pool.
func benchHandler(tb testing.TB, q queue.Queue) *Handler {
	tb.Helper()
	h := &Handler{Target: "bench", Event: "", MaxBody: defaultMaxBody, Webhooks: benchWebhooksS5()}
	h.logger = zap.NewNop()
	h.loc = time.UTC
	var err error
	if h.fields, err = compileFields("", nil); err != nil {
		tb.Fatal(err)
	}
	repl := caddy.NewReplacer()
	for _, w := range h.Webhooks {
		c, err := w.config(repl, h)
		if err != nil {
			tb.Fatal(err)
		}
		hook, err := render.Compile(c)
		if err != nil {
			tb.Fatal(err)
		}
		h.hooks = append(h.hooks, hook)
	}
	a := &App{logger: zap.NewNop()}
	a.engine.Store(&engine{q: q, pool: delivery.NewPool(delivery.PoolOptions{Queue: q})})
	h.app = a
	return h
}

// benchEventBody is the event bench/ posts (call_id varies per request).
const benchEventBody = `{"event":"after_call","call_id":"%ID%","direction":"incoming","insertion_type":"dynamic",` +
	`"caller":"+79991234567","callee":"+74951234567","tracking_number":"+74957654321",` +
	`"pool_name":"yandex-direct","disposition":"ANSWERED","start_time":"2024-05-01 13:00:00",` +
	`"answer_time":1714557612,"end_time":"2024-05-01T10:04:31Z","duration":271,"talk_time":"259",` +
	`"wait_time":12,"recording_url":"https://pbx.example.com/rec/1714557600.48213.mp3",` +
	`"has_recording":"1","first_call":true,"city":"Moscow","utm_source":"yandex","utm_medium":"cpc",` +
	`"utm_campaign":"spring_sale","landing_page":"https://shop.example.com/spring?utm_source=yandex",` +
	`"agent_id":"301","agent_name":"Olena","client_id":"GA1.2.1234567890.1714550000",` +
	`"tags":["vip","repeat"],"pbx":{"node":"pbx-2","trunk":7,"cost":0.35},"sent_ns":1714557600123456789}`

var benchNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// benchWriter is a reusable ResponseWriter, so the loop does not measure
// httptest's recorder.
type benchWriter struct {
	header http.Header
	code   int
	body   []byte
}

func (w *benchWriter) Header() http.Header         { return w.header }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Write(b []byte) (int, error) { w.body = append(w.body, b...); return len(b), nil }

// benchServe posts one event; the answer is left in w.
func benchServe(h *Handler, body *strings.Reader, w *benchWriter, r *http.Request) error {
	clear(w.header)
	w.code, w.body = 0, w.body[:0]
	r.Body = io.NopCloser(body)
	return h.ServeHTTP(w, r, benchNext)
}

// TestServeHTTPS5Bench checks once that the benchmarked handler accepts the
// event with five deliveries, so the benchmark never times an error answer.
func TestServeHTTPS5Bench(t *testing.T) {
	q := new(benchQueue)
	h := benchHandler(t, q)
	w := &benchWriter{header: http.Header{}}
	r := httptest.NewRequest("POST", "/calls/after_call", nil)
	r.Header.Set("Content-Type", "application/json")
	if err := benchServe(h, strings.NewReader(strings.Replace(benchEventBody, "%ID%", "t-1", 1)), w, r); err != nil {
		t.Fatal(err)
	}
	if w.code != http.StatusAccepted || q.n.Load() != 5 {
		t.Fatalf("status %d, %d deliveries enqueued; want 202 and 5: %s", w.code, q.n.Load(), w.body)
	}
	for _, name := range []string{"crm", "erp", "legacy", "billing", "analytics"} {
		if !strings.Contains(string(w.body), `"webhook":"`+name+`"`) {
			t.Errorf("answer lacks webhook %s: %s", name, w.body)
		}
	}
}

func BenchmarkServeHTTPS5(b *testing.B) {
	q := new(benchQueue)
	h := benchHandler(b, q)
	w := &benchWriter{header: http.Header{}}
	r := httptest.NewRequest("POST", "/calls/after_call", nil)
	r.Header.Set("Content-Type", "application/json")
	// One distinct call_id per iteration would cost a Sprintf in the loop;
	// the in-memory queue does not deduplicate, so one body serves.
	event := strings.Replace(benchEventBody, "%ID%", "bench-1", 1)
	body := strings.NewReader(event)
	b.SetBytes(int64(len(event)))
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(event)
		if err := benchServe(h, body, w, r); err != nil || w.code != http.StatusAccepted {
			b.Fatalf("status %d, err %v: %s", w.code, err, w.body)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/event")
}
