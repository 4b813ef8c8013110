// Package render turns a decoded event and a compiled webhook into the
// stored outbound request: params evaluated in declaration order, times
// formatted, body encoded, URL and headers templated. Everything that can be
// checked without an event is checked by Compile, at config load.
package render

import (
	"time"

	"github.com/callhook/caddy-callhook/module/delivery"
)

// Param is one `param NAME EXPRESSION` line.
type Param struct {
	Name string `json:"name"`
	Expr string `json:"expr"`
}

// Header is one `header NAME VALUE` line.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Config is a webhook as declared, after `{env.*}` placeholders are
// resolved. Empty fields take the defaults documented on Compile.
type Config struct {
	Name        string
	On          []string
	URL         string
	Method      string
	Format      string
	DateFormat  string
	Timezone    string
	Headers     []Header
	When        string
	Params      []Param
	Secret      string
	RPCMethod   string
	XMLRoot     string
	Timeout     time.Duration
	MaxAttempts int
	BackoffMin  time.Duration
	BackoffMax  time.Duration
	MaxAge      time.Duration
	// Sync makes a sync webhook (SPEC §9): sent while the caller waits,
	// one attempt, never queued; Timeout defaults to DefaultSyncTimeout and
	// is at most MaxSyncTimeout.
	Sync bool
	// TLSProfile names the webhook's TLS settings for the sender
	// (queue.Policy.TLS); empty means the system's defaults.
	TLSProfile string
	// RotatedSecrets sign each request after Secret, during a rotation.
	RotatedSecrets []string
	// Ordered sets each delivery's order key (target, webhook, call_id).
	Ordered bool
	// OmitNil leaves params whose value is nil out of the request.
	OmitNil bool
}

// Defaults of SPEC §2 and §6. The delivery policy's live in package
// delivery, which applies them to stored work too; they are only named here.
const (
	DefaultMethod      = "POST"
	DefaultFormat      = "json"
	DefaultTimeout     = delivery.DefaultTimeout
	DefaultMaxAttempts = delivery.DefaultMaxAttempts
	DefaultBackoffMin  = delivery.DefaultBackoffMin
	DefaultBackoffMax  = delivery.DefaultBackoffMax
	DefaultMaxAge      = delivery.DefaultMaxAge
	// MaxAttempts bounds max_attempts: queues keep the last 50 attempts of
	// a delivery, and the attempt count is read from that history.
	MaxAttempts = 50
	// MaxTimeout bounds a webhook's per-attempt timeout.
	MaxTimeout = 10 * time.Minute
	// DefaultSyncTimeout and MaxSyncTimeout bound a sync webhook's call.
	DefaultSyncTimeout = 3 * time.Second
	MaxSyncTimeout     = 30 * time.Second
	// MaxWebhooksPerEvent is the per-target, per-event limit of SPEC §7.
	MaxWebhooksPerEvent = 40
	// MinWhsecBytes is the shortest key a whsec_ secret may decode to: the
	// Standard Webhooks lower bound (24 to 64 bytes). A raw secret is used
	// as written: the receiver chose it.
	MinWhsecBytes = 24
	// MaxURLBytes bounds a rendered request URL: 8 KiB is the request line
	// nginx and Apache accept by default; longer ones get 414.
	MaxURLBytes = 8 << 10
)
