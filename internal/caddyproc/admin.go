package caddyproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Admin is a running Caddy's admin endpoint.
type Admin struct {
	// Addr is the endpoint's host:port (the Caddyfile's admin option).
	Addr string
	// Client makes the requests; nil is http.DefaultClient (no timeout).
	Client *http.Client
}

func (a Admin) client() *http.Client {
	if a.Client != nil {
		return a.Client
	}
	return http.DefaultClient
}

// Get returns the body of GET path; an answer other than 200 is an error.
func (a Admin) Get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Addr+path, nil)
	if err != nil {
		return nil, err
	}
	res, err := a.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin GET %s: %s: %s", path, res.Status, truncate(body, 1000))
	}
	return body, nil
}

// Load replaces the running config with a Caddyfile (POST /load), as
// `caddy reload` does.
func (a Admin) Load(caddyfile string) error {
	req, err := http.NewRequest(http.MethodPost, "http://"+a.Addr+"/load", strings.NewReader(caddyfile))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	res, err := a.client().Do(req)
	if err != nil {
		return fmt.Errorf("POST /load: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /load: %s: %s", res.Status, body)
	}
	return nil
}

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

// Goroutines counts the process's goroutines from the pprof endpoint the
// admin API serves.
func (a Admin) Goroutines() (int, error) {
	body, err := a.Get(context.Background(), "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	m := goroutineTotal.FindSubmatch(body)
	if m == nil {
		return 0, errors.New("no goroutine total in the pprof answer")
	}
	return strconv.Atoi(string(m[1]))
}

var heapAllocLine = regexp.MustCompile(`(?m)^# HeapAlloc = (\d+)`)

// HeapAlloc is the live heap right after a forced GC: pprof's heap profile
// with gc=1 collects first and prints runtime.MemStats at the end.
func (a Admin) HeapAlloc() (uint64, error) {
	body, err := a.Get(context.Background(), "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		return 0, err
	}
	m := heapAllocLine.FindSubmatch(body)
	if m == nil {
		return 0, errors.New("no HeapAlloc in the pprof heap answer")
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return append(b[:n:n], "…"...)
	}
	return b
}
