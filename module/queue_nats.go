package callhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	natsgo "github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
	natsq "github.com/callhook/caddy-callhook/module/queue/natswq"
)

func init() {
	caddy.RegisterModule(NATSQueue{})
}

// NATSQueue is the queue backend that several Caddy nodes share: NATS
// JetStream partition streams, replicated by a NATS cluster. Every node
// whose config names the same servers and stream shares one queue: any
// node takes events; each node owns a share of the partitions and delivers
// their work. See docs/nats.md for what the server must be configured with
// for "202 means stored" to hold, and what each guarantee costs.
type NATSQueue struct {
	// URLs are the NATS servers (nats://host:4222, tls://host:4222). The
	// client finds the rest of the cluster by itself. Placeholders such as
	// {env.NATS_URL} are expanded.
	URLs []string `json:"urls,omitempty"`

	// Stream names the streams callhook creates (KV_<stream>_META and
	// KV_<stream>_P0 ... P<n-1>). Nodes with the same stream share one
	// queue. Default: CALLHOOK.
	Stream string `json:"stream,omitempty"`

	// Partitions is how many partition streams the queue has: the most
	// nodes that can deliver at once, and the Raft groups writes spread
	// over. Fixed when the streams are created; every node must use the
	// same. Default: 8.
	Partitions int `json:"partitions,omitempty"`

	// Replicas is how many JetStream servers keep each record: 1 for one
	// server, 3 for a production cluster. Checked against the existing
	// stream at every start; a change is a start error, never applied
	// silently. Default: 1.
	Replicas int `json:"replicas,omitempty"`

	// Credentials is a NATS credentials file (JWT and nkey seed).
	Credentials string `json:"credentials,omitempty"`
	// User and Password authenticate with a user name and password.
	// Placeholders are expanded (password {env.NATS_PASSWORD}).
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// Token authenticates with a token. Placeholders are expanded.
	Token string `json:"token,omitempty"`
	// NKey is a file holding an nkey seed (SU...).
	NKey string `json:"nkey,omitempty"`

	// TLS configures TLS to the NATS servers.
	TLS *NATSTLS `json:"tls,omitempty"`

	// MaxPending caps how many deliveries may wait at once across the
	// cluster (as each node sees it). Over the cap, ingest answers 503 with
	// Retry-After. Default: 0 (no cap).
	MaxPending int `json:"max_pending,omitempty"`

	urls                  []string // expanded
	user, password, token string
}

// NATSTLS is TLS to the NATS servers.
type NATSTLS struct {
	// CA is a PEM file of the roots to trust instead of the system's.
	CA string `json:"ca,omitempty"`
	// ClientCertificate and ClientKey are PEM files for mutual TLS.
	ClientCertificate string `json:"client_certificate,omitempty"`
	ClientKey         string `json:"client_key,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (NATSQueue) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "callhook.queues.nats",
		New: func() caddy.Module { return new(NATSQueue) },
	}
}

// Provision checks the settings and expands placeholders. It opens no
// connection: the app's Start calls Open.
func (q *NATSQueue) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	q.urls = q.urls[:0]
	for _, u := range q.URLs {
		q.urls = append(q.urls, repl.ReplaceKnown(u, ""))
	}
	q.user = repl.ReplaceKnown(q.User, "")
	q.password = repl.ReplaceKnown(q.Password, "")
	q.token = repl.ReplaceKnown(q.Token, "")
	return q.validate()
}

func (q *NATSQueue) validate() error {
	if len(q.urls) == 0 {
		return errors.New("queue nats: no server URL: write `queue nats nats://host:4222` (several URLs for a cluster)")
	}
	for _, u := range q.urls {
		if err := checkNATSURL(u); err != nil {
			return fmt.Errorf("queue nats: %v", err)
		}
	}
	if q.Stream != "" {
		for _, c := range q.Stream {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("queue nats: stream %q may hold only letters, digits, '-' and '_'", q.Stream)
			}
		}
	}
	if q.Replicas < 0 || q.Replicas > 5 {
		return fmt.Errorf("queue nats: replicas %d: JetStream keeps 1 to 5 replicas (3 for a production cluster)", q.Replicas)
	}
	if q.MaxPending < 0 {
		return errors.New("queue nats: max_pending must not be negative")
	}
	if q.Partitions < 0 || q.Partitions > 64 {
		return fmt.Errorf("queue nats: partitions %d: want 1 to 64 (default 8)", q.Partitions)
	}
	methods := 0
	for _, set := range []bool{q.Credentials != "", q.User != "" || q.Password != "", q.Token != "", q.NKey != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return errors.New("queue nats: use one of credentials, user/password, token or nkey")
	}
	if (q.User == "") != (q.Password == "") {
		return errors.New("queue nats: user and password go together")
	}
	files := map[string]string{"credentials": q.Credentials, "nkey": q.NKey}
	if q.TLS != nil {
		files["tls ca"], files["tls client_certificate"], files["tls client key"] = q.TLS.CA, q.TLS.ClientCertificate, q.TLS.ClientKey
		if (q.TLS.ClientCertificate == "") != (q.TLS.ClientKey == "") {
			return errors.New("queue nats: tls client_certificate needs both the certificate and the key file")
		}
	}
	for what, f := range files {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("queue nats: %s file: %v", what, err)
		}
	}
	return nil
}

