// Package integration runs callhook inside a real Caddy (in-process through
// caddytest, and as a built binary for the kill -9 test) against real HTTP
// receivers on 127.0.0.1. All caddytest-based tests live in this one package:
// they share caddytest's fixed admin port (2999).
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

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
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
