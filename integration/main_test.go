// Package integration runs callhook inside a real Caddy (in-process through
// caddytest, and as a built binary for the kill -9 test) against real HTTP
// receivers on 127.0.0.1. All caddytest-based tests live in this one package:
// they share caddytest's fixed admin port (2999).
package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/callhook/caddy-callhook"
)

// TestMain points Caddy's config and data directories at a temporary folder,
// so tests never write autosave.json or a queue under $HOME.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "callhook-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	// Caddy computes these two when its package loads, before TestMain runs.
	caddy.ConfigAutosavePath = filepath.Join(dir, "config", "caddy", "autosave.json")
	caddy.DefaultStorage.Path = filepath.Join(dir, "data", "caddy")
	// Ports can be moved so that two checkouts can run these tests at once.
	adminPort = envPort("CALLHOOK_TEST_ADMIN_PORT", 2999)
	httpPort = envPort("CALLHOOK_TEST_HTTP_PORT", 9080)
	caddytest.Default.AdminPort = adminPort
	// A /load that switches queues closes one pebble store (the old config
	// drains for up to drain_timeout and waits for a running compaction)
	// and opens another (a few fsyncs): well under a second on a quiet
	// machine, but over caddytest's 5 s when CI runs the fault suite beside
	// this package and fsyncs queue behind each other (seen once: 3 s to
	// open, 2 s to drain). How long a reload takes is not what these tests
	// measure.
	caddytest.Default.LoadRequestTimeout = time.Minute
	caddyBase = fmt.Sprintf("http://localhost:%d", httpPort)
	// Caddy replaces its admin server at every /load and its HTTP server at
	// every reload, closing the old one's idle connections. A POST that
	// picked such a connection from the pool fails with "broken pipe" or EOF
	// (Go retries only idempotent requests), so under load a test would fail
	// on its own plumbing. Every request here (and caddytest's /load, which
	// uses the default transport too) dials afresh.
	http.DefaultTransport.(*http.Transport).DisableKeepAlives = true
	code := m.Run()
	stopBrowser()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	adminPort, httpPort int
	caddyBase           string
)

func envPort(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
