// Package redact is callhook's one redactor: every view (admin API,
// dashboard, CLI) and every log line that may hold a URL, a header, a
// reason or a receiver's answer goes through it.
//
// What it hides:
//
//   - in URLs anywhere in a text (the request URL, reasons, errors, a
//     receiver's Location quoted in an attempt's error): the password of
//     the user info, and the values of credential query parameters
//     (token, secret, key, signature, password and names built on them);
//   - name=value pairs, "name": "value" JSON members and <name>value</name>
//     XML elements whose name is a credential name, wherever they appear;
//   - the values of credential headers (Authorization, Cookie, X-Api-Key,
//     and any header whose name holds auth, token, secret, key, signature,
//     cookie or password);
//   - every known secret value (the signing secret, the values of the
//     delivery's own credential headers and query parameters) wherever it
//     appears, so a receiver that echoes a token in its answer does not
//     leak it through the response excerpt.
package redact

import (
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Mask replaces every hidden value.
const Mask = "[redacted]"

// minSecret is the shortest known secret that is scrubbed by value: shorter
// ones would turn ordinary text into a wall of [redacted].
const minSecret = 4

// secretHeaderWords mark header names whose values are credentials.
var secretHeaderWords = []string{"auth", "token", "secret", "key", "signature", "cookie", "password"}

// SecretHeader reports whether a header's value is a credential:
// Authorization, Proxy-Authorization, Cookie, X-Api-Key and any header
// whose name contains auth, token, secret, key, signature, cookie or
// password.
func SecretHeader(name string) bool {
	lower := strings.ToLower(name)
	for _, w := range secretHeaderWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// Header returns value, or Mask if name is a credential header.
func Header(name, value string) string {
	if SecretHeader(name) {
		return Mask
	}
	return value
}

// SecretParam reports whether a query parameter (or form field, JSON
// member, XML element) holds a credential: token, secret, key, signature,
// sig, password, auth, and names that contain token, secret, password or
// signature or end in key (access_token, client_secret, apikey).
func SecretParam(name string) bool {
	lower := strings.ToLower(name)
	for _, w := range []string{"token", "secret", "password", "passwd", "signature", "sig"} {
		if lower == w || (len(w) > 3 && strings.Contains(lower, w)) {
			return true
		}
	}
	return strings.HasSuffix(lower, "key") || lower == "auth"
}

// URL hides the password of the user info and the values of credential
// query parameters of one URL, keeping everything else as it is, in order.
func URL(raw string) string {
	base, query, hasQuery := strings.Cut(raw, "?")
	base = userinfo(base)
	if !hasQuery {
		return base
	}
	query, fragment, hasFragment := strings.Cut(query, "#")
	out := base + "?" + Query(query)
	if hasFragment {
		out += "#" + fragment
	}
	return out
}

// Query hides the values of credential parameters in a raw query string.
func Query(query string) string {
	pairs := strings.Split(query, "&")
	for i, p := range pairs {
		k, _, _ := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if SecretParam(name) {
			pairs[i] = k + "=" + Mask
		}
	}
	return strings.Join(pairs, "&")
}

// userinfo replaces the password (or a lone user name, often a token: https://TOKEN@host)
// in the authority of base.
func userinfo(base string) string {
	scheme, rest, ok := strings.Cut(base, "://")
	if !ok {
		return base
	}
	authority, path, hasPath := strings.Cut(rest, "/")
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return base
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if hasPassword {
		user += ":" + Mask
	} else {
		user = Mask
	}
	out := scheme + "://" + user + authority[at:]
	if hasPath {
		out += "/" + path
	}
	return out
}

var (
	// urlPattern finds absolute URLs in free text: reasons and errors quote
	// them (Post "https://...": ..., redirect not followed (302 to https://...)).
	urlPattern = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>` + "`" + `]+`)
	// pairPattern finds name=value pairs: query strings of relative URLs,
	// form bodies, "token=abc" in a receiver's message.
	pairPattern = regexp.MustCompile(`([A-Za-z0-9_.\-\[\]%]+)=([^\s&"'<>;,` + "`" + `]*)`)
	// jsonPattern finds "name": "value" members.
	jsonPattern = regexp.MustCompile(`"([A-Za-z0-9_.\-]+)"(\s*:\s*)"((?:[^"\\]|\\.)*)"`)
	// xmlPattern finds <name>value</name> elements.
	xmlPattern = regexp.MustCompile(`<([A-Za-z0-9_.:\-]+)>([^<]*)</([A-Za-z0-9_.:\-]+)>`)
)

// Text hides credentials in free text: URLs in it (see URL), name=value
// pairs, JSON members and XML elements with credential names.
func Text(s string) string {
	if s == "" {
		return s
	}
	s = urlPattern.ReplaceAllStringFunc(s, func(u string) string {
		// A URL in prose often ends in punctuation that is not part of it.
		trimmed := strings.TrimRight(u, ").,;:]")
		return URL(trimmed) + u[len(trimmed):]
	})
	s = pairPattern.ReplaceAllStringFunc(s, func(p string) string {
		k, v, _ := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if strings.HasPrefix(v, Mask) || !SecretParam(name) {
			return p
		}
		return k + "=" + Mask
	})
	s = jsonPattern.ReplaceAllStringFunc(s, func(m string) string {
		sub := jsonPattern.FindStringSubmatch(m)
		if !SecretName(sub[1]) {
			return m
		}
		return `"` + sub[1] + `"` + sub[2] + `"` + Mask + `"`
	})
	s = xmlPattern.ReplaceAllStringFunc(s, func(m string) string {
		sub := xmlPattern.FindStringSubmatch(m)
		if sub[1] != sub[3] || !SecretName(localName(sub[1])) {
			return m
		}
		return "<" + sub[1] + ">" + Mask + "</" + sub[3] + ">"
	})
	return s
}

// SecretName reports whether a field of structured data (a JSON member,
// an XML element, a key of a decoded event) holds a credential: a
// credential query parameter name or a credential header name.
func SecretName(name string) bool { return SecretParam(name) || SecretHeader(name) }

// Value returns a copy of decoded JSON v with the values of credential
// members replaced by Mask and every string passed through Text.
func Value(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if SecretName(k) {
				out[k] = Mask
				continue
			}
			out[k] = Value(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Value(e)
		}
		return out
	case string:
		return Text(x)
	}
	return v
}

func localName(n string) string {
	if i := strings.LastIndexByte(n, ':'); i >= 0 {
		return n[i+1:]
	}
	return n
}

// Redactor hides the known secrets of one delivery, and everything Text
// hides, in every string it is given. The zero value knows no secrets.
type Redactor struct {
	secrets []string
}

// New returns a Redactor that also scrubs the given secret values.
func New(secrets ...string) *Redactor {
	r := new(Redactor)
	for _, s := range secrets {
		r.add(s)
	}
	return r
}

func (r *Redactor) add(s string) {
	s = strings.TrimSpace(s)
	if len(s) < minSecret || s == Mask || slices.Contains(r.secrets, s) {
		return
	}
	r.secrets = append(r.secrets, s)
	// Longest first, so a secret that contains another is scrubbed whole.
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
}

// For returns the Redactor of a delivery: it knows the signing secrets
// given (the queue holds them sealed only) and
// the values of the delivery's credential headers (and the token after an
// Authorization scheme), credential query parameters and user info.
func For(d *queue.Delivery, secrets ...[]byte) *Redactor {
	r := new(Redactor)
	for _, s := range secrets {
		r.add(string(s))
	}
	if d == nil {
		return r
	}
	for _, h := range d.Request.Header {
		if !SecretHeader(h[0]) {
			continue
		}
		r.add(h[1])
		if _, cred, ok := strings.Cut(strings.TrimSpace(h[1]), " "); ok {
			r.add(cred) // Bearer <token>, Basic <base64>
		}
	}
	if u, err := url.Parse(d.Request.URL); err == nil {
		if u.User != nil {
			if p, ok := u.User.Password(); ok {
				r.add(p)
			} else {
				r.add(u.User.Username())
			}
		}
		for name, vs := range u.Query() {
			if SecretParam(name) {
				for _, v := range vs {
					r.add(v)
				}
			}
		}
	}
	return r
}

// Scrub replaces every known secret in s with Mask; nothing else.
func (r *Redactor) Scrub(s string) string {
	if r == nil {
		return s
	}
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, Mask)
		}
	}
	return s
}

// Text is Scrub and then the package's Text.
func (r *Redactor) Text(s string) string { return Text(r.Scrub(s)) }

// URL is Scrub and then the package's URL.
func (r *Redactor) URL(s string) string { return URL(r.Scrub(s)) }

// Header is Scrub and then the package's Header.
func (r *Redactor) Header(name, value string) string { return Header(name, r.Scrub(value)) }
