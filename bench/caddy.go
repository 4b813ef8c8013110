package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// logTailBytes is how much of a child's log the harness's errors carry.
const logTailBytes = 2000

// start runs a child of the harness (the relay, nats-server) with its output
// in logPath and HOME and the XDG directories under home; it dies with the
// harness.
func start(name, home, logPath string, args ...string) (*caddyproc.Proc, error) {
	return caddyproc.Start(caddyproc.Options{Name: name, Command: args, Home: home, Log: logPath, ErrorTail: logTailBytes})
}

// startCaddy runs the built Caddy with a Caddyfile written under dir.
func startCaddy(bin, dir, name, config string) (*caddyproc.Proc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		return nil, err
	}
	o := caddyproc.Caddy(bin, file, dir)
	o.Name = "caddy (" + name + ")"
	o.ErrorTail = logTailBytes
	p, err := caddyproc.Start(o)
	if err != nil {
		return nil, err
	}
	if err := p.WaitListening(60*time.Second, fmt.Sprintf("127.0.0.1:%d", portCaddy), fmt.Sprintf("127.0.0.1:%d", portAdmin)); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

var adminClient = &http.Client{Timeout: 5 * time.Minute}

// admin is the admin endpoint of the Caddy under test.
func admin() caddyproc.Admin {
	return caddyproc.Admin{Addr: fmt.Sprintf("127.0.0.1:%d", portAdmin), Client: adminClient}
}

// fetchHeap reads the Go heap of the Caddy under test after a GC, so the
// figure is live data, not garbage waiting to be collected.
func fetchHeap() (heapStats, error) {
	b, err := admin().Get(context.Background(), "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return heapStats{}, err
	}
	return parseHeapProfile(b)
}

// fetchProfile saves a CPU profile of the Caddy under test to path. It
// blocks for secs seconds.
func fetchProfile(secs int, path string) error {
	b, err := admin().Get(context.Background(), fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs))
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return errors.New("empty profile")
	}
	return os.WriteFile(path, b, 0o644)
}

// fetchHeapProfile saves a heap profile (after a GC) to path.
func fetchHeapProfile(path string) error {
	b, err := admin().Get(context.Background(), "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
