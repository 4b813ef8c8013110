// Package caddyproc runs the repository's Caddy (with callhook) as a real
// child process, for the harnesses that need one: the benchmark (bench),
// the fault suite (faults) and the integration tests that kill and restart
// Caddy. Each of them used to carry its own copy of the same mechanics
// (build, start with a private HOME, wait for the listeners, SIGTERM or
// kill -9, read the log and the process's figures), and the copies had
// begun to drift; this package is the one copy.
//
// It knows nothing about the Caddyfiles the harnesses write: a caller
// writes its config file, starts the process on it and talks to Caddy's
// admin endpoint through Admin. Errors are returned, never reported through
// testing.T, so the benchmark (a command) can use it as well as the tests.
// Proc also runs other children the same way (the benchmark's relay and
// nats-server).
package caddyproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Build builds the Caddy of the module rooted at repo (its ./xcaddy) into
// out, as `go build -o out ./xcaddy` run in repo. (`go build ./xcaddy`
// alone fails: a directory of that name exists.) The error carries go
// build's output.
func Build(repo, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", abs, "./xcaddy")
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building caddy with callhook (go build -o %s ./xcaddy in %s): %v\n%s", abs, repo, err, b)
	}
	return nil
}

// Options describe a child process.
type Options struct {
	// Name names the process in errors ("caddy", "caddy (S1)").
	Name string
	// Command is the program and its arguments.
	Command []string
	// Home is the process's HOME; XDG_CONFIG_HOME and XDG_DATA_HOME are
	// Home/config and Home/data, so Caddy keeps nothing outside it.
	Home string
	// Log receives the process's stdout and stderr, appended: a restarted
	// process writes after its previous run.
	Log string
	// ErrorTail is how many bytes of the log's end an error of
	// WaitListening carries; 0 carries none (for a caller that prints the
	// log itself).
	ErrorTail int
}

// Caddy describes `bin run --config config --adapter caddyfile` with home
// as its HOME and its output in home/caddy.log.
func Caddy(bin, config, home string) Options {
	return Options{
		Name:    "caddy",
		Command: []string{bin, "run", "--config", config, "--adapter", "caddyfile"},
		Home:    home,
		Log:     filepath.Join(home, "caddy.log"),
	}
}

// Proc is a child process that can be started again once it has exited,
// on the same files. Its methods are meant for one goroutine.
type Proc struct {
	o    Options
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has been waited for
}

// New prepares a process; Start runs it.
func New(o Options) *Proc { return &Proc{o: o} }