func checkNATSURL(s string) error {
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a server URL such as nats://127.0.0.1:4222", s)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("%q: scheme %q is not nats://, tls://, ws:// or wss://", redactedURL(u), u.Scheme)
	}
	return nil
}

func redactedURL(u *url.URL) string {
	if u.User != nil {
		c := *u
		c.User = url.User("redacted")
		return c.String()
	}
	return u.String()
}

// PendingCap is max_pending, applied to the open queue on every reload.
func (q *NATSQueue) PendingCap() int { return q.MaxPending }

// Key identifies the queue by its servers, stream and settings, so that a
// reload that changes any of them opens the queue again. Secrets are in it
// only as a hash: the key is logged.
func (q *NATSQueue) Key() string {
	urls := slices.Clone(q.urls)
	for i, s := range urls {
		if u, err := url.Parse(s); err == nil {
			urls[i] = redactedURL(u)
		}
	}
	slices.Sort(urls)
	// Keyed with a secret of this process: the key only has to match
	// itself across reloads, and must not let anyone who reads a log test
	// guesses of the password against it.
	h := hmac.New(sha256.New, keySalt[:])
	for _, s := range append(slices.Clone(q.urls), q.Credentials, q.user, q.password, q.token, q.NKey, strconv.Itoa(q.Replicas), strconv.Itoa(q.Partitions)) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	if q.TLS != nil {
		fmt.Fprint(h, q.TLS.CA, "\x00", q.TLS.ClientCertificate, "\x00", q.TLS.ClientKey)
	}
	stream := q.Stream
	if stream == "" {
		stream = "CALLHOOK"
	}
	return "nats:" + strings.Join(urls, ",") + "/" + stream + "#" + hex.EncodeToString(h.Sum(nil)[:6])
}

// keySalt keys the hash of secrets in Key, new in every process.
var keySalt = func() (b [32]byte) { _, _ = rand.Read(b[:]); return }()

// Open connects to NATS, creates or checks the streams and loads this
// node's partitions, or
// keeps trying in the background while NATS cannot be reached.
func (q *NATSQueue) Open(logger *zap.Logger) (queue.Queue, error) {
	var opts []natsgo.Option
	switch {
	case q.Credentials != "":
		opts = append(opts, natsgo.UserCredentials(q.Credentials))
	case q.user != "":
		opts = append(opts, natsgo.UserInfo(q.user, q.password))
	case q.token != "":
		opts = append(opts, natsgo.Token(q.token))
	case q.NKey != "":
		o, err := natsgo.NkeyOptionFromSeed(q.NKey)
		if err != nil {
			return nil, fmt.Errorf("queue nats: nkey file %s: %v", q.NKey, err)
		}
		opts = append(opts, o)
	}
	if t := q.TLS; t != nil {
		if t.CA != "" {
			opts = append(opts, natsgo.RootCAs(t.CA))
		}
		if t.ClientCertificate != "" {
			opts = append(opts, natsgo.ClientCert(t.ClientCertificate, t.ClientKey))
		}
		if t.CA == "" && t.ClientCertificate == "" {
			opts = append(opts, natsgo.Secure())
		}
	}
	name := "callhook"
	if h, err := os.Hostname(); err == nil {
		name += " on " + h
	}
	// A node that boots before NATS still serves its sites: callhook
	// answers 503 until the queue opens (OpenOrWait); a config that can
	// never work is still a start error.
	return natsq.OpenOrWait(natsq.Options{
		URLs: q.urls, Bucket: q.Stream, Partitions: q.Partitions, Replicas: q.Replicas, MaxPending: q.MaxPending,
		DedupWindow: dedupWindow, ConnectOptions: opts, Name: name, Logger: logger,
	})
}

