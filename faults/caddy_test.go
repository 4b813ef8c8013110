//go:build linux

package faults

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// caddyProc is one real Caddy process with callhook, restartable on the same
// data directory, config and ports.
type caddyProc struct {
	t         *testing.T
	bin       string
	home      string // XDG dirs, the log and the Caddyfile live here
	config    string // path of the Caddyfile
	httpPort  int
	adminPort int
	admin     *http.Client

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
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
// it (admin); start runs it.
func newCaddy(t *testing.T, offset int) *caddyProc {
	t.Helper()
	bin := caddyBinary(t)
	home := t.TempDir()
	p := &caddyProc{
		t:         t,
		bin:       bin,
		home:      home,
		config:    filepath.Join(home, "Caddyfile"),
		httpPort:  portBase + offset,
		adminPort: portBase + offset + 1,
		admin:     &http.Client{Timeout: 30 * time.Second},
	}
	t.Cleanup(func() {
		p.admin.CloseIdleConnections()
		if p.running() {
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("last lines of the Caddy log (%s):\n%s", p.logPath(), p.logTail(6000))
		}
	})
	return p
}

func (p *caddyProc) base() string      { return fmt.Sprintf("http://127.0.0.1:%d", p.httpPort) }
func (p *caddyProc) adminBase() string { return fmt.Sprintf("http://127.0.0.1:%d", p.adminPort) }
func (p *caddyProc) logPath() string   { return filepath.Join(p.home, "caddy.log") }

// start writes the Caddyfile and runs Caddy on it until its listener and
// admin endpoint answer.
func (p *caddyProc) start(s site) {
	p.t.Helper()
	if err := os.WriteFile(p.config, []byte(p.caddyfile(s)), 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.restart()
}

// restart runs Caddy again on the Caddyfile last written by start.
func (p *caddyProc) restart() {
	p.t.Helper()
	if p.running() {
		p.t.Fatal("restart: caddy is still running")
	}
	logf, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	p.starts++
	fmt.Fprintf(logf, "----- faults: start %d -----\n", p.starts)
	cmd := exec.Command(p.bin, "run", "--config", p.config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(p.home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(p.home, "config"),
		"HOME="+p.home,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.t.Fatalf("starting caddy: %v", err)
	}
	logf.Close() // the child has its own copy
	p.cmd = cmd
	exited := make(chan struct{})
	p.exited = exited
	go func() {
		cmd.Wait()
		close(exited)
	}()
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", p.adminPort), fmt.Sprintf("127.0.0.1:%d", p.httpPort)} {
		if err := p.waitListening(addr); err != nil {
			p.t.Fatal(err)
		}
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
			return fmt.Errorf("caddy exited before callhook was ready (%v)", p.cmd.ProcessState)
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

func (p *caddyProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *caddyProc) waitListening(addr string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !p.running() {
			return fmt.Errorf("caddy exited before listening on %s (%v); see its log above", addr, p.cmd.ProcessState)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(30 * time.Millisecond)
	}
	return fmt.Errorf("caddy never listened on %s within 60s", addr)
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (p *caddyProc) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9: %v", err)
	}
	<-p.exited
}

// terminate sends SIGTERM and waits up to limit for the process to exit. It
// returns how long the exit took and the exit code; past limit it kills the
// process and fails.
func (p *caddyProc) terminate(limit time.Duration) (time.Duration, int) {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.exited:
		return time.Since(start), p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		p.cmd.Process.Kill()
		<-p.exited
		p.t.Fatalf("caddy did not exit within %s of SIGTERM", limit)
		return 0, 0
	}
}

// load replaces the running config through the admin API, as `caddy reload`
// does.
func (p *caddyProc) load(s site) error {
	req, err := http.NewRequest(http.MethodPost, p.adminBase()+"/load", strings.NewReader(p.caddyfile(s)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	res, err := p.admin.Do(req)
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

func (p *caddyProc) adminGet(path string) ([]byte, error) {
	res, err := p.admin.Get(p.adminBase() + path)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, res.Status, body)
	}
	return body, nil
}

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

// goroutines counts the process's goroutines from its pprof endpoint (which
// the admin API serves).
func (p *caddyProc) goroutines() (int, error) {
	body, err := p.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	m := goroutineTotal.FindSubmatch(body)
	if m == nil {
		return 0, errors.New("no goroutine total in the pprof answer")
	}
	return strconv.Atoi(string(m[1]))
}

// goroutineDump is the full goroutine profile, for failure messages.
func (p *caddyProc) goroutineDump() string {
	body, err := p.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	return string(body)
}

// openFiles counts the process's open file descriptors.
func (p *caddyProc) openFiles() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

var heapAllocLine = regexp.MustCompile(`(?m)^# HeapAlloc = (\d+)`)

// heapAlloc is the live heap right after a forced GC: pprof's heap profile
// with gc=1 collects first and prints runtime.MemStats at the end.
func (p *caddyProc) heapAlloc() (uint64, error) {
	body, err := p.adminGet("/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		return 0, err
	}
	m := heapAllocLine.FindSubmatch(body)
	if m == nil {
		return 0, errors.New("no HeapAlloc in the pprof heap answer")
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

// rss is the process's resident set size in bytes (VmRSS).
func (p *caddyProc) rss() (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// logTail is the end of the Caddy log.
func (p *caddyProc) logTail(n int) string {
	b, _ := os.ReadFile(p.logPath())
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// logCount counts log lines containing s.
func (p *caddyProc) logCount(s string) int {
	b, _ := os.ReadFile(p.logPath())
	return bytes.Count(b, []byte(s))
}

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
