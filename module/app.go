// Package callhook is the Caddy glue of callhook: the `callhook` app (the
// durable queue and its delivery workers), the `http.handlers.callhook`
// handler (call events in), the embedded queue module and the Caddyfile.
// The engine itself lives in the sub-packages, which know nothing of Caddy.
package callhook

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

func init() {
	caddy.RegisterModule(App{})
}

// Version is sent in the User-Agent of every webhook.
const Version = delivery.Version

// App is the `callhook` app. It owns the durable queue and the delivery
// workers that all callhook handlers share. Queued work survives config
// reloads: the queue and workers live in a usage pool keyed by the queue's
// identity, so a reload that keeps the queue keeps them running.
type App struct {
	// Queue is the queue backend, a module in the `callhook.queues`
	// namespace. Default: `embedded` (pebble, under Caddy's data directory).
	QueueRaw json.RawMessage `json:"queue,omitempty" caddy:"namespace=callhook.queues inline_key=backend"`

	// Workers is how many deliveries are attempted at once. Default: 64.
	// Changes take effect on reload.
	Workers int `json:"workers,omitempty"`

	// PerDestination caps concurrent attempts to one receiver
	// (scheme://host:port), so one slow receiver cannot take every worker.
	// Default: a quarter of Workers.
	PerDestination int `json:"per_destination,omitempty"`

	// AllowDestinations lists CIDR ranges (or single IPs) of private,
	// loopback or link-local addresses that webhooks may call. Everything
	// else of that kind is refused at dial time by the SSRF guard.
	AllowDestinations []string `json:"allow_destinations,omitempty"`

	// DrainTimeout bounds how long stopping waits for in-flight attempts.
	// Unfinished attempts are retried later. Default: 10s.
	DrainTimeout caddy.Duration `json:"drain_timeout,omitempty"`

	// Retention is how long delivered deliveries are kept for inspection.
	// Dead ones are kept until retried. Default: 7 days.
	Retention caddy.Duration `json:"retention,omitempty"`

	// HTTPSOnly makes any http:// webhook URL a load-time error.
	HTTPSOnly bool `json:"https_only,omitempty"`

	tlsProfiles map[string]*tls.Config // from the handlers' webhooks
	// SecretKey seals webhook signing secrets in the queue (AES-256-GCM),
	// so the queue only holds ciphertext: at least 16 characters, usually
	// {env.CALLHOOK_SECRET_KEY}. Nodes that share a queue need the same
	// key. Default: a random key kept in the file callhook/secret.key
	// under Caddy's data directory (created 0600 on first start).
	SecretKey string `json:"secret_key,omitempty"`

	backend QueueBackend
	cfg     settings // computed once, in Provision
	logger  *zap.Logger
	engine  atomic.Value  // *engine, set by Start; handlers may run before it
	started chan struct{} // closed by Start once engine is set
	holding *atomic.Bool  // between Start and Stop (or Cleanup)

	// webhooks is every handler's webhooks of this config, by target, so the
	// rules of SPEC §7 hold per target across handler blocks.
	webhooks *targetRegistry
}

// pendingCap is implemented by a queue backend module that has a cap on
// waiting deliveries (max_pending) to apply on reload.
type pendingCap interface{ PendingCap() int }

// QueueBackend is implemented by `callhook.queues.*` modules.
type QueueBackend interface {
	// Key identifies the queue: two configs with the same key share one
	// open queue and its workers across a reload.
	Key() string
	// Open opens the queue. It is called in the app's Start, never in
	// Provision (caddy validate runs Provision).
	Open(logger *zap.Logger) (queue.Queue, error)
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "callhook",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets up the app. It opens nothing and starts nothing.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.started = make(chan struct{})
	a.holding = new(atomic.Bool)
	a.webhooks = new(targetRegistry)
	if a.QueueRaw == nil {
		a.QueueRaw = json.RawMessage(`{"backend":"embedded"}`)
	}
	mod, err := ctx.LoadModule(a, "QueueRaw")
	if err != nil {
		return fmt.Errorf("loading queue backend: %v", err)
	}
	backend, ok := mod.(QueueBackend)
	if !ok {
		return fmt.Errorf("module %T is not a callhook queue backend", mod)
	}
	a.backend = backend
	if a.cfg, err = a.settings(); err != nil {
		return err
	}
	a.cfg.logger = a.logger
	a.cfg.webhooks = a.webhooks
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering callhook metrics: %v", err)
	}
	return nil
}

// ParseDestinations parses allow_destinations: CIDR ranges or single IPs.
func ParseDestinations(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("allow_destinations: %q is not a CIDR range such as 10.0.0.0/8: %v", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("allow_destinations: %q is neither an IP address nor a CIDR range", s)
		}
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}

// engines holds the open queues and their workers across config reloads.
var engines = caddy.NewUsagePool()

// Start opens the queue (or joins the one a previous config left open) and
// puts this config's settings in force.
func (a *App) Start() error {
	if err := a.loadSealKey(); err != nil {
		return err
	}
	key := a.backend.Key()
	// The handlers' webhook TLS settings, registered after the app was
	// provisioned; queued deliveries name theirs.
	a.cfg.tlsProfiles = a.tlsProfiles
	val, loaded, err := engines.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newEngine(key, a.backend, a.cfg)
	})
	if err != nil {
		return err
	}
	e := val.(*engine)
	e.hold(a)
	a.holding.Store(true)
	a.engine.Store(e)
	close(a.started)
	a.logger.Info("callhook started", zap.String("queue", key), zap.Bool("reused", loaded))
	return nil
}

