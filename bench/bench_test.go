package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/callhook/caddy-callhook"
)

// The harness itself is only run by hand (it takes minutes and needs the
// ports 9400-9499); these tests keep its parts honest in `go test ./...`.

// TestCaddyfiles adapts and validates every Caddyfile the harness runs, as
// `caddy validate` would, so a change to the Caddyfile syntax breaks here and
// not twenty minutes into a benchmark run.
func TestCaddyfiles(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  caddyfileConfig
	}{
		{"respond202", caddyfileConfig{site: respondSite()}},
		{"S1", caddyfileConfig{queueDir: dir, workers: 32, site: callhookSite(s1Webhook(portSinkS1, ""))}},
		{"S5", caddyfileConfig{queueDir: dir, workers: 32, site: callhookSite(s5Webhooks())}},
		{"SLOW", caddyfileConfig{queueDir: dir, workers: 32, site: callhookSite(slowWebhook())}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile(tt.cfg)), map[string]any{"filename": tt.name})
			if err != nil {
				t.Fatalf("adapt: %v\n%s", err, caddyfile(tt.cfg))
			}
			var cfg caddy.Config
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&cfg); err != nil {
				t.Fatalf("validate: %v", err)
			}
			if tt.cfg.queueDir != "" && !bytes.Contains(out, []byte(`"127.0.0.1/32"`)) {
				t.Errorf("callhook config does not allow loopback destinations: %s", out)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, line string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "1234 (caddy) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0", 3 * time.Second, false},
		{"spaces and parens in comm", "99 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0", 30 * time.Millisecond, false},
		{"no comm", "1234 caddy S 1 2", 0, true},
		{"short", "1 (x) S 1 2 3", 0, true},
		{"not numbers", "1 (x) S 1 2 3 4 5 6 7 8 9 10 a b 0 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.line))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestProcSelf(t *testing.T) {
	// The harness reads other processes' /proc files the same way.
	if _, err := procCPU(1); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	m, err := procMemory(1)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 {
		t.Errorf("VmRSS of pid 1 = %d", m.RSS)
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tcaddy\nVmRSS:\t  204800 kB\nRssAnon:\t  102400 kB\nRssFile:\t  100352 kB\nThreads:\t12\n"
	m, err := parseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := memory{RSS: 200 << 20, RSSAnon: 100 << 20, RSSFile: 98 << 20}
	if m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	if _, err := parseStatus([]byte("Name:\tx\n")); err == nil {
		t.Error("no error for a status without memory lines")
	}
	if _, err := parseStatus([]byte("VmRSS:\tlots\n")); err == nil {
		t.Error("no error for a size that is not a number")
	}
}

func TestParseHeapProfile(t *testing.T) {
	in := "heap profile: 1: 2 [3: 4] @ heap/1048576\n1: 2 [3: 4] @ 0x1 0x2\n\n# runtime.MemStats\n# Alloc = 11\n# TotalAlloc = 99\n# Sys = 3000\n# HeapAlloc = 11\n# HeapSys = 50\n# HeapInuse = 20\n"
	h, err := parseHeapProfile([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if h != (heapStats{HeapAlloc: 11, HeapInuse: 20, Sys: 3000}) {
		t.Errorf("got %+v", h)
	}
	if _, err := parseHeapProfile([]byte("heap profile: binary")); err == nil {
		t.Error("no error for a profile without the MemStats lines")
	}
}

func TestSentNS(t *testing.T) {
	tests := []struct {
		body string
		want int64
	}{
		{`{"call_id":"x","sent_ns":1714557600123456789}`, 1714557600123456789},
		{`{"params":{"sent_ns": 42},"id":"msg"}`, 42},
		{`a=1&sent_ns=77&b=2`, 77},
		{`<call><sent_ns>5</sent_ns></call>`, 5},
		{`{"sent_ns":null}`, 0},
		{`{"other":1}`, 0},
		{`{"sent_ns":99999999999999999999999}`, 0}, // overflows: ignored, not wrapped
	}
	for _, tt := range tests {
		if got := sentNS([]byte(tt.body)); got != tt.want {
			t.Errorf("sentNS(%s) = %d, want %d", tt.body, got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := summarize(ds)
	if l.N != 100 || l.P50 != 50*time.Millisecond || l.P99 != 99*time.Millisecond || l.Max != 100*time.Millisecond {
		t.Errorf("got %+v", l)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("summarize sorted its input in place")
	}
	if l := summarize(nil); l != (latencies{}) {
		t.Errorf("empty: got %+v", l)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("one value: got %s", got)
	}
}

func TestNum(t *testing.T) {
	tests := []struct {
		v    float64
		dec  int
		want string
	}{
		{0, 0, "–"},
		{999, 0, "999"},
		{1000, 0, "1,000"},
		{1234567.891, 0, "1,234,568"},
		{1234.5678, 3, "1,234.568"},
		{0.0421, 3, "0.042"},
	}
	for _, tt := range tests {
		if got := num(tt.v, tt.dec); got != tt.want {
			t.Errorf("num(%v, %d) = %q, want %q", tt.v, tt.dec, got, tt.want)
		}
	}
}

// TestRelayRender checks that the relay builds the webhooks the callhook
// scenarios declare: same count, formats and values.
func TestRelayRender(t *testing.T) {
	g := &generator{prefix: "t-"}
	body := g.event(nil, time.Unix(0, 1714557600123456789))
	if !json.Valid(body) {
		t.Fatalf("event is not JSON: %s", body)
	}

	s1, err := relayRender("s1", body, sinkPorts)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != 1 || s1[0].secret == nil {
		t.Fatalf("s1: %d jobs, want 1 signed", len(s1))
	}
	var got map[string]any
	if err := json.Unmarshal(s1[0].body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"call_id": "t-1", "caller": "+79991234567", "duration": 271.0, "started": "2024-05-01T13:00:00Z",
		"source": "yandex", "answered": true, "sent_ns": 1714557600123456789.0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("s1 %s = %v, want %v", k, got[k], v)
		}
	}
	if sentNS(s1[0].body) != 1714557600123456789 {
		t.Errorf("s1 body carries no sent_ns: %s", s1[0].body)
	}

	s5, err := relayRender("s5", body, sinkPorts)
	if err != nil {
		t.Fatal(err)
	}
	if len(s5) != 5 {
		t.Fatalf("s5: %d jobs, want 5", len(s5))
	}
	wantCT := []string{"application/json", "application/json", "application/x-www-form-urlencoded", "application/xml; charset=utf-8", "application/json"}
	for i, j := range s5 {
		if j.contentType != wantCT[i] {
			t.Errorf("s5[%d] content type %s, want %s", i, j.contentType, wantCT[i])
		}
		if !strings.Contains(j.url, ":"+strconv.Itoa(sinkPorts[i+1])+"/") {
			t.Errorf("s5[%d] goes to %s, want port %d", i, j.url, sinkPorts[i+1])
		}
	}
	for _, i := range []int{0, 1, 4} {
		if !json.Valid(s5[i].body) {
			t.Errorf("s5[%d] is not JSON: %s", i, s5[i].body)
		}
	}
	if !bytes.Contains(s5[0].body, []byte(`"agent":{"name":"Olena"}`)) {
		t.Errorf("crm body lacks the nested agent: %s", s5[0].body)
	}
	if !bytes.Contains(s5[1].body, []byte(`"method":"calls.register"`)) || !bytes.Contains(s5[1].body, []byte(`"talk":259`)) {
		t.Errorf("erp body: %s", s5[1].body)
	}
	form, err := url.ParseQuery(string(s5[2].body))
	if err != nil || form.Get("phone") != "79991234567" || form.Get("date") != "2024-05-01 16:00:00" {
		t.Errorf("legacy form %s: %v", s5[2].body, err)
	}
	var bill struct {
		XMLName xml.Name
		Agent   struct {
			ID string `xml:"id"`
		} `xml:"agent"`
		Ended int64 `xml:"ended"`
	}
	if err := xml.Unmarshal(s5[3].body, &bill); err != nil || bill.XMLName.Local != "call" || bill.Agent.ID != "301" || bill.Ended != 1714557871 {
		t.Errorf("billing xml %s: %+v %v", s5[3].body, bill, err)
	}
	if s5[0].secret == nil || s5[4].secret == nil || s5[1].secret != nil {
		t.Error("the relay must sign crm and analytics only, as the S5 config does")
	}

	if _, err := relayRender("s1", []byte(`{"caller":"x"}`), sinkPorts); err == nil {
		t.Error("no error for an event without call_id")
	}
}

// TestSink checks counting, latency recording and the paused receiver.
func TestSink(t *testing.T) {
	s := &sink{holdMax: 20 * time.Millisecond}
	srv := httptest.NewServer(s)
	defer srv.Close()
	post := func(body string) int {
		t.Helper()
		res, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}

	from := time.Now()
	s.record(from)
	sent := from.UnixNano()
	if got := post(`{"sent_ns":` + strconv.FormatInt(sent, 10) + `}`); got != http.StatusNoContent {
		t.Fatalf("status %d, want 204", got)
	}
	post(`{"sent_ns":1}`) // sent before recording started: not a latency
	if n, last := s.waitFor(2, time.Second); n != 2 || last.IsZero() {
		t.Fatalf("count %d, last %v", n, last)
	}
	if l := s.latencies(); len(l) != 1 || l[0] <= 0 {
		t.Errorf("latencies %v, want one positive", l)
	}

	s.pause()
	if got := post(`{}`); got != http.StatusServiceUnavailable {
		t.Errorf("paused: status %d, want 503 after holdMax", got)
	}
	if s.held503.Load() != 1 || s.ok.Load() != 2 {
		t.Errorf("held503 = %d, ok = %d; want 1, 2", s.held503.Load(), s.ok.Load())
	}
	s.resume()
	if got := post(`{}`); got != http.StatusNoContent {
		t.Errorf("resumed: status %d, want 204", got)
	}
	s.reset()
	if s.ok.Load() != 0 || s.lastNS.Load() != 0 {
		t.Error("reset left counts")
	}
}

// TestGenerator checks the closed loop's stop condition and the open loop's
// schedule against a server that counts distinct call_ids.
func TestGenerator(t *testing.T) {
	var n atomic.Int64
	seen := make(chan string, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			CallID string `json:"call_id"`
			SentNS int64  `json:"sent_ns"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil || ev.SentNS == 0 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n.Add(1)
		seen <- ev.CallID
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	g := newGenerator(srv.URL, "g-", 4)
	defer g.close()

	res := g.closedLoop(4, time.Minute, nil, func(ok int64) bool { return ok >= 50 })
	if res.OK < 50 || res.Refused != 0 || res.Failed != 0 {
		t.Errorf("closed loop: %+v, want at least 50 accepted and no errors", res)
	}

	res = g.openLoop(400, 100*time.Millisecond, 10)
	if res.OK+res.Dropped != 40 || res.Refused != 0 || res.Failed != 0 {
		t.Errorf("open loop: %+v, want 40 sent or dropped", res)
	}
	close(seen)
	ids := map[string]bool{}
	for id := range seen {
		if ids[id] {
			t.Fatalf("call_id %s sent twice", id)
		}
		ids[id] = true
	}
	if int64(len(ids)) != n.Load() {
		t.Errorf("%d distinct call_ids for %d requests", len(ids), n.Load())
	}
}
