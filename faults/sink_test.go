//go:build linux

package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// hit is one request a sink got.
type hit struct {
	ID     string // webhook-id
	Method string
	Path   string
	Hook   string // X-Hook
	Call   string // X-Call
	Cfg    string // X-Cfg (reload scenario)
	Start  time.Time
	End    time.Time
	// Status is what the sink answered; 0 if it never answered (the
	// connection was dropped, or the sender gave up first).
	Status int
}

func (h hit) ok() bool { return h.Status >= 200 && h.Status <= 299 }

// request is one request while and after it is handled.
type request struct {
	start time.Time
	path  string
	done  bool
	// abandoned: the sender hung up before the answer (its attempt timed
	// out, it shut down, it was killed). A later attempt of the same
	// delivery may then arrive before the sink has noticed the hang-up.
	abandoned bool
}

// reply is what a sink does with one request.
type reply struct {
	status int
	// delay is waited before answering; if the sender hangs up first the
	// request counts as not answered.
	delay      time.Duration
	retryAfter string
	// drop closes the connection without an answer.
	drop bool
}

// sink is a receiver on a fixed 127.0.0.1 port that records every request by
// webhook-id and can be taken down (connection refused), black-holed (TCP
// accepted, never answered) and brought back on the same port.
type sink struct {
	t    *testing.T
	addr string

	mu     sync.Mutex
	policy func(n int) reply // n counts requests from 1
	n      int
	hits   []hit
	// handling holds the requests being handled, by webhook-id; pairs are
	// requests of one webhook-id that were handled at the same time.
	handling map[string][]*request
	pairs    [][2]*request
	// timeout, if set, is the webhooks' attempt timeout: a request still
	// handled after it had been given up by its sender, whether or not the
	// sink noticed the hang-up in time.
	timeout time.Duration

	srv   *http.Server
	ln    net.Listener // srv's; closed by down even if Serve has not run yet
	conns map[net.Conn]http.ConnState
	hole  net.Listener
	held  []net.Conn
}

func okReply(int) reply { return reply{status: http.StatusNoContent} }

// newSink serves on a fresh 127.0.0.1 port; policy nil answers 204.
func newSink(t *testing.T, policy func(n int) reply) *sink {
	t.Helper()
	if policy == nil {
		policy = okReply
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{t: t, addr: ln.Addr().String(), policy: policy, handling: map[string][]*request{}, conns: map[net.Conn]http.ConnState{}}
	s.serveOn(ln)
	t.Cleanup(s.close)
	return s
}

func (s *sink) url() string { return "http://" + s.addr }

func (s *sink) serveOn(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.serve), ConnState: s.track}
	s.mu.Lock()
	s.srv, s.ln = srv, ln
	s.mu.Unlock()
	go srv.Serve(ln)
}

func (s *sink) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(s.conns, c)
		return
	}
	s.conns[c] = st
}

func (s *sink) setPolicy(policy func(n int) reply) {
	s.mu.Lock()
	s.policy = policy
	s.mu.Unlock()
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	h := hit{
		ID:     r.Header.Get("webhook-id"),
		Method: r.Method,
		Path:   r.URL.Path,
		Hook:   r.Header.Get("X-Hook"),
		Call:   r.Header.Get("X-Call"),
		Cfg:    r.Header.Get("X-Cfg"),
		Start:  time.Now(),
	}
	req := &request{start: h.Start, path: h.Method + " " + h.Path}
	s.mu.Lock()
	s.n++
	rep := s.policy(s.n)
	for _, other := range s.handling[h.ID] {
		s.pairs = append(s.pairs, [2]*request{other, req})
	}
	s.handling[h.ID] = append(s.handling[h.ID], req)
	s.mu.Unlock()

	abandoned := false
	switch {
	case rep.drop:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
	case rep.delay > 0 && !wait(r.Context(), rep.delay):
		// The sender hung up (timeout, shutdown, crash): not answered.
		abandoned = true
	default:
		if rep.retryAfter != "" {
			w.Header().Set("Retry-After", rep.retryAfter)
		}
		w.WriteHeader(rep.status)
		h.Status = rep.status
	}
	h.End = time.Now()

	s.mu.Lock()
	req.done, req.abandoned = true, abandoned
	s.handling[h.ID] = slices.DeleteFunc(s.handling[h.ID], func(o *request) bool { return o == req })
	if len(s.handling[h.ID]) == 0 {
		delete(s.handling, h.ID)
	}
	s.hits = append(s.hits, h)
	s.mu.Unlock()
}

// wait sleeps d unless ctx ends first; it reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// got is a copy of the finished requests.
func (s *sink) got() []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hit(nil), s.hits...)
}

// active is how many requests are being handled right now.
func (s *sink) active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.handling {
		n += len(v)
	}
	return n
}

// overlapping lists requests that arrived while another with the same
// webhook-id was being handled and neither was abandoned by its sender: the
// same delivery sent twice at once. It also counts the overlaps that
// followed an abandoned request, which are retries the sink saw before it
// noticed the hang-up of the attempt before.
func (s *sink) overlapping() (concurrent []string, afterAbandoned int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pairs {
		a, b := p[0], p[1]
		if !a.done || !b.done {
			continue // still being handled; judged once both are done
		}
		givenUp := s.timeout > 0 && !b.start.Before(a.start.Add(s.timeout))
		if a.abandoned || b.abandoned || givenUp {
			afterAbandoned++
			continue
		}
		concurrent = append(concurrent, fmt.Sprintf("%s at %s while the one of %s was still being handled",
			b.path, b.start.Format("15:04:05.000"), a.start.Format("15:04:05.000")))
	}
	return concurrent, afterAbandoned
}

// down stops serving: connections to the port are refused.
func (s *sink) down() {
	s.mu.Lock()
	srv, ln, hole, held := s.srv, s.ln, s.hole, s.held
	s.srv, s.ln, s.hole, s.held = nil, nil, nil, nil
	s.mu.Unlock()
	if srv != nil {
		ln.Close()
		srv.Close()
	}
	if hole != nil {
		hole.Close()
	}
	for _, c := range held {
		c.Close()
	}
}

// listen takes the sink's port again. The port was ours a moment ago; if
// something else took it meanwhile the scenario cannot go on.
func (s *sink) listen() net.Listener {
	var err error
	for i := 0; i < 50; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("cannot listen on %s again (another process took the port?): %v", s.addr, err)
	return nil
}

// up serves HTTP again on the same port.
func (s *sink) up() {
	s.down()
	s.serveOn(s.listen())
}

// blackhole accepts connections on the port and never reads or answers
// them, until down or up.
func (s *sink) blackhole() {
	s.down()
	ln := s.listen()
	s.mu.Lock()
	s.hole = ln
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.hole != ln {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.held = append(s.held, c)
			s.mu.Unlock()
		}
	}()
}

// heldConns is how many connections the black hole has swallowed.
func (s *sink) heldConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

// closeIdle closes the sender's connections that carry no request (kept
// alive, or dialled and not used yet), so that their goroutines and file
// descriptors in Caddy go away before a measurement. http.Server's own idle
// closing spares new connections for 5s.
func (s *sink) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, st := range s.conns {
		if st == http.StateNew || st == http.StateIdle {
			c.Close()
		}
	}
}

func (s *sink) close() {
	s.down()
}

// retryAfterSeconds parses a Retry-After in seconds.
func retryAfterSeconds(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, errors.New("not positive")
	}
	return n, nil
}
