package delivery

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/callhook/caddy-callhook/module/queue"
)

// stubDNS is a tiny DNS server on 127.0.0.1 that answers A and AAAA
// queries from a table, and NXDOMAIN for names it does not know (or, with
// fallback set, every other name with fallback).
type stubDNS struct {
	conn     net.PacketConn
	records  map[string][]netip.Addr // FQDN, lower case, with the final dot
	fallback []netip.Addr
	mu       sync.Mutex
	asked    map[string]int
}

func startDNS(t *testing.T, records map[string][]string, fallback ...string) (*stubDNS, *net.Resolver) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stubDNS{conn: conn, records: map[string][]netip.Addr{}, asked: map[string]int{}}
	for name, addrs := range records {
		for _, a := range addrs {
			s.records[strings.ToLower(name)+"."] = append(s.records[strings.ToLower(name)+"."], netip.MustParseAddr(a))
		}
	}
	for _, a := range fallback {
		s.fallback = append(s.fallback, netip.MustParseAddr(a))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve()
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	r := &net.Resolver{
		PreferGo: true,
		// Whatever server /etc/resolv.conf names, ask the stub.
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", conn.LocalAddr().String())
		},
	}
	return s, r
}

func (s *stubDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if out, ok := s.answer(buf[:n]); ok {
			s.conn.WriteTo(out, from)
		}
	}
}

func (s *stubDNS) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := strings.ToLower(q.Name.String())
	s.mu.Lock()
	s.asked[name]++
	s.mu.Unlock()
	addrs, known := s.records[name]
	if !known && s.fallback != nil {
		addrs, known = s.fallback, true
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	for _, a := range addrs {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			err = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			err = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	return out, err == nil
}

func (s *stubDNS) queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[strings.ToLower(name)+"."]
}

// loopbackTarget is a receiver on 127.0.0.1 that counts what reaches it:
// every test below must leave it at zero unless it allows loopback.
func loopbackTarget(t *testing.T) (port string, hits func() int64) {
	srv, n := countingServer(t, http.StatusOK)
	u, _ := url.Parse(srv.URL)
	return u.Port(), n.Load
}

func sendTo(s *Sender, rawURL string, timeout time.Duration) Result {
	d := &queue.Delivery{ID: "msg_ssrf", Request: queue.Request{Method: "POST", URL: rawURL, Body: []byte("{}")}, Policy: queue.Policy{Timeout: timeout}}
	return s.Send(context.Background(), d)
}

// TestSSRFResolvedNames: names that resolve inward are refused at dial time,
// whatever form the address comes in, and a name with both a public and a
// private address never reaches the private one.
func TestSSRFResolvedNames(t *testing.T) {
	port, hits := loopbackTarget(t)
	dns, resolver := startDNS(t, map[string][]string{
		"internal.test":   {"127.0.0.1"},
		"mapped.test":     {"::ffff:127.0.0.1"},
		"nat64.test":      {"64:ff9b::7f00:1"},
		"sixtofour.test":  {"2002:7f00:1::1"},
		"metadata.test":   {"169.254.169.254"},
		"private.test":    {"10.0.0.1"},
		"v6loop.test":     {"::1"},
		"public-v4.test":  {"192.0.2.1", "127.0.0.1"},
		"v4-public.test":  {"127.0.0.1", "192.0.2.1"},
		"dual-stack.test": {"192.0.2.1", "::1"},
	})
	s := NewSender(SenderOptions{Guard: NewGuard(nil), Resolver: resolver})
	t.Cleanup(s.CloseIdleConnections)

	tests := []struct {
		host string
		kind string // what the reason names; "" for mixed names, whose outcome depends on the public address
	}{
		{"internal.test", "127.0.0.1 is loopback"},
		{"mapped.test", "loopback"},
		{"nat64.test", "NAT64 for loopback 127.0.0.1"},
		{"sixtofour.test", "6to4 for loopback 127.0.0.1"},
		{"metadata.test", "169.254.169.254 is cloud metadata"},
		{"private.test", "10.0.0.1 is private"},
		{"v6loop.test", "::1 is loopback"},
		{"public-v4.test", ""},
		{"v4-public.test", ""},
		{"dual-stack.test", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			r := sendTo(s, "http://"+tt.host+":"+port+"/hook", 2*time.Second)
			if r.OK {
				t.Fatal("delivered")
			}
			if dns.queries(tt.host) == 0 {
				t.Fatalf("the stub DNS server was not asked for %s: %s", tt.host, r.Reason)
			}
			if tt.kind != "" {
				if r.Retryable || !strings.Contains(r.Reason, "blocked by SSRF guard: ") || !strings.Contains(r.Reason, tt.kind) {
					t.Fatalf("retryable=%v reason=%q, want a permanent refusal naming %q", r.Retryable, r.Reason, tt.kind)
				}
			}
			t.Logf("%s: retryable=%v %s", tt.host, r.Retryable, r.Reason)
		})
	}
	t.Cleanup(func() {
		if n := hits(); n != 0 {
			t.Errorf("the loopback receiver was reached %d times", n)
		}
	})
}

// TestSSRFResolvedNameAllowed proves the stub resolver is the one used: with
// loopback allowed, the same name is delivered.
func TestSSRFResolvedNameAllowed(t *testing.T) {
	port, hits := loopbackTarget(t)
	_, resolver := startDNS(t, map[string][]string{"internal.test": {"127.0.0.1"}})
	s := NewSender(SenderOptions{Guard: allowLoopback(), Resolver: resolver})
	t.Cleanup(s.CloseIdleConnections)
	if r := sendTo(s, "http://internal.test:"+port+"/hook", 5*time.Second); !r.OK {
		t.Fatalf("not delivered: %s", r.Reason)
	}
	if hits() != 1 {
		t.Fatalf("hits = %d", hits())
	}
}

