package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// buildCaddy builds the repository's Caddy (./xcaddy) into dir.
func buildCaddy(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "caddy")
	if err := caddyproc.Build("..", bin); err != nil {
		t.Fatal(err)
	}
	return bin
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
	port, err := caddyproc.PickPort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	config := filepath.Join(home, "Caddyfile")
	os.WriteFile(config, []byte(fmt.Sprintf(`{
	admin off
	default_bind 127.0.0.1
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

	o := caddyproc.Caddy(bin, config, home)
	o.ErrorTail = 4000
	p := caddyproc.New(o)
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Kill()
		}
	})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitListening(60*time.Second, addr); err != nil {
		t.Fatal(err)
	}
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
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	up.Store(true)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}

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
		t.Fatalf("%d of %d accepted deliveries never arrived after kill -9 and restart\n%s", missing, len(accepted), p.LogTail(4000))
	}
	t.Logf("kill -9: %d deliveries accepted, all delivered after restart (%d requests in all, incl. retries before the kill)", len(accepted), len(rc.got()))
}
