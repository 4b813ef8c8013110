package delivery

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// rawServer accepts TCP connections on 127.0.0.1 and hands each to handle,
// which writes whatever bytes it likes. handle must return when done is
// closed or a write fails; cleanup waits for it.
func rawServer(t *testing.T, handle func(c net.Conn, done <-chan struct{})) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				// read the request head, so the client is waiting for us
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				handle(c, done)
			})
		}
	})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// writeUntil writes chunk every pause until done or a write fails.
func writeUntil(c net.Conn, chunk string, pause time.Duration, done <-chan struct{}) {
	for {
		if _, err := io.WriteString(c, chunk); err != nil {
			return
		}
		select {
		case <-done:
			return
		case <-time.After(pause):
		}
	}
}

func TestHostileResponses(t *testing.T) {
	tests := []struct {
		name    string
		handle  func(c net.Conn, done <-chan struct{})
		timeout time.Duration
		ok      bool
		retry   bool
		reason  string // part of the reason
		kept    int    // response bytes kept, -1 for any
	}{
		{
			name: "headers trickle in forever",
			handle: func(c net.Conn, done <-chan struct{}) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Slow: ")
				writeUntil(c, "a", 20*time.Millisecond, done)
			},
			timeout: 300 * time.Millisecond, retry: true, reason: "timeout after 300ms",
		},
		{
			name: "status line never comes",
			handle: func(c net.Conn, done <-chan struct{}) {
				<-done
			},
			timeout: 300 * time.Millisecond, retry: true, reason: "timeout after 300ms",
		},
		{
			name: "endless headers",
			handle: func(c net.Conn, done <-chan struct{}) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\n")
				writeUntil(c, "X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 0, done)
			},
			timeout: 10 * time.Second, retry: true, reason: "server response headers exceeded 65536 bytes",
		},
		{
			name: "endless 1xx", // they count against the same limit
			handle: func(c net.Conn, done <-chan struct{}) {
				writeUntil(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 0, done)
			},
			timeout: 10 * time.Second, retry: true, reason: "server response headers exceeded 65536 bytes",
		},
		{
			name: "endless body is cut at 64 KiB",
			handle: func(c net.Conn, done <-chan struct{}) {
				io.WriteString(c, "HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n")
				writeUntil(c, "400\r\n"+strings.Repeat("z", 0x400)+"\r\n", 0, done)
			},
			timeout: 10 * time.Second, retry: true, reason: "http 500", kept: 64 << 10,
		},
		{
			name: "body trickles in forever",
			handle: func(c net.Conn, done <-chan struct{}) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
				writeUntil(c, "b", 20*time.Millisecond, done)
			},
			timeout: 300 * time.Millisecond, ok: true, kept: -1,
		},
		{
			name: "body cut short",
			handle: func(c net.Conn, done <-chan struct{}) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			},
			timeout: 10 * time.Second, ok: true, kept: 3,
		},
		{
			name: "garbage",
			handle: func(c net.Conn, done <-chan struct{}) {
				io.WriteString(c, "\x00\xff\r\n\r\nnot http at all\r\n\r\n")
			},
			timeout: 10 * time.Second, retry: true, reason: "connection error: net/http: HTTP/1.x transport connection broken: malformed HTTP",
		},
		{
			name: "closes without answering",
			handle: func(c net.Conn, done <-chan struct{}) {
			},
			timeout: 10 * time.Second, retry: true, reason: "connection closed by receiver before it answered",
		},
		{
			name: "huge Content-Length, small body",
			handle: func(c net.Conn, done <-chan struct{}) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nok")
			},
			timeout: 10 * time.Second, ok: true, kept: 2,
		},
	}
	s := newTestSender(t, SenderOptions{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := rawServer(t, tt.handle)
			d := delivery(srv + "/hook")
			d.Policy.Timeout = tt.timeout
			r := s.Send(context.Background(), d)
			if r.OK != tt.ok || r.Retryable != tt.retry || !strings.Contains(r.Reason, tt.reason) {
				t.Fatalf("OK=%v Retryable=%v reason=%q, want %v %v %q", r.OK, r.Retryable, r.Reason, tt.ok, tt.retry, tt.reason)
			}
			if tt.kept >= 0 && len(r.Attempt.Response) != tt.kept {
				t.Errorf("kept %d response bytes, want %d", len(r.Attempt.Response), tt.kept)
			}
			if len(r.Attempt.Response) > DefaultMaxResponse {
				t.Errorf("kept %d response bytes", len(r.Attempt.Response))
			}
		})
	}
}

