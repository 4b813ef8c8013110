package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// standIn listens on addr for the length of the test, counting the
// connections it gets: a server the tests did not start. It returns nil when
// addr is taken already (by a real one, which the test cannot watch).
func standIn(t *testing.T, addr string) *caddyproc.StandIn {
	t.Helper()
	s, err := caddyproc.ListenStandIn(addr)
	if err != nil {
		t.Logf("%s is taken already (%v): not watched", addr, err)
		return nil
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// runChild runs some of this package's tests in a new process of this test
// binary (its own TestMain, its own ports), with the environment's test
// port variables replaced by env.
func runChild(t *testing.T, run string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1", "-test.v")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CALLHOOK_TEST_ADMIN_PORT=") && !strings.HasPrefix(kv, "CALLHOOK_TEST_HTTP_PORT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestQuickStartLeftAlone: with servers on the quick start's ports (its
// Caddy's 127.0.0.1:8080 and admin localhost:2999), tests that load
// configs, reload, post events and call the admin API pass without a single
// connection to them. (caddytest's default admin port is 2999: these tests
// used to load their configs into a running quick start.)
func TestQuickStartLeftAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("runs tests in a child process")
	}
	watched := map[string]*caddyproc.StandIn{}
	for _, addr := range []string{"127.0.0.1:2999", "127.0.0.1:8080", "[::1]:2999", "[::1]:8080"} {
		watched[addr] = standIn(t, addr)
	}
	out, err := runChild(t, "^(TestTargetRulesSpanHandlerBlocks|TestJSONConfig|TestAdminAPI)$")
	if err != nil || !strings.Contains(out, "--- PASS: TestJSONConfig") || !strings.Contains(out, "--- PASS: TestTargetRulesSpanHandlerBlocks") {
		t.Fatalf("the tests failed beside the stand-ins (%v):\n%s", err, out)
	}
	for addr, n := range watched {
		if n != nil && n.Connections() != 0 {
			t.Errorf("the stand-in on %s got %d connections from the tests", addr, n.Connections())
		}
	}
}

// TestTakenTestPortRefused: a CALLHOOK_TEST_ADMIN_PORT (or _HTTP_PORT) that
// something listens on stops the run before any test, saying what to do,
// and the listener is never talked to.
func TestTakenTestPortRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs tests in a child process")
	}
	for _, name := range []string{"CALLHOOK_TEST_ADMIN_PORT", "CALLHOOK_TEST_HTTP_PORT"} {
		t.Run(name, func(t *testing.T) {
			port, err := caddyproc.PickPort()
			if err != nil {
				t.Fatal(err)
			}
			n := standIn(t, fmt.Sprintf("127.0.0.1:%d", port))
			if n == nil {
				t.Fatal("cannot hold the picked port")
			}
			out, err := runChild(t, "^TestJSONConfig$", fmt.Sprintf("%s=%d", name, port))
			if err == nil {
				t.Fatalf("the run on a taken %s passed:\n%s", name, out)
			}
			for _, want := range []string{
				fmt.Sprintf("%s=%d: port %d is in use on 127.0.0.1", name, port, port),
				"unset " + name + " to let the tests pick one",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "=== RUN") {
				t.Errorf("tests ran on a taken port:\n%s", out)
			}
			if n.Connections() != 0 {
				t.Errorf("the stand-in on port %d got %d connections", port, n.Connections())
			}
		})
	}
}

// TestLoadsAreChecked: every config a test loads goes through initServer or
// loadCaddyfile, which check that the admin endpoint is this process's and
// that nothing listens beyond 127.0.0.1 (a direct caddytest InitServer or
// POST /load would skip that check).
func TestLoadsAreChecked(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, f := range files {
		if f == "ports_test.go" { // names what it looks for
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{".InitServer(", `/load"`} {
			if n := strings.Count(string(b), s); n > 0 {
				count[s] += n
				t.Logf("%s: %d× %s", f, n, s)
			}
		}
	}
	if count[".InitServer("] != 1 || count[`/load"`] != 1 {
		t.Errorf("configs are loaded outside initServer and loadCaddyfile (%v): load through those, which check the listeners", count)
	}
}
