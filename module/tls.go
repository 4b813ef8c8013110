package callhook

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"

	"github.com/callhook/caddy-callhook/module/render"
)

// WebhookTLS is a webhook's `tls` block: how callhook connects to a
// receiver behind a private CA or one that requires a client certificate
// (SPEC §12). Files are read and checked when the config loads.
type WebhookTLS struct {
	// CA is a PEM file of root certificates to trust instead of the
	// system's.
	CA string `json:"ca,omitempty"`
	// ClientCertificate and ClientKey are PEM files: the certificate (and
	// chain) and private key callhook presents to the receiver (mTLS).
	ClientCertificate string `json:"client_certificate,omitempty"`
	ClientKey         string `json:"client_key,omitempty"`
	// ServerName is sent as SNI and is the name the receiver's certificate
	// must carry, when it differs from the URL's host.
	ServerName string `json:"server_name,omitempty"`
	// InsecureSkipVerify accepts any certificate from the receiver. It is
	// logged as a warning at every load; use ca instead.
	InsecureSkipVerify bool `json:"insecure_skip_verify_dangerous,omitempty"`
}

// checkTLSScheme refuses a tls block on a webhook that does not use https,
// where it would silently do nothing.
func (w Webhook) checkTLSScheme(hook *render.Webhook) error {
	if w.TLS != nil && hook.Scheme() != "https" {
		return fmt.Errorf("webhook %s: tls: the block only applies to https:// URLs; use an https url or remove the block", w.Name)
	}
	return nil
}

// tlsProfileKey names a webhook's TLS settings in queued deliveries. It is
// the webhook's identity, not a hash of the settings, so a reload with a
// renewed certificate applies to deliveries already queued.
func tlsProfileKey(target, webhook string) string { return target + "/" + webhook }

// load reads and checks the files and builds the client TLS config.
func (t *WebhookTLS) load(repl *caddy.Replacer) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		file := repl.ReplaceKnown(t.CA, "")
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate in the file", file)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.ClientCertificate != "" && t.ClientKey != "":
		certFile, keyFile := repl.ReplaceKnown(t.ClientCertificate, ""), repl.ReplaceKnown(t.ClientKey, "")
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client_certificate %s %s: %v", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.ClientCertificate != "" || t.ClientKey != "":
		return nil, errors.New("tls client_certificate needs both the certificate and the key file")
	}
	cfg.ServerName = repl.ReplaceKnown(t.ServerName, "")
	cfg.InsecureSkipVerify = t.InsecureSkipVerify
	return cfg, nil
}
