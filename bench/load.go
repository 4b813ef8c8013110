package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The event every scenario posts: an after_call with canonical fields, vendor
// extras and a nested object, as a PBX sends it. call_id is unique per
// request (callhook would answer a repeat 200 and queue nothing) and
// sent_ns is when the event was (meant to be) sent, which the webhooks copy
// into their bodies for the sink to measure end-to-end latency.
const (
	eventHead = `{"event":"after_call","call_id":"`
	eventTail = `","direction":"incoming","insertion_type":"dynamic",` +
		`"caller":"+79991234567","callee":"+74951234567","tracking_number":"+74957654321",` +
		`"pool_name":"yandex-direct","disposition":"ANSWERED","start_time":"2024-05-01 13:00:00",` +
		`"answer_time":1714557612,"end_time":"2024-05-01T10:04:31Z","duration":271,"talk_time":"259",` +
		`"wait_time":12,"recording_url":"https://pbx.example.com/rec/1714557600.48213.mp3",` +
		`"has_recording":"1","first_call":true,"city":"Moscow","utm_source":"yandex","utm_medium":"cpc",` +
		`"utm_campaign":"spring_sale","landing_page":"https://shop.example.com/spring?utm_source=yandex",` +
		`"agent_id":"301","agent_name":"Olena","client_id":"GA1.2.1234567890.1714550000",` +
		`"tags":["vip","repeat"],"pbx":{"node":"pbx-2","trunk":7,"cost":0.35},"sent_ns":`
)

// generator posts call events to one URL.
type generator struct {
	url    string
	prefix string // call_id prefix, unique per run and scenario
	client *http.Client
	seq    atomic.Int64
}

func newGenerator(url, prefix string, conns int) *generator {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		MaxConnsPerHost:     conns * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &generator{url: url, prefix: prefix, client: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

func (g *generator) close() { g.client.CloseIdleConnections() }

// event appends one event body to b.
func (g *generator) event(b []byte, sent time.Time) []byte {
	b = append(b, eventHead...)
	b = append(b, g.prefix...)
	b = strconv.AppendInt(b, g.seq.Add(1), 10)
	b = append(b, eventTail...)
	b = strconv.AppendInt(b, sent.UnixNano(), 10)
	return append(b, '}')
}

// post sends one event and returns the answer's status (0 on a transport
// error).
func (g *generator) post(ctx context.Context, buf *bytes.Buffer, sent time.Time) int {
	buf.Reset()
	buf.Write(g.event(buf.AvailableBuffer(), sent))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := g.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// loadResult counts answers.
type loadResult struct {
	OK      int64 // 2xx
	Refused int64 // non-2xx answers
	Failed  int64 // transport errors
	Dropped int64 // open loop: sends skipped because every sender was busy
	Elapsed time.Duration
}

func (r *loadResult) count(status int) {
	switch {
	case status >= 200 && status <= 299:
		r.OK++
	case status == 0:
		r.Failed++
	default:
		r.Refused++
	}
}

func (r *loadResult) add(o loadResult) {
	r.OK += o.OK
	r.Refused += o.Refused
	r.Failed += o.Failed
	r.Dropped += o.Dropped
}

// closedLoop runs conns senders, each posting its next event as soon as the
// previous one is answered, for dur or until stop reports true (it is given
// the 2xx count so far; nil never stops). ok counts 2xx answers live.
// Requests in flight when the time is up are answered, not cut off: an event
// the server accepted is then counted, so the sink's expected total is exact.
func (g *generator) closedLoop(conns int, dur time.Duration, ok *atomic.Int64, stop func(ok int64) bool) loadResult {
	if ok == nil {
		ok = new(atomic.Int64)
	}
	var stopped atomic.Bool
	start := time.Now()
	deadline := start.Add(dur)
	results := make([]loadResult, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			r := &results[i]
			for !stopped.Load() && time.Now().Before(deadline) {
				status := g.post(context.Background(), &buf, time.Now())
				r.count(status)
				if status >= 200 && status <= 299 {
					if n := ok.Add(1); stop != nil && stop(n) {
						stopped.Store(true)
					}
				}
			}
		}()
	}
	wg.Wait()
	var total loadResult
	for _, r := range results {
		total.add(r)
	}
	total.Elapsed = time.Since(start)
	return total
}

// openLoop sends rate events per second for dur on a fixed schedule, whatever
// the answers do (no coordinated omission): each event carries its scheduled
// time as sent_ns, so a late send counts against the system. At most
// maxInflight requests are outstanding; a send that finds them all busy is
// dropped and counted.
func (g *generator) openLoop(rate int, dur time.Duration, maxInflight int) loadResult {
	n := int(dur.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	sem := make(chan struct{}, maxInflight)
	var mu sync.Mutex
	var total loadResult
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		default:
			mu.Lock()
			total.Dropped++
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var buf bytes.Buffer
			status := g.post(context.Background(), &buf, at)
			mu.Lock()
			total.count(status)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	return total
}
