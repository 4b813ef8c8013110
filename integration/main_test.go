// Package integration runs callhook inside a real Caddy (in-process through
// caddytest, and as a built binary for the kill -9 test) against real HTTP
// receivers on 127.0.0.1. All caddytest-based tests live in this one package:
// they share one in-process Caddy, whose admin endpoint TestMain starts on a
// port it picks free (see adminPort).
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
	"github.com/callhook/caddy-callhook/internal/caddyproc"
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
	if err := startAdmin(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// A /load that switches queues closes one pebble store (the old config
	// drains for up to drain_timeout and waits for a running compaction)
	// and opens another (a few fsyncs): well under a second on a quiet
	// machine, but over caddytest's 5 s when CI runs the fault suite beside
	// this package and fsyncs queue behind each other (seen once: 3 s to
	// open, 2 s to drain). How long a reload takes is not what these tests
	// measure.
	caddytest.Default.LoadRequestTimeout = time.Minute
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

// The tests' ports. caddytest's default admin port, 2999, is the quick
// start's too: with a quick-start Caddy running, caddytest found its admin
// endpoint "already running", loaded the tests' configs into it and the
// tests passed. So the ports are picked free at run time (below the
// ephemeral range, clear of the quick start's 2999 and 8080), and TestMain
// starts the in-process Caddy's admin endpoint on adminPort itself: a port
// someone else holds fails the bind instead of being talked to.
// CALLHOOK_TEST_ADMIN_PORT and CALLHOOK_TEST_HTTP_PORT fix them (to watch a
// run with curl, say); a fixed port that is taken stops the run.
var (
	adminPort, httpPort, httpsPort int
	caddyBase                      string
)

// startAdmin picks the ports and starts the in-process Caddy with only its
// admin endpoint, which caddytest then finds running and loads each test's
// config into.
func startAdmin() error {
	ports, err := caddyproc.PickPorts(3)
	if err != nil {
		return err
	}
	httpsPort = ports[2]
	if adminPort, err = envPort("CALLHOOK_TEST_ADMIN_PORT", ports[0]); err != nil {
		return err
	}
	if httpPort, err = envPort("CALLHOOK_TEST_HTTP_PORT", ports[1]); err != nil {
		return err
	}
	caddytest.Default.AdminPort = adminPort
	caddyBase = fmt.Sprintf("http://localhost:%d", httpPort)
	if err := caddy.Load(fmt.Appendf(nil, `{"admin":{"listen":"localhost:%d"}}`, adminPort), true); err != nil {
		return fmt.Errorf("starting Caddy's admin endpoint on localhost:%d: %v", adminPort, err)
	}
	return caddyproc.CheckListeners(os.Getpid(), adminPort)
}

// envPort is the port in the environment variable name, or def when it is
// unset. A port that something listens on already is an error: the tests
// never use a server they did not start.
func envPort(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	port, err := strconv.Atoi(v)
	if err != nil || port <= 0 || port > 65535 {
		return 0, fmt.Errorf("%s=%q: want a port number", name, v)
	}
	if err := caddyproc.CheckFree(port); err != nil {
		return 0, fmt.Errorf("%s=%d: %v; the tests never talk to a server they did not start (a quick-start Caddy?): stop it, choose a free port, or unset %s to let the tests pick one", name, port, err, name)
	}
	return port, nil
}
