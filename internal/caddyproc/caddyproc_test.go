//go:build linux

package caddyproc

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sh is a child that runs script under a fresh home.
func sh(t *testing.T, script string) *Proc {
	t.Helper()
	home := t.TempDir()
	p := New(Options{Name: "sh", Command: []string{"sh", "-c", script}, Home: home, Log: filepath.Join(home, "out.log"), ErrorTail: 500})
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Kill()
		}
	})
	return p
}

// freeAddr is a local address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestEnvLogAndRestart(t *testing.T) {
	p := sh(t, `echo "run $HOME $XDG_CONFIG_HOME $XDG_DATA_HOME"`)
	for range 2 {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		if err := p.Logf("-- marker --\n"); err != nil {
			t.Fatal(err)
		}
	}
	home := p.o.Home
	line := fmt.Sprintf("run %s %s/config %s/data\n-- marker --\n", home, home, home)
	if b, _ := os.ReadFile(p.LogPath()); string(b) != line+line {
		t.Errorf("log after two runs = %q, want %q", b, line+line)
	}
	if n := p.LogCount("-- marker --"); n != 2 {
		t.Errorf("LogCount = %d, want 2", n)
	}
	if got := p.LogTail(len(line) + 3); got != line {
		t.Errorf("LogTail = %q, want the last whole line pair %q", got, line)
	}
	want := []string{"run " + home + " " + home + "/config " + home + "/data"}
	if got := p.LogLines("run ", 1); !slices.Equal(got, want) {
		t.Errorf("LogLines(run, 1) = %q, want %q", got, want)
	}
	if got := p.LogLines("marker", 5); len(got) != 2 {
		t.Errorf("LogLines(marker, 5) = %q, want the 2 marker lines", got)
	}
}

func TestStartWhileRunning(t *testing.T) {
	p := sh(t, "exec sleep 60")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("second Start = %v, want still running", err)
	}
}

func TestWaitListeningExitedFailsEarly(t *testing.T) {
	p := sh(t, "echo no config here; exit 3")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := p.WaitListening(20*time.Second, freeAddr(t))
	if err == nil {
		t.Fatal("WaitListening on an exited process succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("WaitListening took %s to see the exit", time.Since(start))
	}
	for _, want := range []string{"sh exited before listening", "exit status 3", "no config here"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if p.Running() || p.State().ExitCode() != 3 {
		t.Errorf("running %v, state %v; want exited with 3", p.Running(), p.State())
	}
	if _, err := p.Stop(time.Second); err == nil {
		t.Error("Stop of an exited process succeeded")
	}
	if err := p.Kill(); err == nil {
		t.Error("Kill of an exited process succeeded")
	}
}

func TestWaitListening(t *testing.T) {
	addr := freeAddr(t)
	p := listenerChild(t, addr)
	if err := p.WaitListening(5*time.Second, addr); err != nil {
		t.Fatal(err)
	}
	addr = freeAddr(t)
	if err := p.WaitListening(200*time.Millisecond, addr); err == nil || !strings.Contains(err.Error(), "did not listen on "+addr+" within 200ms") {
		t.Fatalf("WaitListening on a closed port = %v", err)
	}
}

func TestStop(t *testing.T) {
	p := sh(t, "exec sleep 60")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	took, err := p.Stop(5 * time.Second)
	if err != nil || took > 3*time.Second {
		t.Fatalf("Stop = %s, %v", took, err)
	}
	if p.Running() {
		t.Fatal("running after Stop")
	}
	if ws := p.State().Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("state %v, want killed by SIGTERM", p.State())
	}
}

func TestStopKillsWhatIgnoresTERM(t *testing.T) {
	// An ignored signal stays ignored across exec: sleep ignores SIGTERM.
	p := sh(t, `trap "" TERM; echo trapped; exec sleep 60`)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); p.LogCount("trapped") == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	took, err := p.Stop(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not exit within 300ms of SIGTERM") {
		t.Fatalf("Stop = %v, want did not exit", err)
	}
	if took < 300*time.Millisecond || p.Running() {
		t.Fatalf("took %s, running %v", took, p.Running())
	}
	if ws := p.State().Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("state %v, want killed", p.State())
	}
}

func TestKill(t *testing.T) {
	p := sh(t, `trap "" TERM; exec sleep 60`)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	if n, err := p.OpenFiles(); err != nil || n < 3 {
		t.Errorf("OpenFiles = %d, %v", n, err)
	}
	if n, err := p.RSS(); err != nil || n == 0 {
		t.Errorf("RSS = %d, %v", n, err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Fatal("running after Kill")
	}
	if ws := p.State().Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("state %v, want killed", p.State())
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("pid %d still exists after Kill", pid)
	}
}

func TestBuildFailure(t *testing.T) {
	err := Build(t.TempDir(), filepath.Join(t.TempDir(), "caddy"))
	if err == nil || !strings.Contains(err.Error(), "go build -o") {
		t.Fatalf("Build outside a module = %v", err)
	}
}

func TestAdmin(t *testing.T) {
	var loaded, ctype string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/load":
			b, _ := io.ReadAll(r.Body)
			if strings.Contains(string(b), "bad") {
				http.Error(w, "adapting config: bad", http.StatusBadRequest)
				return
			}
			loaded, ctype = string(b), r.Header.Get("Content-Type")
		case "/debug/pprof/goroutine":
			fmt.Fprint(w, "goroutine profile: total 42\n1 @ 0x1\n")
		case "/debug/pprof/heap":
			if r.URL.Query().Get("gc") != "1" {
				http.Error(w, "no gc", http.StatusBadRequest)
				return
			}
			fmt.Fprint(w, "heap profile: ...\n# runtime.MemStats\n# Alloc = 1\n# HeapAlloc = 12345\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	a := Admin{Addr: strings.TrimPrefix(srv.URL, "http://"), Client: srv.Client()}
	if err := a.Load(":80 {\n}\n"); err != nil || loaded != ":80 {\n}\n" || ctype != "text/caddyfile" {
		t.Errorf("Load: %v, body %q, type %q", err, loaded, ctype)
	}
	if err := a.Load("bad"); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "adapting config: bad") {
		t.Errorf("Load of a bad config = %v", err)
	}
	if n, err := a.Goroutines(); err != nil || n != 42 {
		t.Errorf("Goroutines = %d, %v", n, err)
	}
	if n, err := a.HeapAlloc(); err != nil || n != 12345 {
		t.Errorf("HeapAlloc = %d, %v", n, err)
	}
	if _, err := a.Get(context.Background(), "/nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Get of a missing path = %v", err)
	}
}
