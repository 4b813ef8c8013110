package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The relay is the "no durability" baseline: what a developer would write
// by hand to turn call events into the same webhooks. It decodes the event
// JSON into a struct, builds the same bodies as callhook's S1 or S5 webhooks
// with plain Go, signs the same ones, and POSTs them from a bounded in-memory
// queue with a fixed number of workers through a tuned http.Client. It
// answers 202 once the webhooks are queued in memory; a full queue makes
// ingest wait (backpressure), and a crash loses whatever is queued.
//
// It runs as a child process of the harness (`-role=relay`) so that its CPU
// time can be read from /proc apart from the load generator's and the sink's.

// relayEvent is the part of the event the webhooks use. Fields a PBX may
// send as a number or a string are json.Number or any.
type relayEvent struct {
	CallID         string      `json:"call_id"`
	Caller         string      `json:"caller"`
	Callee         string      `json:"callee"`
	TrackingNumber string      `json:"tracking_number"`
	Disposition    string      `json:"disposition"`
	StartTime      string      `json:"start_time"`
	EndTime        string      `json:"end_time"`
	Duration       json.Number `json:"duration"`
	TalkTime       any         `json:"talk_time"`
	RecordingURL   string      `json:"recording_url"`
	FirstCall      bool        `json:"first_call"`
	City           string      `json:"city"`
	UTMSource      string      `json:"utm_source"`
	UTMMedium      string      `json:"utm_medium"`
	UTMCampaign    string      `json:"utm_campaign"`
	LandingPage    string      `json:"landing_page"`
	AgentID        string      `json:"agent_id"`
	AgentName      string      `json:"agent_name"`
	ClientID       string      `json:"client_id"`
	Tags           []string    `json:"tags"`
	PBX            relayPBX    `json:"pbx"`
	SentNS         json.Number `json:"sent_ns"`
}

type relayPBX struct {
	Cost float64 `json:"cost"`
}

// relayJob is one webhook request waiting in memory.
type relayJob struct {
	url, contentType, id string
	body                 []byte
	secret               []byte
}

// benchSecretKey is the decoded form of benchSecret (whsec_<base64>).
var benchSecretKey = func() []byte {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(benchSecret, "whsec_"))
	if err != nil {
		panic(err)
	}
	return k
}()

var kyiv = func() *time.Location {
	l, err := time.LoadLocation("Europe/Kyiv")
	if err != nil {
		return time.FixedZone("EET", 2*3600) // no tzdata: close enough for a baseline
	}
	return l
}()

var relayIDs atomic.Int64

func relayID() string { return "msg_relay" + strconv.FormatInt(relayIDs.Add(1), 10) }