// TestSSRFAddressForms: IP literals in every spelling Go or a C resolver
// might accept. Go reads only dotted-decimal IPv4; the other spellings
// (decimal, hex, octal, short forms) are host names to it, which DNS does
// not know, or which a resolver such as glibc's inet_aton turns into
// 127.0.0.1 (the stub answers every name that way). Either way the
// loopback receiver is never reached.
func TestSSRFAddressForms(t *testing.T) {
	port, hits := loopbackTarget(t)
	_, anyLoopback := startDNS(t, nil, "127.0.0.1", "::1")
	guarded := map[string]*Sender{
		"system resolver":          NewSender(SenderOptions{Guard: NewGuard(nil)}),
		"resolver answers 127/::1": NewSender(SenderOptions{Guard: NewGuard(nil), Resolver: anyLoopback}),
	}
	for _, s := range guarded {
		t.Cleanup(s.CloseIdleConnections)
	}
	hosts := []struct {
		host string
		kind string // the refusal when the literal is read as an address; "" when Go reads it as a name
	}{
		{"127.0.0.1", "loopback"},
		{"0.0.0.0", "unspecified"}, // Linux connects 0.0.0.0 to the local host
		{"[::]", "unspecified"},
		{"[::1]", "loopback"},
		{"[::ffff:127.0.0.1]", "loopback"},
		{"[::ffff:7f00:1]", "loopback"},
		{"[0:0:0:0:0:ffff:127.0.0.1]", "loopback"},
		{"[::127.0.0.1]", "reserved (IPv4-compatible)"},
		{"[64:ff9b::127.0.0.1]", "NAT64 for loopback 127.0.0.1"},
		{"[::1%25lo]", "loopback"},
		{"2130706433", ""},
		{"0x7f000001", ""},
		{"017700000001", ""},
		{"0x7f.1", ""},
		{"0x7f.0.0.1", ""},
		{"0177.0.0.1", ""},
		{"127.1", ""},
		{"0", ""},
		{"127.0.0.1.", ""},
		{"localhost", ""},
		{"localhost.", ""},
	}
	for name, s := range guarded {
		for _, h := range hosts {
			t.Run(name+"/"+h.host, func(t *testing.T) {
				t.Parallel()
				r := sendTo(s, "http://"+h.host+":"+port+"/hook", 3*time.Second)
				if r.OK {
					t.Fatalf("delivered to %s", h.host)
				}
				blocked := strings.Contains(r.Reason, "blocked by SSRF guard")
				if h.kind != "" && (!blocked || !strings.Contains(r.Reason, h.kind) || r.Retryable) {
					t.Fatalf("retryable=%v reason=%q, want a permanent refusal naming %q", r.Retryable, r.Reason, h.kind)
				}
				if !blocked && !strings.HasPrefix(r.Reason, "no such host") && !strings.HasPrefix(r.Reason, "dns ") && !strings.HasPrefix(r.Reason, "invalid url") {
					t.Fatalf("reason %q: neither refused nor unresolved", r.Reason)
				}
				t.Logf("%s: %s", h.host, r.Reason)
			})
		}
	}
	t.Cleanup(func() {
		if n := hits(); n != 0 {
			t.Errorf("the loopback receiver was reached %d times", n)
		}
	})
}

// TestSSRFRedirectToInternal: a public receiver cannot bounce a delivery
// inward with a redirect, because redirects are never followed.
func TestSSRFRedirectToInternal(t *testing.T) {
	port, hits := loopbackTarget(t)
	for _, code := range []int{301, 302, 303, 307, 308} {
		redirector := statusServer(t, code, http.Header{"Location": {"http://127.0.0.1:" + port + "/admin"}}, "")
		s := newTestSender(t, SenderOptions{}) // loopback allowed: only the redirect rule stands in the way
		r := s.Send(context.Background(), delivery(redirector.URL))
		if r.OK || r.Retryable || !strings.HasPrefix(r.Reason, "redirect not followed") {
			t.Errorf("%d: OK=%v Retryable=%v reason=%q", code, r.OK, r.Retryable, r.Reason)
		}
	}
	if n := hits(); n != 0 {
		t.Fatalf("redirect target reached %d times", n)
	}
}

func TestSSRFProxyIgnored(t *testing.T) {
	// A proxy from the environment would be dialled instead of the receiver,
	// so the guard would check the proxy's address, not the receiver's.
	proxyHits := make(chan string, 10)
	proxy := server(t, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { proxyHits <- r.URL.String() })
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "")
	_, resolver := startDNS(t, map[string][]string{"internal.test": {"10.0.0.1"}})
	s := NewSender(SenderOptions{Guard: NewGuard([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}), Resolver: resolver})
	t.Cleanup(s.CloseIdleConnections)
	r := s.Send(context.Background(), delivery("http://internal.test/hook"))
	if r.OK || !strings.Contains(r.Reason, "10.0.0.1 is private") {
		t.Fatalf("reason %q: the proxy was used or the name not checked", r.Reason)
	}
	select {
	case u := <-proxyHits:
		t.Fatalf("the environment proxy got %s", u)
	default:
	}
}
