package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/callhook/caddy-callhook/internal/text"
	"github.com/callhook/caddy-callhook/module/queue"
)

// DefaultMaxResponse is how much of a response body an attempt keeps.
const DefaultMaxResponse = 64 << 10

// maxResponseHeader bounds a response's header block. net/http's default
// is 10 MiB, read into memory by every worker a receiver keeps busy.
const maxResponseHeader = 64 << 10

// Version is callhook's version, sent in the User-Agent of every webhook.
const Version = "0.1.0"

// DefaultUserAgent is sent when SenderOptions.UserAgent is empty: SPEC §5's
// `callhook/<version>`.
const DefaultUserAgent = "callhook/" + Version

// Standard Webhooks header names. They are sent lower-case, as the spec
// writes them, for receivers that compare case-sensitively.
const (
	hdrID        = "webhook-id"
	hdrTimestamp = "webhook-timestamp"
	hdrSignature = "webhook-signature"
)

// SenderOptions configures a Sender.
type SenderOptions struct {
	UserAgent string
	// Guard decides which dialled addresses are refused; nil refuses every
	// non-public address.
	Guard *Guard
	// MaxResponse is how many bytes of a response body are read and kept
	// (default 64 KiB); the rest is never read.
	MaxResponse int
	// Now gives the attempt start and webhook-timestamp (default time.Now).
	Now func() time.Time
	// Resolver looks up receivers' host names (default: the system's).
	// Whatever it answers, the guard checks the address dialled.
	Resolver *net.Resolver
	// Secrets gives the secrets that sign an attempt of d (none: unsigned),
	// or why it cannot be signed, which fails the attempt for good. Nil:
	// every attempt is unsigned.
	Secrets func(d *queue.Delivery) ([][]byte, error)
}

// Sender makes single delivery attempts. It is safe for concurrent use and
// keeps connections to receivers alive between attempts.
type Sender struct {
	client    *http.Client
	dialer    *net.Dialer
	transport *http.Transport
	guard     atomic.Pointer[Guard]
	userAgent string
	maxResp   int
	now       func() time.Time
	tls       tlsProfiles
	secrets   func(d *queue.Delivery) ([][]byte, error)
}

// Result is the outcome of one attempt.
type Result struct {
	Attempt queue.Attempt
	// OK is a 2xx (and, for JSON-RPC, no "error" member).
	OK bool
	// Retryable says whether another attempt may succeed where this one failed.
	Retryable bool
	// RetryAfter is the receiver's Retry-After (at most 1h), 0 if none.
	RetryAfter time.Duration
	// Reason says in plain words why the attempt failed; it never holds header
	// values or the secret.
	Reason string
	// Header is the response's header, nil when there was no response. Sync
	// webhooks hand it to the reply; queued deliveries do not keep it.
	Header http.Header
}

// NewSender returns a Sender with its own HTTP transport.
func NewSender(o SenderOptions) *Sender {
	s := &Sender{
		userAgent: o.UserAgent,
		maxResp:   o.MaxResponse,
		now:       o.Now,
		secrets:   o.Secrets,
	}
	if s.userAgent == "" {
		s.userAgent = DefaultUserAgent
	}
	if s.maxResp <= 0 {
		s.maxResp = DefaultMaxResponse
	}
	if s.now == nil {
		s.now = time.Now
	}
	g := o.Guard
	if g == nil {
		g = NewGuard(nil)
	}
	s.guard.Store(g)

	s.dialer = &net.Dialer{
		Timeout:   30 * time.Second, // the attempt's context usually ends it sooner
		KeepAlive: 30 * time.Second,
		// Control sees the address actually being connected to, after DNS
		// resolution, for every connection: checking here rather than on the
		// URL's host defeats DNS rebinding and hosts that resolve inward.
		Control:  s.control,
		Resolver: o.Resolver,
	}
	s.transport = &http.Transport{
		// A proxy would make the dialled address the proxy's, bypassing the
		// guard, so environment proxy settings are deliberately ignored.
		Proxy:                 nil,
		DialContext:           s.dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Keep the response body exactly as the receiver sent it, and don't
		// let a small gzip stream inflate past what we meant to read.
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxResponseHeader,
	}
	s.client = &http.Client{
		Transport: s.transport,
		// A redirect would resend the payload (and its Authorization) to a
		// place nobody configured; report it instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

// SetGuard swaps the guard used for new connections and closes idle ones, so
// a narrowed allow list takes effect at once without rebuilding the client.
// A nil g refuses every non-public address.
func (s *Sender) SetGuard(g *Guard) {
	if g == nil {
		g = NewGuard(nil)
	}
	s.guard.Store(g)
	s.CloseIdleConnections()
}

// CloseIdleConnections closes kept-alive connections to receivers (shutdown,
// tests).
func (s *Sender) CloseIdleConnections() {
	s.transport.CloseIdleConnections()
	s.closeTLSIdle()
}

// dial connects through the guard. Control refuses a blocked address before
// the connection is made; guardedConn covers connections that outlive a
// guard swap.
func (s *Sender) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := s.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		conn.Close()
		return nil, &BlockedError{Raw: conn.RemoteAddr().String()}
	}
	return &guardedConn{Conn: conn, s: s, ip: ap.Addr()}, nil
}

