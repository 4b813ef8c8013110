package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// buildCaddy builds the repository's Caddy with callhook (./xcaddy).
func buildCaddy(repo, out string) error {
	cmd := exec.Command("go", "build", "-o", out, "./xcaddy")
	cmd.Dir = repo
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building caddy from %s/xcaddy: %w", repo, err)
	}
	return nil
}

// process is a child of the harness: Caddy or the relay.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs a child that dies with the harness (Pdeathsig), with its output
// in logPath and HOME and the XDG directories under home.
func start(name, home, logPath string, args ...string) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to exit (SIGTERM) and kills it if it has not within
// timeout.
func (p *process) stop(timeout time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail is the end of the process's output, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitListening waits until addr accepts connections or the process exits.
func waitListening(p *process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before listening on %s: %v\n%s", p.name, addr, p.err, p.logTail())
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not listen on %s within %s\n%s", p.name, addr, timeout, p.logTail())
}

// startCaddy runs the built Caddy with a Caddyfile written under dir.
func startCaddy(bin, dir, name, config string) (*process, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		return nil, err
	}
	p, err := start("caddy ("+name+")", dir, filepath.Join(dir, "caddy.log"),
		bin, "run", "--config", file, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	for _, port := range []int{portCaddy, portAdmin} {
		if err := waitListening(p, fmt.Sprintf("127.0.0.1:%d", port), 60*time.Second); err != nil {
			p.stop(5 * time.Second)
			return nil, err
		}
	}
	return p, nil
}

var adminClient = &http.Client{Timeout: 5 * time.Minute}

func adminGet(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", portAdmin, path), nil)
	if err != nil {
		return nil, err
	}
	res, err := adminClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin GET %s: %s: %s", path, res.Status, truncate(b, 200))
	}
	return b, nil
}

// fetchHeap reads the Go heap of the Caddy under test after a GC, so the
// figure is live data, not garbage waiting to be collected.
func fetchHeap() (heapStats, error) {
	b, err := adminGet(context.Background(), "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return heapStats{}, err
	}
	return parseHeapProfile(b)
}

// fetchProfile saves a CPU profile of the Caddy under test to path. It
// blocks for secs seconds.
func fetchProfile(secs int, path string) error {
	b, err := adminGet(context.Background(), fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs))
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
	b, err := adminGet(context.Background(), "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// loadConfig replaces the running Caddy's config (a Caddyfile) through the
// admin endpoint, as `caddy reload` does.
func loadConfig(caddyfile string) error {
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", portAdmin), strings.NewReader(caddyfile))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		return fmt.Errorf("%s: %s", res.Status, b)
	}
	return nil
}
