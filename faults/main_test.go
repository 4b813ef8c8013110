//go:build linux

package faults

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// soak enables the long-running soak scenario (TestSoak); 0 skips it.
var soak = flag.Duration("soak", 0, "run the soak scenario for this long (e.g. 10m); 0 skips it")

// portBase is the first of the 100 ports this suite may use for the Caddy
// processes it starts (listeners and admin endpoints). Receivers use
// 127.0.0.1:0.
var portBase = 9500

// Port offsets from portBase, one pair per scenario, so that a port left in
// TIME_WAIT by one scenario never bothers the next.
const (
	portsKill9    = 0
	portsReload   = 10
	portsOutage   = 20
	portsCap      = 30
	portsDiskFull = 35
	portsShutdown = 40
	portsLease    = 50
	portsSoak     = 60
	portsFairness = 70
)

var (
	buildDir  string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if v, err := strconv.Atoi(os.Getenv("CALLHOOK_FAULTS_PORT_BASE")); err == nil && v > 0 {
		portBase = v
	}
	dir, err := os.MkdirTemp("", "callhook-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// caddyBinary builds the repository's Caddy once per test run and returns
// its path. CALLHOOK_FAULTS_CADDY names a prebuilt binary instead (handy for
// long soaks of one build).
func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the fault suite builds and runs a real Caddy; skipped with -short")
	}
	buildOnce.Do(func() {
		if p := os.Getenv("CALLHOOK_FAULTS_CADDY"); p != "" {
			binPath = p
			return
		}
		binPath = filepath.Join(buildDir, "caddy")
		buildErr = caddyproc.Build("..", binPath) // ".." is the module root
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}