// guardedConn re-checks its remote address whenever the guard has been
// swapped since the last check, before writing anything: a kept-alive or
// in-use connection dialled under a wider allow list must not carry a request
// the new list refuses.
type guardedConn struct {
	net.Conn
	s       *Sender
	ip      netip.Addr
	checked atomic.Pointer[Guard] // the guard ip last passed
}

func (c *guardedConn) Write(b []byte) (int, error) {
	g := c.s.guard.Load()
	if c.checked.Load() != g {
		if err := g.Check(c.ip); err != nil {
			c.Conn.Close()
			return 0, err
		}
		c.checked.Store(g)
	}
	return c.Conn.Write(b)
}

func (s *Sender) control(_, address string, _ syscall.RawConn) error {
	return s.checkAddr(address)
}

func (s *Sender) checkAddr(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Fail closed: an address we cannot read is an address we cannot vouch for.
		return &BlockedError{Raw: address}
	}
	return s.guard.Load().Check(ap.Addr())
}

// Send makes one attempt at d. ctx is the worker's context; the attempt's own
// timeout is d.Policy.Timeout (default 10s) and covers reading the response.
func (s *Sender) Send(ctx context.Context, d *queue.Delivery) Result {
	timeout := d.Policy.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	start := s.now()
	began := time.Now() // monotonic, whatever s.now is
	r := s.attempt(ctx, d, timeout, start)
	r.Attempt.Start = start
	r.Attempt.Duration = time.Since(began)
	if r.OK {
		r.Retryable, r.Reason = false, ""
	} else {
		r.Attempt.Error = r.Reason
	}
	return r
}

func permanent(reason string) Result  { return Result{Reason: reason} }
func retryable(reason string) Result  { return Result{Retryable: true, Reason: reason} }
func statusResult(code int) Result    { return Result{Reason: "http " + strconv.Itoa(code)} }
func retryableStatus(code int) Result { r := statusResult(code); r.Retryable = true; return r }