// TestAbsurdRetryAfter: whatever a receiver puts in Retry-After, the wait it
// causes is between nothing and an hour.
func TestAbsurdRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"3600", time.Hour},
		{"3601", time.Hour},
		{"9223372036854775807", time.Hour},
		{"18446744073709551616", time.Hour},
		{strings.Repeat("9", 10_000), time.Hour},
		{"Fri, 31 Dec 9999 23:59:59 GMT", time.Hour},
		{"Thu, 01 Jan 1970 00:00:00 GMT", 0},
		{"Mon, 01 Jan 0001 00:00:00 GMT", 0},
		{now.Add(30 * time.Minute).Format(http.TimeFormat), 30 * time.Minute},
		{now.Add(30 * time.Minute).Format(time.RFC850), 30 * time.Minute}, // an obsolete form HTTP still allows
		{"\t30 ", 30 * time.Second},
		{"-1", 0},
		{"-9223372036854775808", 0},
		{"+60", 0},
		{"1e3", 0},
		{"0x10", 0},
		{"60, 120", 0},
		{"３０", 0}, // full-width digits
		{"30s", 0},
		{"NaN", 0},
		{strings.Repeat("x", 10_000), 0},
		{"\x00", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.value, now); got != tt.want {
			t.Errorf("parseRetryAfter(%.40q) = %s, want %s", tt.value, got, tt.want)
		}
	}

	// NextDelay honours Retry-After beyond the webhook's longest backoff, but
	// never beyond an hour, and ignores a negative one.
	p := queue.Policy{BackoffMin: time.Second, BackoffMax: 2 * time.Second}
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, ra := range []time.Duration{time.Hour, 100 * time.Hour, 1<<63 - 1} {
		if got := NextDelay(p, 3, ra, rnd); got != time.Hour {
			t.Errorf("NextDelay with Retry-After %s = %s, want 1h", ra, got)
		}
	}
	for _, ra := range []time.Duration{-time.Hour, -1 << 63} {
		if got := NextDelay(p, 3, ra, rnd); got < time.Second || got > 2*time.Second {
			t.Errorf("NextDelay with Retry-After %s = %s, want the backoff", ra, got)
		}
	}

	// end to end: a 503 that asks for a year is retried in an hour
	srv := statusServer(t, 503, http.Header{"Retry-After": {"31536000"}}, "")
	s := newTestSender(t, SenderOptions{})
	if r := s.Send(context.Background(), delivery(srv.URL)); !r.Retryable || r.RetryAfter != time.Hour {
		t.Errorf("503 Retry-After a year: retryable=%v after=%s", r.Retryable, r.RetryAfter)
	}
}

func TestHeaderControlCharactersArePermanent(t *testing.T) {
	s := newTestSender(t, SenderOptions{})
	srv, hits := countingServer(t, http.StatusOK)
	for _, v := range []string{"a\rb", "a\nb", "a\x00b", "a\x01b", "a\x7fb", "a\x1bb"} {
		d := delivery(srv.URL)
		d.Request.Header = append(d.Request.Header, [2]string{"X-Token", v})
		r := s.Send(context.Background(), d)
		if r.OK || r.Retryable || r.Reason != "invalid value for header X-Token: contains a line break, NUL or another control character" {
			t.Errorf("%q: OK=%v Retryable=%v reason=%q", v, r.OK, r.Retryable, r.Reason)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("sent %d requests with broken headers", hits.Load())
	}
}
