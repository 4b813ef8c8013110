package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// sink is the webhook receiver every scenario delivers to. It runs in the
// harness process on one or more loopback ports, answers 204 to everything
// (a JSON-RPC 2xx without a body is a success), counts what it answered,
// stamps the time of the last answer, and measures end-to-end latency from
// the `sent_ns` that the event carried into the webhook body.
type sink struct {
	delay   time.Duration // fixed latency before answering
	holdMax time.Duration // a held request is answered 503 after this long

	ok      atomic.Int64 // requests answered 2xx
	held503 atomic.Int64 // held requests that timed out with 503
	lastNS  atomic.Int64 // unix ns of the latest 2xx answer

	recordFrom atomic.Int64 // record latencies of events sent at or after this unix ns; 0 is off

	mu      sync.Mutex
	lats    []time.Duration
	release chan struct{} // non-nil while paused; closed to resume

	servers []*http.Server
	wg      sync.WaitGroup
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	body, err := readAll(r.Body, (*bp)[:0])
	*bp = body
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}

	s.mu.Lock()
	release := s.release
	s.mu.Unlock()
	if release != nil {
		t := time.NewTimer(s.holdMax)
		select {
		case <-release:
			t.Stop()
		case <-t.C:
			s.held503.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}

	now := time.Now().UnixNano()
	if from := s.recordFrom.Load(); from > 0 {
		if sent := sentNS(body); sent >= from {
			s.mu.Lock()
			s.lats = append(s.lats, time.Duration(now-sent))
			s.mu.Unlock()
		}
	}
	w.WriteHeader(http.StatusNoContent)
	s.ok.Add(1)
	s.lastNS.Store(now)
}

func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// listen serves the sink on each loopback port.
func (s *sink) listen(ports ...int) error {
	for _, p := range ports {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			s.close()
			return fmt.Errorf("sink: %w (is another harness running?)", err)
		}
		srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
		s.servers = append(s.servers, srv)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = srv.Serve(ln)
		}()
	}
	return nil
}

func (s *sink) close() {
	s.resume()
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
}

// reset zeroes the counters and the recorded latencies.
func (s *sink) reset() {
	s.ok.Store(0)
	s.held503.Store(0)
	s.lastNS.Store(0)
	s.recordFrom.Store(0)
	s.mu.Lock()
	s.lats = nil
	s.mu.Unlock()
}

// pause holds every request until resume (or holdMax).
func (s *sink) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.release == nil {
		s.release = make(chan struct{})
	}
}

func (s *sink) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.release != nil {
		close(s.release)
		s.release = nil
	}
}

// record starts collecting latencies of events sent from now on.
func (s *sink) record(from time.Time) {
	s.mu.Lock()
	s.lats = s.lats[:0]
	s.mu.Unlock()
	s.recordFrom.Store(from.UnixNano())
}

// latencies stops recording and returns what was recorded.
func (s *sink) latencies() []time.Duration {
	s.recordFrom.Store(0)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.lats
	s.lats = nil
	return out
}

// waitFor waits until the sink has answered want requests 2xx, or timeout.
// It returns the count reached and the time of the last answer.
func (s *sink) waitFor(want int64, timeout time.Duration) (int64, time.Time) {
	deadline := time.Now().Add(timeout)
	for s.ok.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return s.ok.Load(), time.Unix(0, s.lastNS.Load())
}

// count is how many requests the sink answered 2xx so far.
func (s *sink) count() int64 { return s.ok.Load() }