func (s *Sender) attempt(ctx context.Context, d *queue.Delivery, timeout time.Duration, start time.Time) Result {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, bad := s.build(actx, d, start)
	if bad != "" {
		return permanent(bad)
	}

	// Remember which address the request went to: if the guard refused it
	// (see guardedConn), the reason should say so, whatever error net/http
	// made of it.
	var remote atomic.Pointer[string]
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if info.Conn != nil {
				addr := info.Conn.RemoteAddr().String()
				remote.Store(&addr)
			}
		},
	}
	req = req.WithContext(httptrace.WithClientTrace(actx, trace))

	client, ok := s.clientFor(d.Policy.TLS)
	if !ok {
		return retryable("tls settings " + d.Policy.TLS + " are not in the running config (was the webhook's tls block removed?); restore them, or retry by hand once the webhook is fixed")
	}
	resp, err := client.Do(req)
	if err != nil {
		if addr := remote.Load(); addr != nil {
			var be *BlockedError
			if errors.As(s.checkAddr(*addr), &be) {
				return permanent(be.Error())
			}
		}
		return classifyError(ctx, err, timeout)
	}
	defer resp.Body.Close()

	// Never read more than maxResp: a receiver that streams forever is cut
	// here or by the attempt's timeout. A read error after the status line is
	// not a failure; the receiver has answered.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, int64(s.maxResp)))

	var r Result
	code := resp.StatusCode
	switch {
	case code >= 200 && code <= 299:
		r = Result{OK: true}
		if d.Policy.JSONRPC {
			if rr, failed := jsonrpcResult(body); failed {
				r = rr
			}
		}
	case code >= 300 && code <= 399:
		r = permanent(redirectReason(resp))
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly,
		code == http.StatusTooManyRequests, code >= 500 && code <= 599:
		r = retryableStatus(code)
	default:
		// including 600 and above: no HTTP status, so no reason to retry
		r = statusResult(code)
	}
	if !r.OK && d.Policy.JSONRPC && code >= 400 {
		// A JSON-RPC error code that says the request itself is wrong is
		// permanent whatever the HTTP status it came with (SPEC §5): many
		// servers answer JSON-RPC errors with a 500.
		if rr, failed := jsonrpcResult(body); failed && !rr.Retryable {
			r = permanent("http " + strconv.Itoa(code) + ": " + rr.Reason)
		}
	}
	if !r.OK {
		r.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), s.now())
	}
	r.Attempt.Status = code
	r.Header = resp.Header
	if len(body) > 0 {
		r.Attempt.Response = body
	}
	return r
}

// build renders the HTTP request, or returns why it cannot be sent at all.
// Reasons name header fields but never their values.
func (s *Sender) build(ctx context.Context, d *queue.Delivery, start time.Time) (*http.Request, string) {
	u, err := url.Parse(d.Request.URL)
	if err != nil {
		return nil, "invalid url: " + innerError(err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Sprintf("invalid url: scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, "invalid url: no host"
	}
	method := d.Request.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, d.Request.URL, bytes.NewReader(d.Request.Body))
	if err != nil {
		return nil, "invalid request: " + innerError(err)
	}
	for _, h := range d.Request.Header {
		name, value := h[0], h[1]
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, fmt.Sprintf("invalid header name %q", name)
		}
		if !httpguts.ValidHeaderFieldValue(value) {
			// net/http refuses these on every attempt, so it is not worth
			// a retry; CR and LF would split the header.
			return nil, fmt.Sprintf("invalid value for header %s: contains a line break, NUL or another control character", name)
		}
		req.Header.Add(name, value)
	}
	// A User-Agent from the config wins: it was asked for explicitly.
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", s.userAgent)
	}
	// The Standard Webhooks headers are ours alone; drop any configured copy.
	for _, k := range []string{hdrID, hdrTimestamp, hdrSignature} {
		req.Header.Del(k)
	}
	ts := start.Unix()
	req.Header[hdrID] = []string{d.ID}
	req.Header[hdrTimestamp] = []string{strconv.FormatInt(ts, 10)}
	if s.secrets != nil {
		secrets, err := s.secrets(d)
		if err != nil {
			return nil, "cannot sign: " + err.Error()
		}
		if len(secrets) > 0 {
			req.Header[hdrSignature] = []string{SignAll(secrets, d.ID, ts, d.Request.Body)}
		}
	}
	return req, ""
}

