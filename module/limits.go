package callhook

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/callhook/caddy-callhook/module/delivery"
	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/render"
)

// webhookLimits are a webhook's rate_limit, concurrency and disable_after,
// resolved.
type webhookLimits struct {
	delivery.WebhookLimit
	// disableAfter pauses the webhook once every attempt failed for this
	// long; 0 never does.
	disableAfter time.Duration
}

// limits checks and resolves the webhook's limit options.
func (w Webhook) limits() (webhookLimits, error) {
	var l webhookLimits
	if w.RateLimit != "" {
		r, burst, err := parseRateLimit(w.RateLimit)
		if err != nil {
			return l, err
		}
		l.Rate, l.Burst = r, burst
	}
	if w.Concurrency < 0 {
		return l, fmt.Errorf("concurrency %d: expected a positive whole number such as 4", w.Concurrency)
	}
	l.Concurrency = w.Concurrency
	if w.DisableAfter < 0 {
		return l, fmt.Errorf("disable_after must not be negative: expected a duration such as 1h")
	}
	l.disableAfter = time.Duration(w.DisableAfter)
	return l, nil
}

// maxRate bounds rate_limit: beyond it the limit would not limit anything a
// webhook receiver can take.
const maxRate = 100000

// parseRateLimit reads `N/s` or `N/m` (also `N/sec`, `N/min`, `N/second`,
// `N/minute`). The burst is one second's worth (at least 1), so a per-minute
// limit starts at most one attempt at a time, spread over the minute.
func parseRateLimit(s string) (rate.Limit, int, error) {
	hint := "expected attempts per second or per minute, such as 20/s or 600/m"
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, 0, fmt.Errorf("rate_limit %q: %s", s, hint)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n <= 0 {
		return 0, 0, fmt.Errorf("rate_limit %q: %q is not a positive whole number; %s", s, num, hint)
	}
	if n > maxRate {
		return 0, 0, fmt.Errorf("rate_limit %q: at most %d per unit", s, maxRate)
	}
	var per time.Duration
	switch strings.ToLower(strings.TrimSpace(unit)) {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	default:
		return 0, 0, fmt.Errorf("rate_limit %q: unknown unit %q; %s", s, unit, hint)
	}
	r := rate.Limit(float64(n) / per.Seconds())
	return r, max(1, int(float64(n)*float64(time.Second)/float64(per))), nil
}

// webhookLimitsOf is the pool's per-webhook limits for a config's
// webhooks, by queue.WebhookKey.
func webhookLimitsOf(reg *targetRegistry) map[string]delivery.WebhookLimit {
	out := map[string]delivery.WebhookLimit{}
	reg.each(func(h *Handler, w *render.Webhook) {
		if l := h.limits[w.Name()].WebhookLimit; l != (delivery.WebhookLimit{}) {
			out[queue.WebhookKey(h.Target, w.Name())] = l
		}
	})
	return out
}
