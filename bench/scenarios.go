package main

import (
	"fmt"
	"strings"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// Every listener the harness starts is on 127.0.0.1, in base..base+99
// (-port-base or CALLHOOK_BENCH_PORT_BASE; default 9400).
const defaultPortBase = 9400

var (
	portCaddy    int // the Caddy under test (respond 202 or callhook)
	portAdmin    int // its admin endpoint (pprof, heap)
	portRelay    int // the bare Go relay
	portSinkS1   int // S1 webhooks and the relay's 1-POST mode
	portSinkS5   int // S5's five receivers are base+11 to base+15
	portSinkSlow int // SLOW's paused receiver

	// sinkPorts are the relay's destinations: [0] for s1, [1:6] for s5, in
	// the order of the S5 webhooks.
	sinkPorts []int
)

// setPorts places every listener relative to base.
func setPorts(base int) {
	portCaddy, portAdmin, portRelay = base, base+1, base+2
	portSinkS1, portSinkS5, portSinkSlow = base+10, base+11, base+16
	portNATS = base + 20
	sinkPorts = []int{portSinkS1, portSinkS5, portSinkS5 + 1, portSinkS5 + 2, portSinkS5 + 3, portSinkS5 + 4}
}

func init() { setPorts(defaultPortBase) }

// usedPorts are the ports the harness listens on: the Caddy under test and
// its admin endpoint, the relay, the sinks, and up to three nats-servers
// (client, cluster and monitoring ports).
func usedPorts() []int {
	ps := []int{portCaddy, portAdmin, portRelay, portSinkSlow}
	ps = append(ps, sinkPorts...)
	for i := range 9 {
		ps = append(ps, portNATS+i)
	}
	return ps
}

// portsFree refuses a run while something listens on one of the harness's
// ports: the harness would load its config into, and measure, a server it
// did not start (a Caddy left running, another run).
func portsFree() error {
	for _, p := range usedPorts() {
		if err := caddyproc.CheckFree(p); err != nil {
			return fmt.Errorf("%v: the harness uses ports %d-%d on 127.0.0.1 and never talks to a server it did not start; stop what listens there, or move the harness with -port-base (or CALLHOOK_BENCH_PORT_BASE)", err, portCaddy, portCaddy+99)
		}
	}
	return nil
}

// benchSecret signs the webhooks that are signed (Standard Webhooks form).
const benchSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// ingestPath is where events are posted, to Caddy and to the relay alike.
const ingestPath = "/calls/after_call"

// The webhooks below are the ones module/render's BenchmarkHotPathS1 and
// BenchmarkHotPathS5 compile, so the Go benchmarks and the harness measure
// the same work.

// s1Webhook is one signed JSON POST with 7 params; sent_ns carries the
// event's send time for the latency measurement.
func s1Webhook(port int, extra string) string {
	return fmt.Sprintf(`
		webhook crm {
			on after_call
			url http://127.0.0.1:%d/s1/{param.call_id}
			format json
			secret %s
			param call_id  call.call_id
			param caller   call.caller
			param duration call.duration
			param started  call.start_time
			param source   "call.utm_source ?? 'direct'"
			param answered "call.disposition == 'answered'"
			param sent_ns  data.sent_ns
			%s
		}`, port, benchSecret, extra)
}

// s5Webhooks are five webhooks in the four formats with 5 to 8 params each,
// two of them signed, each to its own receiver (port).
func s5Webhooks() string {
	return fmt.Sprintf(`
		webhook crm {
			on after_call
			url http://127.0.0.1:%[1]d/crm/{param.call_id}
			format json
			secret %[6]s
			param call_id    call.call_id
			param caller     call.caller
			param callee     call.callee
			param duration   call.duration
			param started    call.start_time
			param answered   "call.disposition == 'answered'"
			param source     "call.utm_source ?? 'direct'"
			param agent.name "call.agent_name ?? ''"
		}
		webhook erp {
			on after_call
			url http://127.0.0.1:%[2]d/rpc
			format jsonrpc
			rpc_method calls.register
			param call_id call.call_id
			param phone   call.caller
			param talk    call.talk_time
			param tags    call.tags
			param sent_ns data.sent_ns
		}
		webhook legacy {
			on after_call
			url http://127.0.0.1:%[3]d/hook.php
			format form
			date_format datetime
			timezone Europe/Kyiv
			param phone       "digits(call.caller ?? '')"
			param tracking    call.tracking_number
			param date        call.start_time
			param disposition call.disposition
			param city        call.city
			param record      call.recording_url
		}
		webhook billing {
			on after_call
			url http://127.0.0.1:%[4]d/calls
			format xml
			xml_root call
			date_format unix
			param id         call.call_id
			param agent.id   "call.agent_id ?? 'none'"
			param agent.name call.agent_name
			param talk       call.talk_time
			param ended      call.end_time
			param cost       data.pbx.cost
		}
		webhook analytics {
			on after_call
			url http://127.0.0.1:%[5]d/collect?cid={param.client_id}
			format json
			secret %[6]s
			param client_id "call.client_id ?? ''"
			param campaign  call.utm_campaign
			param medium    call.utm_medium
			param source    call.utm_source
			param landing   call.landing_page
			param first     call.first_call
			param value     "call.duration > 60 ? 1 : 0"
		}`, portSinkS5, portSinkS5+1, portSinkS5+2, portSinkS5+3, portSinkS5+4, benchSecret)
}

// caddyfileConfig is what differs between the Caddy configs of a run.
type caddyfileConfig struct {
	queueDir string // "" for respond 202 (no callhook app)
	// queueBlock replaces the embedded queue (queue nats ...).
	queueBlock string
	workers    int
	retention  string // callhook's retention, "" for the default
	site       string // the body of the site block
}

// caddyfile is a complete Caddyfile: loopback only, no HTTPS, logs at ERROR
// so logging does not dominate, the admin endpoint on portAdmin for pprof.
func caddyfile(c caddyfileConfig) string {
	var app string
	if c.queueDir != "" || c.queueBlock != "" {
		queue := c.queueBlock
		if queue == "" {
			queue = fmt.Sprintf("queue embedded {\n\t\t\tpath %s\n\t\t}", c.queueDir)
		}
		// per_destination = workers: the relay's workers are not capped
		// per receiver either, and S1 has a single receiver.
		app = fmt.Sprintf(`
	callhook {
		%s
		workers %d
		per_destination %d
		allow_destinations 127.0.0.1/32%s
	}`, queue, c.workers, c.workers, retentionLine(c.retention))
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	skip_install_trust
	grace_period 2s
	log default {
		level ERROR
	}%s
}

http://127.0.0.1:%d {
	bind 127.0.0.1
%s
}
`, portAdmin, app, portCaddy, c.site)
}

func respondSite() string { return "\trespond 202\n" }

func callhookSite(webhooks string) string {
	var b strings.Builder
	b.WriteString("\thandle /calls/* {\n\t\tcallhook {\n\t\t\ttarget bench\n\t\t\tevent {http.request.uri.path.1}\n")
	b.WriteString(webhooks)
	b.WriteString("\n\t\t}\n\t}\n")
	return b.String()
}

// slowWebhook is S1's webhook to the paused receiver. The receiver holds
// each request for up to holdMax and then answers 503, so the attempt
// timeout must outlast the hold, retries must come back quickly once the
// receiver is released, and the held deliveries must not run out of
// attempts however long the queue takes to grow.
func slowWebhook() string {
	return s1Webhook(portSinkSlow, "timeout 10m\n\t\t\tbackoff 100ms 1s\n\t\t\tmax_attempts 50")
}

func retentionLine(r string) string {
	if r == "" {
		return ""
	}
	return "\n\t\tretention " + r
}
