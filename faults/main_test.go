//go:build linux

package faults

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// soak enables the long-running soak scenario (TestSoak); 0 skips it.
var soak = flag.Duration("soak", 0, "run the soak scenario for this long (e.g. 10m); 0 skips it")

// portBase is the first of the ports this suite may use for the Caddy
// processes it starts (listeners and admin endpoints, base+0 to base+99)
// and its NATS servers (natsBase). It is drawn at random in TestMain, or
// set by CALLHOOK_FAULTS_PORT_BASE; a scenario whose ports are taken
// anyway takes others (newCaddy), and WaitListening refuses to talk to a
// server the suite did not start. Receivers use 127.0.0.1:0.
var portBase int

// portBaseLow and portBaseHigh bound a random portBase: clear of the quick
// start's ports (2999, 8080) and below the kernel's ephemeral range
// (32768), with room for natsBase's 4700-4799 above it.
const portBaseLow, portBaseHigh = 20000, 32768 - 4800

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
	portsTaken    = 98 // ports_test.go
)

var (
	buildDir  string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	portBase = portBaseLow + rand.IntN(portBaseHigh-portBaseLow)
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
	if n := natsSkipped.Load(); n > 0 {
		// go test prints skips only with -v: without this line a missing
		// nats-server would pass the suite with its NATS half unrun.
		fmt.Fprintf(os.Stderr, "faults: %d NATS scenarios skipped: %s\n", n, noNATSServer)
	}
	os.Exit(code)
}

// noNATSServer says why the NATS scenarios cannot run and how to fix it.
const noNATSServer = "nats-server is not on PATH nor in GOBIN/GOPATH/bin: install it with `go install github.com/nats-io/nats-server/v2@v2.15.2` (.ci/run does) to run the NATS scenarios"

var natsSkipped atomic.Int32

// skipNoNATS skips a NATS scenario when nats-server is missing, and says so
// at the end of the run even without -v. Under CI (CI set, as .ci/run
// does) it fails instead: CI installs nats-server, so a missing one is a
// broken CI, not a reason to test half the suite.
func skipNoNATS(t *testing.T) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(noNATSServer + " (CI is set: failing instead of skipping)")
	}
	natsSkipped.Add(1)
	t.Skip(noNATSServer)
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