// relayRender builds the webhooks of one event for mode s1 or s5.
func relayRender(mode string, body []byte, sinkPorts []int) ([]relayJob, error) {
	var ev relayEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, err
	}
	if ev.CallID == "" {
		return nil, errors.New("missing call_id")
	}
	started, _ := time.ParseInLocation(time.DateTime, ev.StartTime, time.UTC)
	ended, _ := time.Parse(time.RFC3339, ev.EndTime)
	duration, _ := ev.Duration.Int64()
	talk := relayInt(ev.TalkTime)
	sent, _ := ev.SentNS.Int64()
	answered := strings.EqualFold(ev.Disposition, "answered")
	source := ev.UTMSource
	if source == "" {
		source = "direct"
	}
	base := func(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

	if mode == "s1" {
		b, err := json.Marshal(struct {
			CallID   string `json:"call_id"`
			Caller   string `json:"caller"`
			Duration int64  `json:"duration"`
			Started  string `json:"started"`
			Source   string `json:"source"`
			Answered bool   `json:"answered"`
			SentNS   int64  `json:"sent_ns"`
		}{ev.CallID, ev.Caller, duration, started.Format(time.RFC3339), source, answered, sent})
		if err != nil {
			return nil, err
		}
		return []relayJob{{url: base(sinkPorts[0]) + "/s1/" + url.PathEscape(ev.CallID), contentType: "application/json", body: b, secret: benchSecretKey}}, nil
	}

	jobs := make([]relayJob, 0, 5)
	type agent struct {
		Name string `json:"name"`
	}
	crm, err := json.Marshal(struct {
		CallID   string `json:"call_id"`
		Caller   string `json:"caller"`
		Callee   string `json:"callee"`
		Duration int64  `json:"duration"`
		Started  string `json:"started"`
		Answered bool   `json:"answered"`
		Source   string `json:"source"`
		Agent    agent  `json:"agent"`
	}{ev.CallID, ev.Caller, ev.Callee, duration, started.Format(time.RFC3339), answered, source, agent{ev.AgentName}})
	if err != nil {
		return nil, err
	}
	jobs = append(jobs, relayJob{url: base(sinkPorts[1]) + "/crm/" + url.PathEscape(ev.CallID), contentType: "application/json", body: crm, secret: benchSecretKey})

	id := relayID()
	type rpcParams struct {
		CallID string   `json:"call_id"`
		Phone  string   `json:"phone"`
		Talk   int64    `json:"talk"`
		Tags   []string `json:"tags"`
		SentNS int64    `json:"sent_ns"`
	}
	rpc, err := json.Marshal(struct {
		JSONRPC string    `json:"jsonrpc"`
		Method  string    `json:"method"`
		Params  rpcParams `json:"params"`
		ID      string    `json:"id"`
	}{"2.0", "calls.register", rpcParams{ev.CallID, ev.Caller, talk, ev.Tags, sent}, id})
	if err != nil {
		return nil, err
	}
	jobs = append(jobs, relayJob{url: base(sinkPorts[2]) + "/rpc", contentType: "application/json", body: rpc, id: id})

	var form strings.Builder
	for i, kv := range [][2]string{
		{"phone", digitsOnly(ev.Caller)},
		{"tracking", ev.TrackingNumber},
		{"date", started.In(kyiv).Format(time.DateTime)},
		{"disposition", strings.ToLower(ev.Disposition)},
		{"city", ev.City},
		{"record", ev.RecordingURL},
	} {
		if i > 0 {
			form.WriteByte('&')
		}
		form.WriteString(url.QueryEscape(kv[0]))
		form.WriteByte('=')
		form.WriteString(url.QueryEscape(kv[1]))
	}
	jobs = append(jobs, relayJob{url: base(sinkPorts[3]) + "/hook.php", contentType: "application/x-www-form-urlencoded", body: []byte(form.String())})

	agentID := ev.AgentID
	if agentID == "" {
		agentID = "none"
	}
	type xmlAgent struct {
		ID   string `xml:"id"`
		Name string `xml:"name"`
	}
	bill, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"call"`
		ID      string   `xml:"id"`
		Agent   xmlAgent `xml:"agent"`
		Talk    int64    `xml:"talk"`
		Ended   int64    `xml:"ended"`
		Cost    float64  `xml:"cost"`
	}{ID: ev.CallID, Agent: xmlAgent{agentID, ev.AgentName}, Talk: talk, Ended: ended.Unix(), Cost: ev.PBX.Cost})
	if err != nil {
		return nil, err
	}
	bill = append([]byte(xml.Header), bill...)
	jobs = append(jobs, relayJob{url: base(sinkPorts[4]) + "/calls", contentType: "application/xml; charset=utf-8", body: bill})

	value := 0
	if duration > 60 {
		value = 1
	}
	an, err := json.Marshal(struct {
		ClientID string `json:"client_id"`
		Campaign string `json:"campaign"`
		Medium   string `json:"medium"`
		Source   string `json:"source"`
		Landing  string `json:"landing"`
		First    bool   `json:"first"`
		Value    int    `json:"value"`
	}{ev.ClientID, ev.UTMCampaign, ev.UTMMedium, ev.UTMSource, ev.LandingPage, ev.FirstCall, value})
	if err != nil {
		return nil, err
	}
	jobs = append(jobs, relayJob{url: base(sinkPorts[5]) + "/collect?cid=" + url.QueryEscape(ev.ClientID), contentType: "application/json", body: an, secret: benchSecretKey})
	return jobs, nil
}

func relayInt(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func digitsOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

// runRelay serves the relay until SIGTERM.
func runRelay(addr, mode string, workers, queueLen int, sinkPorts []int) error {
	jobs := make(chan relayJob, queueLen)
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        workers * 2,
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for range workers {
		go relayWorker(client, jobs)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /calls/after_call", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, `{"error":"reading the body"}`, http.StatusBadRequest)
			return
		}
		js, err := relayRender(mode, body, sinkPorts)
		if err != nil {
			http.Error(w, `{"error":"bad event"}`, http.StatusBadRequest)
			return
		}
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		for _, j := range js {
			if j.id == "" {
				j.id = relayID()
			}
			select {
			case jobs <- j:
			case <-t.C:
				w.Header().Set("Retry-After", "1")
				http.Error(w, `{"error":"relay queue full"}`, http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"deliveries":%d}`+"\n", len(js))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// relayWorker sends jobs, retrying a failed one a few times: enough to ride
// out a blip, and no more, as there is nowhere durable to put it.
func relayWorker(client *http.Client, jobs <-chan relayJob) {
	for j := range jobs {
		for attempt := 1; attempt <= 3; attempt++ {
			if relaySend(client, j) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func relaySend(client *http.Client, j relayJob) bool {
	req, err := http.NewRequest(http.MethodPost, j.url, bytes.NewReader(j.body))
	if err != nil {
		log.Printf("relay: %v", err)
		return true // cannot succeed on a retry either
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", j.contentType)
	req.Header.Set("User-Agent", "bench-relay")
	req.Header["webhook-id"] = []string{j.id}
	req.Header["webhook-timestamp"] = []string{ts}
	if j.secret != nil {
		mac := hmac.New(sha256.New, j.secret)
		mac.Write([]byte(j.id + "." + ts + "."))
		mac.Write(j.body)
		req.Header["webhook-signature"] = []string{"v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))}
	}
	res, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	return res.StatusCode >= 200 && res.StatusCode <= 299
}