// Start runs a new process: New(o) and its Start.
func Start(o Options) (*Proc, error) {
	p := New(o)
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// Start runs the process (again, after it has exited). The child gets
// SIGKILL if the parent dies (Pdeathsig, on Linux), so no Caddy outlives a
// killed harness.
func (p *Proc) Start() error {
	if p.Running() {
		return fmt.Errorf("starting %s: it is still running", p.o.Name)
	}
	if len(p.o.Command) == 0 {
		return fmt.Errorf("starting %s: no command", p.o.Name)
	}
	logf, err := os.OpenFile(p.o.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("starting %s: %w", p.o.Name, err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(p.o.Command[0], p.o.Command[1:]...)
	cmd.Env = os.Environ()
	if p.o.Home != "" {
		cmd.Env = append(cmd.Env,
			"HOME="+p.o.Home,
			"XDG_CONFIG_HOME="+filepath.Join(p.o.Home, "config"),
			"XDG_DATA_HOME="+filepath.Join(p.o.Home, "data"),
		)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.o.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return nil
}

// Running reports whether the process has been started and not yet exited.
func (p *Proc) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process id of the last start (0 before the first).
func (p *Proc) Pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// State is how the last run ended: nil while it runs or before any.
func (p *Proc) State() *os.ProcessState {
	if p.cmd == nil || p.Running() {
		return nil
	}
	return p.cmd.ProcessState
}

// WaitListening waits until each of addrs in turn accepts TCP connections,
// up to timeout for each. It fails at once if the process exits first, and
// once they all accept (on Linux) unless the listeners on their ports are
// the process's own and it listens on loopback only (CheckListeners): an
// answer on the port may come from a server someone else left there.
func (p *Proc) WaitListening(timeout time.Duration, addrs ...string) error {
	var ports []int
	for _, addr := range addrs {
		_, port, err := net.SplitHostPort(addr)
		n, err2 := strconv.Atoi(port)
		if err != nil || err2 != nil {
			return fmt.Errorf("waiting for %s to listen: %q is not host:port", p.o.Name, addr)
		}
		ports = append(ports, n)
	}
	for _, addr := range addrs {
		deadline := time.Now().Add(timeout)
		for {
			if !p.Running() {
				return p.errorf("%s exited before listening on %s: %v", p.o.Name, addr, p.State())
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return p.errorf("%s did not listen on %s within %s", p.o.Name, addr, timeout)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	if err := CheckListeners(p.Pid(), ports...); err != nil {
		return p.errorf("%s (pid %d) started, but: %v", p.o.Name, p.Pid(), err)
	}
	return nil
}

// errorf is an error with ErrorTail bytes of the log after it.
func (p *Proc) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if p.o.ErrorTail > 0 {
		msg += "\n" + p.LogTail(p.o.ErrorTail)
	}
	return errors.New(msg)
}

// Stop sends SIGTERM and waits up to timeout for the process to exit; past
// that it kills the process and returns an error. took is how long the exit
// took after the signal; State tells how it ended.
func (p *Proc) Stop(timeout time.Duration) (took time.Duration, err error) {
	if !p.Running() {
		return 0, fmt.Errorf("stopping %s: it is not running (%v)", p.o.Name, p.State())
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("SIGTERM to %s: %w", p.o.Name, err)
	}
	select {
	case <-p.done:
		return time.Since(start), nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return time.Since(start), fmt.Errorf("%s did not exit within %s of SIGTERM (killed)", p.o.Name, timeout)
	}
}

// Kill sends SIGKILL (kill -9) and waits until the process is gone.
func (p *Proc) Kill() error {
	if !p.Running() {
		return fmt.Errorf("kill -9 %s: it is not running (%v)", p.o.Name, p.State())
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill -9 %s: %w", p.o.Name, err)
	}
	<-p.done
	return nil
}

// LogPath is the file the process's output is appended to.
func (p *Proc) LogPath() string { return p.o.Log }

// Logf appends a line of the caller's to the log (a marker between runs).
func (p *Proc) Logf(format string, args ...any) error {
	f, err := os.OpenFile(p.o.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, format, args...); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LogTail is about the last n bytes of the log, from the start of a line.
func (p *Proc) LogTail(n int) string {
	b, _ := os.ReadFile(p.o.Log)
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// LogCount counts the occurrences of s in the log (Caddy logs one JSON
// object a line, so a message or a field counts the lines that hold it).
func (p *Proc) LogCount(s string) int {
	b, _ := os.ReadFile(p.o.Log)
	return bytes.Count(b, []byte(s))
}

// LogLines returns the first max lines of the log that hold s (a failed
// test prints the error lines, which the tail has often scrolled past).
func (p *Proc) LogLines(s string, max int) []string {
	b, _ := os.ReadFile(p.o.Log)
	var out []string
	for line := range bytes.Lines(b) {
		if len(out) == max {
			break
		}
		if bytes.Contains(line, []byte(s)) {
			out = append(out, string(bytes.TrimRight(line, "\n")))
		}
	}
	return out
}

// OpenFiles counts the process's open file descriptors (/proc/PID/fd).
func (p *Proc) OpenFiles() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Pid()))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// RSS is the process's resident set size in bytes (VmRSS of
// /proc/PID/status).
func (p *Proc) RSS() (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
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