// UnmarshalCaddyfile sets up the backend from Caddyfile tokens. Syntax:
//
//	queue nats <url>... {
//		stream      <name>         # default CALLHOOK
//		partitions  <n>            # default 8; fixed once the streams exist
//		replicas    <n>            # default 1; 3 for a production cluster
//		credentials <file>         # or one of:
//		user        <name>
//		password    <password>
//		token       <token>
//		nkey        <seed file>
//		tls {
//			ca                 <pem file>
//			client_certificate <cert file> <key file>
//		}
//		max_pending <n>
//	}
func (q *NATSQueue) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // backend name
	q.URLs = d.RemainingArgs()
	if len(q.URLs) == 0 {
		return d.Err("queue nats needs the servers' URLs: queue nats nats://127.0.0.1:4222 [more URLs]")
	}
	for _, u := range q.URLs {
		if strings.Contains(u, "{") {
			continue
		}
		if err := checkNATSURL(u); err != nil {
			return d.Errf("queue nats: %v", err)
		}
	}
	one := func(dst *string) error {
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
		return nil
	}
	for d.NextBlock(0) {
		opt := d.Val()
		var err error
		switch opt {
		case "stream":
			err = one(&q.Stream)
		case "replicas":
			var n string
			if err = one(&n); err == nil {
				v, perr := strconv.Atoi(n)
				if perr != nil || v < 1 || v > 5 {
					return d.Errf("replicas %q: want 1 to 5 (1 for one server, 3 for a production cluster)", n)
				}
				q.Replicas = v
			}
		case "partitions":
			var n string
			if err = one(&n); err == nil {
				v, perr := strconv.Atoi(n)
				if perr != nil || v < 1 || v > 64 {
					return d.Errf("partitions %q: want 1 to 64 (default 8; the most nodes that deliver at once)", n)
				}
				q.Partitions = v
			}
		case "credentials":
			err = one(&q.Credentials)
		case "user":
			err = one(&q.User)
		case "password":
			err = one(&q.Password)
		case "token":
			err = one(&q.Token)
		case "nkey":
			err = one(&q.NKey)
		case "max_pending":
			var n string
			if err = one(&n); err == nil {
				v, perr := parsePositiveInt(n)
				if perr != nil {
					return d.Errf("max_pending: %v", perr)
				}
				q.MaxPending = v
			}
		case "tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			if q.TLS == nil {
				q.TLS = new(NATSTLS)
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "ca":
					err = one(&q.TLS.CA)
				case "client_certificate":
					if !d.AllArgs(&q.TLS.ClientCertificate, &q.TLS.ClientKey) {
						return d.Errf("client_certificate needs the certificate file and the key file")
					}
				default:
					return d.Errf("unknown option %q in queue nats tls: expected ca or client_certificate", d.Val())
				}
				if err != nil {
					return err
				}
			}
		default:
			return d.Errf("unknown option %q in queue nats: expected stream, partitions, replicas, credentials, user, password, token, nkey, tls or max_pending", opt)
		}
		if err != nil {
			return err
		}
	}
	methods := 0
	for _, set := range []bool{q.Credentials != "", q.User != "" || q.Password != "", q.Token != "", q.NKey != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return d.Err("queue nats: use one of credentials, user/password, token or nkey, not several")
	}
	if (q.User == "") != (q.Password == "") {
		return d.Err("queue nats: user and password go together")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*NATSQueue)(nil)
	_ QueueBackend          = (*NATSQueue)(nil)
	_ pendingCap            = (*NATSQueue)(nil)
	_ pendingCapper         = (*natsq.Queue)(nil)
	_ caddyfile.Unmarshaler = (*NATSQueue)(nil)
)
