package callhook

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
)

// Outcomes of an incoming event, the outcome label of
// callhook_events_received_total; its code label has the answer's status.
const (
	eventAccepted  = "accepted"  // 202: stored
	eventDuplicate = "duplicate" // 200: seen within the dedup window, nothing stored
	eventRejected  = "rejected"  // 4xx, or 503 when the queue could not store it
)

// The collectors are created once per process, not per config: Caddy gives
// every config load a fresh registry, and the engine that reports delivery
// outcomes outlives configs. Each config registers these same collectors
// into its registry, so counters keep counting across reloads.
var metrics = struct {
	events     *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	attempts   *prometheus.HistogramVec
	queue      *queueCollector
	paused     *prometheus.GaugeVec
}{
	events: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "callhook",
		Name:      "events_received_total",
		Help:      "Call events received, by outcome (accepted, duplicate, rejected) and the status code of the answer (503: the queue could not store it). event is empty when the request was rejected before its event was known.",
	}, []string{"target", "event", "outcome", "code"}),

	deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "callhook",
		Name:      "deliveries_total",
		Help:      "Webhook delivery outcomes: delivered (2xx), retry (an attempt failed and another is scheduled) or dead (gave up, or the webhook could not be rendered).",
	}, []string{"target", "webhook", "outcome"}),

	attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "callhook",
		Name:      "attempt_duration_seconds",
		Help:      "Duration of webhook delivery attempts, from the start of the request to the end of reading the response, whatever the outcome.",
		// Receivers answer in milliseconds when healthy; the default
		// per-attempt timeout is 10s and some are set to 30s.
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"target", "webhook"}),

	queue: &queueCollector{engines: make(map[*engine]struct{})},

	paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "callhook",
		Name:      "webhook_paused",
		Help:      "1 while a webhook is paused (disable_after: every attempt failed for that long), 0 otherwise. A paused webhook's deliveries stay pending until it is resumed through the admin API.",
	}, []string{"target", "webhook"}),
}

// setPaused sets a webhook's callhook_webhook_paused gauge.
func setPaused(target, webhook string, paused bool) {
	v := 0.0
	if paused {
		v = 1
	}
	metrics.paused.WithLabelValues(target, webhook).Set(v)
}

// registerMetrics adds callhook's collectors to a config's registry. Seeing
// them there already is expected (several modules of one config may call it)
// and is not an error.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil // a bare caddy.Context, as in unit tests
	}
	for _, c := range []prometheus.Collector{metrics.events, metrics.deliveries, metrics.attempts, metrics.queue, metrics.paused} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// countEvent counts one incoming event's outcome. event must be a canonical
// event name or empty: names from rejected requests are the sender's choice
// and would make the label's cardinality unbounded.
func countEvent(target, event, outcome string, code int) {
	metrics.events.WithLabelValues(target, event, outcome, strconv.Itoa(code)).Inc()
}

// initWebhookSeries creates a webhook's series at zero, so that rate() and
// increase() work from its first delivery and dashboards show 0, not "no
// data", for webhooks that have not failed yet.
func initWebhookSeries(target, webhook string) {
	for _, o := range []string{delivery.OutcomeDelivered, delivery.OutcomeRetry, delivery.OutcomeDead} {
		metrics.deliveries.WithLabelValues(target, webhook, o)
	}
	metrics.attempts.WithLabelValues(target, webhook)
	metrics.paused.WithLabelValues(target, webhook)
}

// countDeadOnArrival counts a delivery stored dead because its webhook could
// not be rendered: it never reaches the workers, so the observer never sees it.
func countDeadOnArrival(d *queue.Delivery) {
	metrics.deliveries.WithLabelValues(d.Target, d.Webhook, delivery.OutcomeDead).Inc()
}

// outcomeMetrics is the delivery pool's observer.
type outcomeMetrics struct{}

// Outcome counts an outcome and, if an attempt was made (a delivery that
// expired before its next attempt has none), its duration.
func (outcomeMetrics) Outcome(d *queue.Delivery, r delivery.Result, final string, _ time.Time) {
	metrics.deliveries.WithLabelValues(d.Target, d.Webhook, final).Inc()
	if !r.Attempt.Start.IsZero() {
		metrics.attempts.WithLabelValues(d.Target, d.Webhook).Observe(r.Attempt.Duration.Seconds())
	}
}

// queueCollector reports the deliveries in the open queues by state, read at
// scrape time (queue.Stats is a counter lookup in the embedded backend). It
// tracks engines rather than configs, so it reports the same queue whichever
// config's registry is scraped, and nothing while no queue is open.
type queueCollector struct {
	mu      sync.Mutex
	engines map[*engine]struct{}
}

var queueDesc = prometheus.NewDesc("callhook_queue_deliveries",
	"Deliveries in the queue by state: pending (waiting for an attempt), leased (an attempt is running), delivered (kept for the retention period) and dead (kept until retried by hand).",
	[]string{"state"}, nil)

// statsTimeout bounds reading the queue's counts during a scrape, so a stuck
// queue cannot hang the metrics endpoint.
const statsTimeout = 5 * time.Second

func (c *queueCollector) track(e *engine) {
	c.mu.Lock()
	c.engines[e] = struct{}{}
	c.mu.Unlock()
}

func (c *queueCollector) untrack(e *engine) {
	c.mu.Lock()
	delete(c.engines, e)
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDesc }

// Collect implements prometheus.Collector. Queues are summed: there is more
// than one only for a moment, while a reload moves to another queue.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	engines := make([]*engine, 0, len(c.engines))
	for e := range c.engines {
		engines = append(engines, e)
	}
	c.mu.Unlock()
	if len(engines) == 0 {
		return
	}

	var sum queue.Stats
	ok := false
	for _, e := range engines {
		ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
		s, err := e.q.Stats(ctx)
		cancel()
		if err != nil {
			// An error metric would fail the whole scrape (Caddy's handler
			// answers 500), taking Caddy's own metrics down with ours.
			if !errors.Is(err, queue.ErrClosed) {
				e.logger.Error("cannot read the queue's counts for the callhook_queue_deliveries metric; it is left out of this scrape", zap.Error(err))
			}
			continue
		}
		sum.Pending += s.Pending
		sum.Leased += s.Leased
		sum.Delivered += s.Delivered
		sum.Dead += s.Dead
		ok = true
	}
	if !ok {
		return
	}
	for _, m := range []struct {
		state string
		n     int
	}{
		{string(queue.Pending), sum.Pending},
		{"leased", sum.Leased},
		{string(queue.Delivered), sum.Delivered},
		{string(queue.Dead), sum.Dead},
	} {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(m.n), m.state)
	}
}

// Interface guards
var (
	_ delivery.Observer    = outcomeMetrics{}
	_ prometheus.Collector = (*queueCollector)(nil)
)