// Stop releases this config's hold on the queue. If this config's settings
// were in force over an older config that still runs (this one failed to
// start), the older one's are put back. The last config to let go drains
// in-flight attempts (bounded by drain_timeout) and closes the queue.
func (a *App) Stop() error {
	if a.holding == nil || !a.holding.CompareAndSwap(true, false) {
		return nil
	}
	a.loadEngine().release(a)
	_, err := engines.Delete(a.backend.Key())
	return err
}

// Cleanup lets go of the queue if Stop was never called: Caddy cancels a
// config that failed after its apps started without stopping them.
func (a *App) Cleanup() error { return a.Stop() }

// settings computes the app's settings and their defaults; this is the one
// place app defaults live.
func (a *App) settings() (settings, error) {
	if a.Workers < 0 || a.PerDestination < 0 {
		return settings{}, fmt.Errorf("workers and per_destination must not be negative")
	}
	prefixes, err := ParseDestinations(a.AllowDestinations)
	if err != nil {
		return settings{}, err
	}
	s := settings{
		workers:        cmp.Or(a.Workers, delivery.DefaultWorkers),
		perDestination: a.PerDestination,
		guard:          delivery.NewGuard(prefixes),
		drain:          cmp.Or(time.Duration(a.DrainTimeout), defaultDrainTimeout),
		retention:      cmp.Or(time.Duration(a.Retention), defaultRetention),
		maxPending:     -1,
	}
	if s.perDestination == 0 {
		s.perDestination = delivery.DefaultPerDestination(s.workers)
	}
	if s.perDestination > s.workers {
		return settings{}, fmt.Errorf("per_destination (%d) is more than workers (%d)", s.perDestination, s.workers)
	}
	if c, ok := a.backend.(pendingCap); ok {
		s.maxPending = c.PendingCap()
	}
	if a.SecretKey != "" {
		if s.sealKey, err = secretKey(caddy.NewReplacer(), a.SecretKey); err != nil {
			return settings{}, err
		}
	}
	return s, nil
}

// App defaults (SPEC §2); the pool's are in package delivery.
const (
	defaultDrainTimeout = 10 * time.Second
	defaultRetention    = 7 * 24 * time.Hour
)

// enqueue stores an event envelope.
func (a *App) enqueue(ctx context.Context, env *queue.Envelope) (queue.EnqueueResult, error) {
	e := a.loadEngine()
	if e == nil {
		e = a.waitStarted(ctx)
	}
	if e == nil {
		return queue.EnqueueResult{}, errNotStarted
	}
	return e.enqueue(ctx, env, a.webhooks)
}

// startWait bounds how long an event waits for this app's Start.
const startWait = 5 * time.Second

// waitStarted waits briefly for Start. Caddy starts a config's apps in no
// fixed order, so on every start and reload the new HTTP server may hand a
// request to a handler whose callhook app has not started yet; answering
// 503 then would turn a routine reload into failed events.
func (a *App) waitStarted(ctx context.Context) *engine {
	if a.started == nil {
		return nil
	}
	t := time.NewTimer(startWait)
	defer t.Stop()
	select {
	case <-a.started:
	case <-ctx.Done():
	case <-t.C:
	}
	return a.loadEngine()
}

func (a *App) loadEngine() *engine {
	e, _ := a.engine.Load().(*engine)
	return e
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

// addTLSProfiles collects a handler's webhook TLS settings; Start hands
// them to the sender. Handlers are provisioned before any app starts.
func (a *App) addTLSProfiles(m map[string]*tls.Config) {
	if len(m) == 0 {
		return
	}
	if a.tlsProfiles == nil {
		a.tlsProfiles = make(map[string]*tls.Config, len(m))
	}
	maps.Copy(a.tlsProfiles, m)
}

// loadChecks are the app settings that make a webhook a load-time error.
type loadChecks struct {
	// guard refuses literal internal addresses and localhost in URLs.
	guard *delivery.Guard
	// httpsOnly refuses http:// URLs.
	httpsOnly bool
}

// loadChecks derives them from the app's settings; it works on an app that
// is not provisioned (the Caddyfile adapter, the render command).
func (a *App) loadChecks() loadChecks {
	if a == nil {
		return loadChecks{}
	}
	prefixes, err := ParseDestinations(a.AllowDestinations)
	if err != nil {
		return loadChecks{} // Provision reports it
	}
	return loadChecks{guard: delivery.NewGuard(prefixes), httpsOnly: a.HTTPSOnly}
}

// check applies the checks to one compiled webhook; zero checks pass.
func (c loadChecks) check(hook *render.Webhook) error {
	if c.guard != nil {
		if err := hook.CheckDestination(c.guard); err != nil {
			return err
		}
	}
	if c.httpsOnly && hook.Scheme() != "https" {
		return fmt.Errorf("webhook %s: url: not https, and the callhook app has https_only; use an https:// URL", hook.Name())
	}
	return nil
}
