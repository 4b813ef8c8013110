package callhook

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/callhook/caddy-callhook/module/inbound"
)

// Verifier is one `verify <vendor> ...` line: an inbound signature that
// every event must carry (SPEC §10).
type Verifier struct {
	// Vendor is twilio or zadarma.
	Vendor string `json:"vendor"`
	// Secret is Twilio's auth token or Zadarma's API secret. {env.*} is
	// expanded at load.
	Secret string `json:"secret"`
	// PublicURL (twilio) is the URL Twilio calls, for when Caddy sits
	// behind a proxy that changes the scheme, host or path. The request's
	// query string is appended when PublicURL has none.
	PublicURL string `json:"public_url,omitempty"`
}

// inboundChecks are the compiled verify and allow_sources settings.
type inboundChecks struct {
	twilio, zadarma *Verifier // secrets expanded
	sources         []netip.Prefix
}

// compileInbound expands the secrets and parses the source ranges.
func (h *Handler) compileInbound(repl *caddy.Replacer) error {
	h.inbound = inboundChecks{}
	for _, v := range h.Verify {
		secret := repl.ReplaceKnown(v.Secret, "")
		if secret == "" {
			return fmt.Errorf("verify %s: the secret %q is empty after expanding placeholders; set the environment variable", v.Vendor, v.Secret)
		}
		c := v
		c.Secret = secret
		switch v.Vendor {
		case "twilio":
			if v.PublicURL != "" {
				u, err := url.Parse(v.PublicURL)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return fmt.Errorf("verify twilio: public URL %q: expected the full http(s) URL Twilio calls", v.PublicURL)
				}
			}
			if h.inbound.twilio != nil {
				return fmt.Errorf("verify twilio is set twice")
			}
			h.inbound.twilio = &c
		case "zadarma":
			if v.PublicURL != "" {
				return fmt.Errorf("verify zadarma takes only the secret")
			}
			if h.inbound.zadarma != nil {
				return fmt.Errorf("verify zadarma is set twice")
			}
			h.inbound.zadarma = &c
		default:
			return fmt.Errorf("verify %q: unknown vendor; expected twilio or zadarma (use token or allow_sources for others)", v.Vendor)
		}
	}
	var err error
	if h.inbound.sources, err = parseSources(h.AllowSources); err != nil {
		return err
	}
	return nil
}

func parseSources(list []string) ([]netip.Prefix, error) {
	out, err := ParseDestinations(list)
	if err != nil {
		return nil, fmt.Errorf("allow_sources: %s", strings.TrimPrefix(err.Error(), "allow_destinations: "))
	}
	return out, nil
}

// clientIP is the request's client IP as Caddy determined it: the
// client_ip var, which honours the server's trusted_proxies, else the peer.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// sourceAllowed applies allow_sources.
func (c inboundChecks) sourceAllowed(ip string) bool {
	if len(c.sources) == 0 {
		return true
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addr = addr.WithZone("")
	for _, p := range c.sources {
		if p.Contains(addr) || p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

// verify is intake's Verify hook: every configured signature must match.
func (c inboundChecks) verify(r *http.Request, body []byte, form url.Values) error {
	if c.twilio != nil {
		params := form
		if r.Method == http.MethodGet {
			params = nil // Twilio signs a GET's URL only
		}
		if err := inbound.VerifyTwilio(c.twilio.Secret, r.Header.Get("X-Twilio-Signature"), twilioURL(r, c.twilio.PublicURL), params, body); err != nil {
			return err
		}
	}
	if c.zadarma != nil {
		vals := form
		if vals == nil {
			vals = r.URL.Query()
		}
		if err := inbound.VerifyZadarma(c.zadarma.Secret, r.Header.Get("Signature"), vals); err != nil {
			return err
		}
	}
	return nil
}

func (c inboundChecks) any() bool { return c.twilio != nil || c.zadarma != nil }

// twilioURL is the URL Twilio signed: the public URL when configured (with
// the request's query), else the request as it reached Caddy, before any
// rewrite or handle_path.
func twilioURL(r *http.Request, public string) string {
	orig := r
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		orig = &or
	}
	if public != "" {
		if !strings.Contains(public, "?") && orig.URL.RawQuery != "" {
			return public + "?" + orig.URL.RawQuery
		}
		return public
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	uri := orig.RequestURI
	if uri == "" {
		uri = orig.URL.RequestURI()
	}
	// Caddy's copy of the original request keeps the URI, not the Host.
	return scheme + "://" + r.Host + uri
}

// zadarmaEcho answers Zadarma's URL check, GET ?zd_echo=<value>, with the
// value; false when the request is not one.
func (c inboundChecks) zadarmaEcho(w http.ResponseWriter, r *http.Request) bool {
	if c.zadarma == nil || r.Method != http.MethodGet {
		return false
	}
	v, ok := inbound.ZadarmaEcho(r.URL.Query().Get("zd_echo"))
	if !ok {
		return false
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(v))
	return true
}
