package delivery

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/callhook/caddy-callhook/module/queue"
)

func TestGuardCheck(t *testing.T) {
	g := NewGuard(nil)
	tests := []struct {
		ip   string
		kind string // "" means allowed
	}{
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"2606:4700::1111", ""},
		{"2001:4860:4860::8888", ""},
		{"64:ff9b::808:808", ""}, // NAT64 of public 8.8.8.8
		{"2002:808:808::", ""},   // 6to4 of public 8.8.8.8
		{"172.32.0.1", ""},       // just past 172.16/12
		{"100.128.0.1", ""},      // just past CGNAT

		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"10.0.0.5", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"fc00::1", "private"},
		{"fd12:3456::1", "private"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.255", "carrier-grade NAT"},
		{"169.254.169.254", "cloud metadata"},
		{"fd00:ec2::254", "cloud metadata"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"0.1.2.3", "this network (0.0.0.0/8)"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"240.0.0.1", "reserved"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"::ffff:10.0.0.1", "private"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"64:ff9b::a00:1", "NAT64 for private 10.0.0.1"},
		{"64:ff9b::7f00:1", "NAT64 for loopback 127.0.0.1"},
		{"64:ff9b::a9fe:a9fe", "NAT64 for cloud metadata 169.254.169.254"},
		{"64:ff9b:1::a00:5", "NAT64 for private 10.0.0.5"},
		// Local-use NAT64 with a /64, /56 or /48 prefix: the IPv4 address
		// is not in the last 32 bits (which read public 8.0.0.0 here).
		{"64:ff9b:1:0:a:0:800:0", "NAT64 for private 10.0.0.8"},
		{"64:ff9b:1:7f:0:1::", "NAT64 for loopback 127.0.0.1"},
		{"64:ff9b:1:a00:1:200::", "NAT64 for private 10.0.1.2"},
		{"64:ff9b:1:a9:fe:a9fe::", "NAT64 for cloud metadata 169.254.169.254"},
		{"2002:0a00:0001::", "6to4 for private 10.0.0.1"},
		{"2002:a9fe:a9fe::1", "6to4 for cloud metadata 169.254.169.254"},
		{"::10.0.0.1", "reserved (IPv4-compatible)"},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			err := g.Check(netip.MustParseAddr(tt.ip))
			if tt.kind == "" {
				if err != nil {
					t.Fatalf("refused a public address: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("allowed, want refused as %s", tt.kind)
			}
			if !errors.Is(err, ErrBlocked) {
				t.Errorf("error does not match ErrBlocked: %v", err)
			}
			var be *BlockedError
			if !errors.As(err, &be) || be.Kind != tt.kind {
				t.Errorf("kind = %q, want %q", be.Kind, tt.kind)
			}
			if !strings.HasPrefix(err.Error(), "blocked by SSRF guard: ") ||
				!strings.HasSuffix(err.Error(), "; add it to allow_destinations to allow it") {
				t.Errorf("message not in the expected style: %q", err)
			}
		})
	}

	if got := g.Check(netip.MustParseAddr("10.0.0.5")).Error(); got !=
		"blocked by SSRF guard: 10.0.0.5 is private; add it to allow_destinations to allow it" {
		t.Errorf("message = %q", got)
	}
	if got := g.Check(netip.MustParseAddr("64:ff9b::a00:5")).Error(); !strings.Contains(got, "is NAT64 for private 10.0.0.5") {
		t.Errorf("message = %q", got)
	}
	if err := g.Check(netip.Addr{}); !errors.Is(err, ErrBlocked) {
		t.Errorf("invalid address allowed: %v", err)
	}
	var nilGuard *Guard
	if err := nilGuard.Check(netip.MustParseAddr("10.0.0.1")); !errors.Is(err, ErrBlocked) {
		t.Errorf("nil guard allowed a private address")
	}
}

func TestGuardAllowList(t *testing.T) {
	g := NewGuard([]netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("fd00:ec2::254/128"),
		netip.MustParsePrefix("64:ff9b::a00:9/128"),
		netip.MustParsePrefix("192.168.7.9/16"), // not masked: NewGuard masks it
	})
	allowed := []string{"10.1.2.3", "::ffff:10.1.2.3", "127.0.0.1", "::ffff:127.0.0.1", "fd00:ec2::254", "64:ff9b::a00:9", "192.168.200.1"}
	for _, ip := range allowed {
		if err := g.Check(netip.MustParseAddr(ip)); err != nil {
			t.Errorf("%s: allow list ignored: %v", ip, err)
		}
	}
	refused := []string{"10.2.0.1", "127.0.0.2", "::1", "fd00:ec2::253", "169.254.169.254", "64:ff9b::a00:8"}
	for _, ip := range refused {
		if err := g.Check(netip.MustParseAddr(ip)); err == nil {
			t.Errorf("%s: allowed, but outside the allow list", ip)
		}
	}
}

func countingServer(t *testing.T, status int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestTransportRefusesBlockedDial(t *testing.T) {
	srv, hits := countingServer(t, http.StatusOK)
	s := NewSender(SenderOptions{Guard: NewGuard(nil)})
	t.Cleanup(s.CloseIdleConnections)

	for _, u := range []string{
		srv.URL + "/hook",
		strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/hook", // resolves inward
	} {
		r := s.Send(context.Background(), &queue.Delivery{ID: "d1", Request: queue.Request{Method: "POST", URL: u}})
		if r.OK || r.Retryable {
			t.Fatalf("%s: OK=%v Retryable=%v, want a permanent failure", u, r.OK, r.Retryable)
		}
		if !strings.Contains(r.Reason, "blocked by SSRF guard") || !strings.Contains(r.Reason, "allow_destinations") ||
			!strings.Contains(r.Reason, "loopback") {
			t.Errorf("%s: reason %q does not explain the block", u, r.Reason)
		}
		if r.Attempt.Error != r.Reason || r.Attempt.Status != 0 {
			t.Errorf("attempt = %+v", r.Attempt)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the blocked server was reached %d times", n)
	}
}

func TestSetGuardAppliesToKeptAliveConnections(t *testing.T) {
	srv, hits := countingServer(t, http.StatusOK)
	s := NewSender(SenderOptions{Guard: allowLoopback()})
	t.Cleanup(s.CloseIdleConnections)
	d := &queue.Delivery{ID: "d1", Request: queue.Request{Method: "POST", URL: srv.URL}}

	if r := s.Send(context.Background(), d); !r.OK {
		t.Fatalf("allowed send failed: %s", r.Reason)
	}
	s.SetGuard(NewGuard(nil))
	if r := s.Send(context.Background(), d); r.OK || !strings.Contains(r.Reason, "blocked by SSRF guard") {
		t.Fatalf("after narrowing the guard: OK=%v reason=%q", r.OK, r.Reason)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("server hits = %d, want 1", n)
	}

	// Reused connections are checked too, not only fresh dials.
	s.SetGuard(allowLoopback())
	if r := s.Send(context.Background(), d); !r.OK {
		t.Fatalf("send failed: %s", r.Reason)
	}
	s.guard.Store(NewGuard(nil)) // swap without closing idle connections
	if r := s.Send(context.Background(), d); r.OK || !strings.Contains(r.Reason, "blocked by SSRF guard") {
		t.Fatalf("reused connection: OK=%v reason=%q", r.OK, r.Reason)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("server hits = %d, want 2", n)
	}
}

func allowLoopback() *Guard {
	return NewGuard([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")})
}
