package callhook

import (
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/embedded"
)

func init() {
	caddy.RegisterModule(EmbeddedQueue{})
}

// EmbeddedQueue is the default queue backend: a bbolt file under Caddy's
// data directory. It needs no external service; one Caddy process uses it
// at a time.
type EmbeddedQueue struct {
	// Path is the directory that holds the queue file (queue.db).
	// Default: `callhook` under Caddy's data directory.
	Path string `json:"path,omitempty"`

	// MaxPending caps how many deliveries may wait at once. Over the cap,
	// ingest answers 503 with Retry-After. Default: 0 (no cap).
	MaxPending int `json:"max_pending,omitempty"`

	file string
}

// CaddyModule returns the Caddy module information.
func (EmbeddedQueue) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "callhook.queues.embedded",
		New: func() caddy.Module { return new(EmbeddedQueue) },
	}
}

// Provision resolves the file path. It does not touch the disk.
func (q *EmbeddedQueue) Provision(caddy.Context) error {
	dir := q.Path
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "callhook")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("queue path %q: %v", dir, err)
	}
	q.file = filepath.Join(abs, "queue.db")
	if q.MaxPending < 0 {
		return fmt.Errorf("max_pending must not be negative")
	}
	return nil
}

// Key identifies the queue by its file.
func (q *EmbeddedQueue) Key() string { return "embedded:" + q.file }

// Open opens (or creates) the queue file.
func (q *EmbeddedQueue) Open(logger *zap.Logger) (queue.Queue, error) {
	return embedded.Open(embedded.Options{Path: q.file, MaxPending: q.MaxPending, Logger: logger, DedupWindow: defaultDedupWindow})
}

// UnmarshalCaddyfile sets up the backend from Caddyfile tokens. Syntax:
//
//	queue embedded {
//		path <directory>
//		max_pending <n>
//	}
func (q *EmbeddedQueue) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // backend name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "path":
			if !d.AllArgs(&q.Path) {
				return d.ArgErr()
			}
		case "max_pending":
			var n string
			if !d.AllArgs(&n) {
				return d.ArgErr()
			}
			v, err := parsePositiveInt(n)
			if err != nil {
				return d.Errf("max_pending: %v", err)
			}
			q.MaxPending = v
		default:
			return d.Errf("unknown option %q in queue embedded: expected path or max_pending", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*EmbeddedQueue)(nil)
	_ QueueBackend          = (*EmbeddedQueue)(nil)
	_ caddyfile.Unmarshaler = (*EmbeddedQueue)(nil)
)