// classifyError turns a failed round trip into plain words. ctx is the
// worker's context: if it ended, the attempt was cut short by shutdown.
func classifyError(ctx context.Context, err error, timeout time.Duration) Result {
	var (
		be      *BlockedError
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		recErr  tls.RecordHeaderError
		alert   tls.AlertError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		netErr  net.Error
	)
	switch {
	case errors.As(err, &be):
		// A configuration problem: retrying will not change the answer.
		return permanent(be.Error())
	case ctx.Err() != nil:
		return retryable("attempt canceled: shutting down")
	case strings.Contains(err.Error(), "TLS handshake timeout"):
		return retryable("tls error: handshake timed out")
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout() && !errors.As(err, &dnsErr):
		return retryable("timeout after " + timeout.String())
	case errors.Is(err, syscall.ECONNREFUSED):
		return retryable("connection refused")
	case errors.Is(err, syscall.ECONNRESET):
		return retryable("connection reset by receiver")
	case errors.Is(err, syscall.EHOSTUNREACH):
		return retryable("host unreachable")
	case errors.Is(err, syscall.ENETUNREACH):
		return retryable("network unreachable")
	case errors.As(err, &dnsErr):
		switch {
		case dnsErr.IsNotFound:
			return retryable("no such host " + dnsErr.Name)
		case dnsErr.IsTimeout:
			return retryable("dns timeout looking up " + dnsErr.Name)
		}
		return retryable(fmt.Sprintf("dns error looking up %s: %s", dnsErr.Name, dnsErr.Err))
	case errors.As(err, &certErr):
		return retryable("tls error: " + certErr.Error())
	case errors.As(err, &unknown):
		return retryable("tls error: " + unknown.Error())
	case errors.As(err, &host):
		return retryable("tls error: " + host.Error())
	case errors.As(err, &invalid):
		return retryable("tls error: " + invalid.Error())
	case errors.As(err, &recErr):
		return retryable("tls error: receiver did not answer with TLS (is the url http rather than https?)")
	case errors.As(err, &alert):
		return retryable("tls error: " + alert.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return retryable("connection closed by receiver before it answered")
	}
	return retryable("connection error: " + innerError(err))
}

// innerError drops the *url.Error wrapper, whose text quotes the full URL:
// its query string may carry a token.
func innerError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

func redirectReason(resp *http.Response) string {
	loc := resp.Header.Get("Location")
	if u, err := resp.Location(); err == nil {
		loc = u.String()
	}
	if loc == "" {
		return fmt.Sprintf("redirect not followed (%d without a Location)", resp.StatusCode)
	}
	return fmt.Sprintf("redirect not followed (%d to %s)", resp.StatusCode, clean(loc, 256))
}

// parseRetryAfter reads delay-seconds or an HTTP date. Anything unparsable,
// zero or in the past gives 0; anything beyond an hour gives an hour.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter // only digits, so it is just huge
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// JSON-RPC error codes that mean the request itself is wrong, so sending it
// again cannot help.
var permanentRPCCodes = map[int64]bool{
	-32700: true, // parse error
	-32600: true, // invalid request
	-32601: true, // method not found
	-32602: true, // invalid params
}

// jsonrpcResult reports a failure if body is a JSON-RPC response (or batch)
// carrying a non-null "error". A body that is not JSON is a success: the
// receiver answered 2xx.
func jsonrpcResult(body []byte) (Result, bool) {
	type response struct {
		Error json.RawMessage `json:"error"`
	}
	var rs []response
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if json.Unmarshal(trimmed, &rs) != nil {
			return Result{}, false
		}
	} else {
		var one response
		if json.Unmarshal(trimmed, &one) != nil {
			return Result{}, false
		}
		rs = []response{one}
	}
	for _, r := range rs {
		raw := bytes.TrimSpace(r.Error)
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var e struct {
			Code    *float64 `json:"code"`
			Message string   `json:"message"`
		}
		if json.Unmarshal(raw, &e) != nil {
			return retryable("jsonrpc error: " + clean(string(raw), 200)), true
		}
		msg := clean(e.Message, 200)
		if e.Code == nil {
			return retryable("jsonrpc error: " + msg), true
		}
		code := int64(*e.Code)
		reason := fmt.Sprintf("jsonrpc error %d: %s", code, msg)
		if permanentRPCCodes[code] {
			return permanent(reason), true
		}
		return retryable(reason), true
	}
	return Result{}, false
}

// clean keeps receiver-supplied text to one readable log line of at most
// limit bytes.
func clean(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if cut, ok := text.Cut(s, limit); ok {
		s = cut + "…"
	}
	return s
}
