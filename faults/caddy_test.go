//go:build linux

package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// caddyProc is one real Caddy process with callhook, restartable on the same
// data directory, config and ports. The process mechanics are
// internal/caddyproc's; the methods here fail the test instead of returning
// errors, and render the suite's Caddyfile.
type caddyProc struct {
	t         *testing.T
	proc      *caddyproc.Proc
	api       caddyproc.Admin
	home      string // XDG dirs, the log and the Caddyfile live here
	config    string // path of the Caddyfile
	httpPort  int
	adminPort int
	admin     *http.Client

	starts int
}

// site is what a scenario puts into its Caddyfile.
type site struct {
	// globals go inside the callhook global option, after the queue.
	globals string
	// queue goes inside `queue embedded { ... }` after the path.
	queue string
	// queueDir overrides the queue directory (default: home/queue).
	queueDir string
	// queueBlock, when set, replaces the whole queue line and block
	// (queue nats ... { ... }); queue and queueDir are then unused.
	queueBlock string
	// hooks is the body of the callhook handler after `event after_call`.
	hooks string
	// routes are more handle blocks of the site, before the catch-all one
	// that holds hooks (another target, say).
	routes string
}

// caddyfile renders a full Caddyfile for a site on the process's ports.
func (p *caddyProc) caddyfile(s site) string {
	dir := s.queueDir
	if dir == "" {
		dir = filepath.Join(p.home, "queue")
	}
	queueBlock := fmt.Sprintf("queue embedded {\n\t\t\tpath %s\n\t\t\t%s\n\t\t}", dir, s.queue)
	if s.queueBlock != "" {
		queueBlock = s.queueBlock
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	default_bind 127.0.0.1
	auto_https off
	persist_config off
	callhook {
		%s
		allow_destinations 127.0.0.1/32
		%s
	}
}

http://127.0.0.1:%d {
	# Readiness probe: an event no webhook fires on is answered 202 only
	# once the callhook app has opened its queue.
	handle /ready {
		callhook {
			target probe
			event before_call
		}
	}
	%s
	handle {
		callhook {
			event after_call
			%s
		}
	}
}
`, p.adminPort, queueBlock, s.globals, p.httpPort, s.routes, s.hooks)
}

// newCaddy prepares a process on portBase+offset (HTTP) and the port after
// it (admin), or on two ports picked free now when something listens on
// those; start runs it.
func newCaddy(t *testing.T, offset int) *caddyProc {
	t.Helper()
	bin := caddyBinary(t)
	home := t.TempDir()
	httpPort, adminPort := portBase+offset, portBase+offset+1
	if caddyproc.CheckFree(httpPort) != nil || caddyproc.CheckFree(adminPort) != nil {
		ps, err := caddyproc.PickPorts(2)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("ports %d and %d are in use: this scenario's Caddy takes %d and %d", httpPort, adminPort, ps[0], ps[1])
		httpPort, adminPort = ps[0], ps[1]
	}
	p := &caddyProc{
		t:         t,
		home:      home,
		config:    filepath.Join(home, "Caddyfile"),
		httpPort:  httpPort,
		adminPort: adminPort,
		admin:     &http.Client{Timeout: 30 * time.Second},
	}
	p.proc = caddyproc.New(caddyproc.Caddy(bin, p.config, home))
	p.api = caddyproc.Admin{Addr: fmt.Sprintf("127.0.0.1:%d", p.adminPort), Client: p.admin}
	t.Cleanup(func() {
		p.admin.CloseIdleConnections()
		if p.running() {
			_ = p.proc.Kill()
		}
		if t.Failed() {
			if errs := p.proc.LogLines(`"level":"error"`, 20); len(errs) > 0 {
				t.Logf("first error lines of the Caddy log (%s):\n%s", p.logPath(), strings.Join(errs, "\n"))
			}
			t.Logf("last lines of the Caddy log (%s):\n%s", p.logPath(), p.logTail(6000))
		}
	})
	return p
}

func (p *caddyProc) base() string      { return fmt.Sprintf("http://127.0.0.1:%d", p.httpPort) }
func (p *caddyProc) adminBase() string { return fmt.Sprintf("http://127.0.0.1:%d", p.adminPort) }
func (p *caddyProc) logPath() string   { return p.proc.LogPath() }

// start writes the Caddyfile and runs Caddy on it until its listener and
// admin endpoint answer.
func (p *caddyProc) start(s site) {
	p.t.Helper()
	if err := os.WriteFile(p.config, []byte(p.caddyfile(s)), 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.restart()
}

// startListening is start, waiting only until Caddy listens, not until
// callhook accepts events (its queue may not be reachable yet).
func (p *caddyProc) startListening(s site) {
	p.t.Helper()
	if err := os.WriteFile(p.config, []byte(p.caddyfile(s)), 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.run(false)
}

// restart runs Caddy again on the Caddyfile last written by start.
func (p *caddyProc) restart() {
	p.t.Helper()
	p.run(true)
}

func (p *caddyProc) run(waitReady bool) {
	p.t.Helper()
	if p.running() {
		p.t.Fatal("restart: caddy is still running")
	}
	p.starts++
	if err := p.proc.Logf("----- faults: start %d -----\n", p.starts); err != nil {
		p.t.Fatal(err)
	}
	if err := p.proc.Start(); err != nil {
		p.t.Fatal(err)
	}
	// The log is printed when the test fails (newCaddy), so errors carry
	// no tail of it.
	if err := p.proc.WaitListening(60*time.Second, fmt.Sprintf("127.0.0.1:%d", p.adminPort), fmt.Sprintf("127.0.0.1:%d", p.httpPort)); err != nil {
		p.t.Fatal(err)
	}
	if !waitReady {
		return
	}
	if err := p.waitReady(); err != nil {
		p.t.Fatal(err)
	}
}

// waitReady waits until callhook accepts events. Caddy starts its apps in
// no fixed order, so the listener may answer before the queue is open
// (503, "not running yet"); scenarios that count 503s must not see those.
func (p *caddyProc) waitReady() error {
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if !p.running() {
			return fmt.Errorf("caddy exited before callhook was ready (%v)", p.proc.State())
		}
		body := fmt.Sprintf(`{"call_id":"ready-%d-%d"}`, p.starts, i)
		res, err := p.admin.Post(p.base()+"/ready", "application/json", strings.NewReader(body))
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusAccepted {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("callhook did not accept events within 60s of starting")
}

func (p *caddyProc) running() bool { return p.proc.Running() }

// kill9 sends SIGKILL and waits for the process to be gone.
func (p *caddyProc) kill9() {
	p.t.Helper()
	if err := p.proc.Kill(); err != nil {
		p.t.Fatal(err)
	}
}

// terminate sends SIGTERM and waits up to limit for the process to exit. It
// returns how long the exit took and the exit code; past limit it kills the
// process and fails.
func (p *caddyProc) terminate(limit time.Duration) (time.Duration, int) {
	p.t.Helper()
	took, err := p.proc.Stop(limit)
	if err != nil {
		p.t.Fatal(err)
	}
	return took, p.proc.State().ExitCode()
}

// load replaces the running config through the admin API, as `caddy reload`
// does.
func (p *caddyProc) load(s site) error { return p.api.Load(p.caddyfile(s)) }

func (p *caddyProc) adminGet(path string) ([]byte, error) {
	return p.api.Get(context.Background(), path)
}

// goroutines counts the process's goroutines from its pprof endpoint (which
// the admin API serves).
func (p *caddyProc) goroutines() (int, error) { return p.api.Goroutines() }

// goroutineDump is the full goroutine profile, for failure messages.
func (p *caddyProc) goroutineDump() string {
	body, err := p.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	return string(body)
}

func (p *caddyProc) openFiles() (int, error)    { return p.proc.OpenFiles() }
func (p *caddyProc) heapAlloc() (uint64, error) { return p.api.HeapAlloc() }
func (p *caddyProc) rss() (uint64, error)       { return p.proc.RSS() }
func (p *caddyProc) logTail(n int) string       { return p.proc.LogTail(n) }

// logCount counts the occurrences of s in the log.
func (p *caddyProc) logCount(s string) int { return p.proc.LogCount(s) }

// settle waits for the process to go quiet and reports its goroutines and
// open files: kept-alive connections on both sides are closed first, then
// the lowest of a few samples is taken (the probe itself costs a goroutine
// and a socket while it runs).
func settle(t *testing.T, p *caddyProc, post *poster, sinks ...*sink) (int, int) {
	t.Helper()
	g, f := -1, -1
	for i := 0; i < 8; i++ {
		post.hc.CloseIdleConnections()
		for _, s := range sinks {
			s.closeIdle()
		}
		p.admin.CloseIdleConnections()
		time.Sleep(250 * time.Millisecond)
		ng, err := p.goroutines()
		if err != nil {
			t.Fatalf("counting caddy's goroutines: %v", err)
		}
		nf, err := p.openFiles()
		if err != nil {
			t.Fatalf("counting caddy's open files: %v", err)
		}
		if g < 0 || ng < g {
			g = ng
		}
		if f < 0 || nf < f {
			f = nf
		}
	}
	return g, f
}
