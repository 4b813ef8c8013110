package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// buildCaddy builds the repository's Caddy (./xcaddy) into dir.
func buildCaddy(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", bin, "../xcaddy")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("building caddy: %v", err)
	}
	return bin
}

// startBinary runs a built Caddy with its config and data under home.
func startBinary(t *testing.T, bin, home, config string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "run", "--config", config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"), "HOME="+home)
	logf, err := os.OpenFile(filepath.Join(home, "caddy.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("caddy never listened on %s", addr)
}

// TestKill9 shows that every event answered 202 is delivered after the
// process is killed with SIGKILL and started again.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Caddy binary")
	}
	var up atomic.Bool
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	home := t.TempDir()
	bin := buildCaddy(t, home)
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort+100)
	config := filepath.Join(home, "Caddyfile")
	os.WriteFile(config, []byte(fmt.Sprintf(`{
	admin off
	callhook {
		allow_destinations 127.0.0.1/32
	}
}
http://%s {
	callhook {
		event after_call
		webhook a {
			on after_call
			url %s/a
			param id call.call_id
			backoff 50ms 200ms
			max_attempts 50
		}
		webhook b {
			on after_call
			url %s/b
			format form
			param id call.call_id
			backoff 50ms 200ms
			max_attempts 50
		}
	}
}
`, addr, rc.URL, rc.URL)), 0o600)

	cmd := startBinary(t, bin, home, config)
	waitListening(t, addr)
	const events = 100
	accepted := map[string]bool{}
	for i := 0; i < events; i++ {
		res, err := http.Post("http://"+addr+"/", "application/json", stringsReader(fmt.Sprintf(`{"call_id":"k-%d"}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		a := decodeAnswer(t, res)
		if res.StatusCode != 202 || len(a.Deliveries) != 2 {
			t.Fatalf("event %d: status %d, %+v", i, res.StatusCode, a)
		}
		for _, d := range a.Deliveries {
			accepted[d.ID] = true
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	upAt := time.Now()
	up.Store(true)
	startBinary(t, bin, home, config)

	deadline := time.Now().Add(60 * time.Second)
	delivered := map[string]int{}
	for time.Now().Before(deadline) {
		delivered = map[string]int{}
		for _, h := range rc.got() {
			if h.At.After(upAt) { // answered 200
				delivered[h.Header.Get("webhook-id")]++
			}
		}
		missing := 0
		for id := range accepted {
			if delivered[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	missing := 0
	for id := range accepted {
		if delivered[id] == 0 {
			missing++
		}
	}
	if missing > 0 {
		log, _ := os.ReadFile(filepath.Join(home, "caddy.log"))
		t.Fatalf("%d of %d accepted deliveries never arrived after kill -9 and restart\n%s", missing, len(accepted), tail(log, 4000))
	}
	t.Logf("kill -9: %d deliveries accepted, all delivered after restart (%d requests in all, incl. retries before the kill)", len(accepted), len(rc.got()))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
