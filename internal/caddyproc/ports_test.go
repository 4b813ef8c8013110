//go:build linux

package caddyproc

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for a server child: with
// CADDYPROC_TEST_LISTEN set to addresses (comma-separated) it listens on
// each and waits to be killed.
func TestMain(m *testing.M) {
	if addrs := os.Getenv("CADDYPROC_TEST_LISTEN"); addrs != "" {
		for _, a := range strings.Split(addrs, ",") {
			if _, err := net.Listen("tcp", a); err != nil {
				os.Stderr.WriteString(err.Error() + "\n")
				os.Exit(2)
			}
		}
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// listenerChild runs this test binary as a child that listens on addrs.
func listenerChild(t *testing.T, addrs ...string) *Proc {
	t.Helper()
	home := t.TempDir()
	// env execs the binary: the child's pid is the listener's
	cmd := []string{"env", "CADDYPROC_TEST_LISTEN=" + strings.Join(addrs, ","), os.Args[0]}
	p := New(Options{Name: "listener", Command: cmd, Home: home, Log: filepath.Join(home, "out.log"), ErrorTail: 500})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Kill()
		}
	})
	return p
}

// TestWaitListeningForeignListener: a port that answers, but not from the
// child (a quick-start Caddy left on the test's admin port, say), fails
// WaitListening instead of letting the harness talk to it.
func TestWaitListeningForeignListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := sh(t, "exec sleep 60")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err = p.WaitListening(5*time.Second, l.Addr().String())
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()+" is listened on by another process than pid "+strconv.Itoa(p.Pid())) {
		t.Fatalf("WaitListening on a port the test process holds = %v, want it refused", err)
	}
}

// TestWaitListeningAllInterfaces: a child that listens on all interfaces
// (Caddy without default_bind) fails WaitListening.
func TestWaitListeningAllInterfaces(t *testing.T) {
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	p := listenerChild(t, ":"+port)
	err := p.WaitListening(5*time.Second, "127.0.0.1:"+port)
	if err == nil || !strings.Contains(err.Error(), "which is reachable from the network: a test server must bind 127.0.0.1") {
		t.Fatalf("WaitListening on a child listening on :%s = %v, want it refused", port, err)
	}
}

func TestPickPorts(t *testing.T) {
	ps, err := PickPorts(5)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := pickRange()
	seen := map[int]bool{}
	for _, p := range ps {
		if p < lo || p >= hi || seen[p] {
			t.Errorf("port %d: outside %d-%d or picked twice (%v)", p, lo, hi-1, ps)
		}
		seen[p] = true
		if err := CheckFree(p); err != nil {
			t.Errorf("picked port %d is not free: %v", p, err)
		}
	}
}

// TestPickPortsSkipsTaken: a port something listens on, on 127.0.0.1 or
// only on ::1, is never picked.
func TestPickPortsSkipsTaken(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			taken, err := PickPort()
			if err != nil {
				t.Fatal(err)
			}
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(taken)))
			if err != nil {
				t.Skipf("cannot listen on %s: %v", host, err)
			}
			defer l.Close()
			if err := CheckFree(taken); err == nil || !strings.Contains(err.Error(), "port "+strconv.Itoa(taken)+" is in use") {
				t.Errorf("CheckFree(%d) with a listener on %s = %v", taken, host, err)
			}
			// The range holds the taken port and the one after it: the scan
			// starts at the taken one and must move on.
			got, err := pickPorts(1, taken, taken+2, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != taken+1 {
				t.Errorf("pickPorts from the taken port %d = %v, want %d", taken, got, taken+1)
			}
			if _, err := pickPorts(1, taken, taken+1, 0); err == nil || !strings.Contains(err.Error(), "only 0 of") {
				t.Errorf("pickPorts with only the taken port = %v, want an error", err)
			}
		})
	}
}
