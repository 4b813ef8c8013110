package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// holdingReceiver answers every request only once released, and counts
// how many it holds at once.
type holdingReceiver struct {
	*receiver
	release chan struct{}
	now     atomic.Int32
	peak    atomic.Int32
}

func newHoldingReceiver(t *testing.T) *holdingReceiver {
	hr := &holdingReceiver{release: make(chan struct{})}
	hr.receiver = newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		n := hr.now.Add(1)
		for {
			p := hr.peak.Load()
			if n <= p || hr.peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-hr.release:
		case <-r.Context().Done():
		}
		hr.now.Add(-1)
		w.WriteHeader(http.StatusOK)
	})
	t.Cleanup(hr.open)
	return hr
}

func (hr *holdingReceiver) open() {
	select {
	case <-hr.release:
	default:
		close(hr.release)
	}
}

// waitHeld waits until the receiver holds n requests at once.
func (hr *holdingReceiver) waitHeld(t *testing.T, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for hr.now.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the receiver holds %d requests at once (peak %d), want %d", hr.now.Load(), hr.peak.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reloadConfig is the Caddyfile of the reload tests: its own queue dir,
// globals inside `callhook`, `queue embedded` options, a log file and the
// site body.
func reloadConfig(queueDir, queueOpts, globals, logFile, site string) string {
	cfg := caddyfile(queueDir, globals, site)
	cfg = strings.Replace(cfg, "\t\t\tpath ", "\t\t\t"+queueOpts+"\n\t\t\tpath ", 1)
	return withGlobalOptions(cfg, fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}", logFile))
}

func hookSite(url string) string {
	return fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook crm {
				on after_call
				url %s
				param id call.call_id
				backoff 20ms 100ms
			}
		}
	}`, url)
}

type statsView struct {
	Workers        int    `json:"workers"`
	PerDestination int    `json:"per_destination"`
	Retention      string `json:"retention"`
	DrainTimeout   string `json:"drain_timeout"`
}

func readStats(t *testing.T) statsView {
	t.Helper()
	var st statsView
	adminJSON(t, "GET", "/callhook/stats", 200, &st)
	return st
}

// waitLog waits for a JSON log line with msg whose call_id is callID.
func waitLog(t *testing.T, path, msg, callID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if hasLog(t, path, msg, callID) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %q line for call_id %s in %s", msg, callID, filepath.Base(path))
}

func hasLog(t *testing.T, path, msg, callID string) bool {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		return false
	}
	for _, l := range readLog(t, path) {
		if l.str("msg") == msg && (callID == "" || l.str("call_id") == callID) {
			return true
		}
	}
	return false
}

const deliveredMsg = "webhook delivered"

// TestReloadAppliesEverySetting changes every app setting in a reload that
// keeps the queue and checks each took effect: workers, per_destination,
// retention and drain_timeout (admin stats), the per-destination cap and
// max_pending (what the engine does), and the logger (outcome lines go to
// the new config's log file, not the first one's).
func TestReloadAppliesEverySetting(t *testing.T) {
	hr := newHoldingReceiver(t)
	queueDir, logDir := t.TempDir(), t.TempDir()
	logA, logB := filepath.Join(logDir, "a.log"), filepath.Join(logDir, "b.log")
	initServer(t, reloadConfig(queueDir, "max_pending 100",
		"allow_destinations 127.0.0.1/32\n\t\tworkers 4\n\t\tper_destination 1\n\t\tretention 1h", logA, hookSite(hr.URL)), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	if st := readStats(t); st.Workers != 4 || st.PerDestination != 1 {
		t.Fatalf("first config: stats %+v", st)
	}

	initServer(t, reloadConfig(queueDir, "max_pending 4",
		"allow_destinations 127.0.0.1/32\n\t\tworkers 6\n\t\tper_destination 3\n\t\tretention 2h\n\t\tdrain_timeout 3s", logB, hookSite(hr.URL)), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	want := statsView{Workers: 6, PerDestination: 3, Retention: "2h0m0s", DrainTimeout: "3s"}
	if st := readStats(t); st != want {
		t.Errorf("stats after reload: %+v, want %+v", st, want)
	}

	// per_destination 3: three deliveries to one receiver at once
	for i := range 3 {
		if status, ans := postJSON(t, "/calls/after_call", fmt.Sprintf(`{"call_id":"set-%d"}`, i)); status != 202 {
			t.Fatalf("status %d: %s", status, ans.Error)
		}
	}
	hr.waitHeld(t, 3)
	// max_pending 4: three leased and one more fit, a fifth does not
	if status, ans := postJSON(t, "/calls/after_call", `{"call_id":"set-3"}`); status != 202 {
		t.Fatalf("fourth event: status %d: %s", status, ans.Error)
	}
	if status, _ := postJSON(t, "/calls/after_call", `{"call_id":"set-4"}`); status != http.StatusServiceUnavailable {
		t.Errorf("fifth event with max_pending 4 and 4 waiting: status %d, want 503", status)
	}

	// the logger: outcomes go to the new config's log
	hr.open()
	waitLog(t, logB, deliveredMsg, "set-0")
	if hasLog(t, logA, deliveredMsg, "set-0") {
		t.Error("an outcome after the reload went to the first config's log")
	}
}

// busyPort holds a TCP port so a config that listens on it fails to start.
func busyPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// loadCaddyfile posts a Caddyfile to the admin API's /load and returns the
// status and body: unlike caddytest's InitServer it lets a load fail.
func loadCaddyfile(t *testing.T, cfg string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode == http.StatusOK {
		checkListeners(t)
	}
	return res.StatusCode, string(body)
}

// TestReloadThatFailsToStartKeepsSettings: a config whose HTTP app cannot
// start (its port is taken) is refused by Caddy, and the running config's
// callhook settings must stay in force: workers, the allow list (the failed
// config allows no loopback, so a running config's delivery to 127.0.0.1
// would be refused) and the logger. Caddy starts apps in no fixed order, so
// the failed load is tried several times: callhook starts before the HTTP
// app fails in about half of them.
func TestReloadThatFailsToStartKeepsSettings(t *testing.T) {
	rc := newReceiver(t, nil)
	queueDir, logDir := t.TempDir(), t.TempDir()
	logA := filepath.Join(logDir, "a.log")
	good := reloadConfig(queueDir, "", "allow_destinations 127.0.0.1/32\n\t\tworkers 4", logA, hookSite(rc.URL))
	initServer(t, good, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	port := busyPort(t)
	bad := reloadConfig(queueDir, "", "allow_destinations 10.0.0.0/8\n\t\tworkers 9",
		filepath.Join(logDir, "b.log"), hookSite("https://crm.example.com/calls"))
	bad += fmt.Sprintf("\nhttp://:%d {\n\trespond ok\n}\n", port)

	for i := range 6 {
		if status, body := loadCaddyfile(t, bad); status < 400 {
			t.Fatalf("the config with a taken port loaded: %d %s", status, body)
		}
		if st := readStats(t); st.Workers != 4 {
			t.Fatalf("attempt %d: after a failed reload workers = %d, want the running config's 4", i, st.Workers)
		}
		id := fmt.Sprintf("after-failed-%d", i)
		if status, body := postAsPBX(t, "/calls/after_call", fmt.Sprintf(`{"call_id":%q}`, id)); status != 202 && status != 200 {
			t.Fatalf("status %d: %s", status, body)
		}
		waitLog(t, logA, deliveredMsg, id)
	}
}

// postAsPBX posts an event and, as a PBX does, posts it again when the
// connection breaks before an answer. Caddy's servers share their
// listener across a reload: a server of the refused config can accept a
// connection just before it is stopped (at once, with the tests'
// grace_period 1ns), which resets it. A repeat of an accepted event is
// answered 200.
func postAsPBX(t *testing.T, path, body string) (int, string) {
	t.Helper()
	for try := 1; ; try++ {
		res, err := http.Post(caddyBase+path, "application/json", strings.NewReader(body))
		if err != nil {
			if try < 3 {
				t.Logf("POST %s: %v; posting again", path, err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			t.Fatalf("POST %s: %v", path, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b)
	}
}

// TestReloadToAnotherQueueWarns: a reload that points the queue elsewhere
// leaves the old queue's waiting deliveries behind; that must be logged
// loudly, with how many.
func TestReloadToAnotherQueueWarns(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	globals := "allow_destinations 127.0.0.1/32"
	initServer(t, reloadConfig(t.TempDir(), "", globals, logFile, hookSite(rc.URL)), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	for i := range 2 {
		if status, ans := postJSON(t, "/calls/after_call", fmt.Sprintf(`{"call_id":"strand-%d"}`, i)); status != 202 {
			t.Fatalf("status %d: %s", status, ans.Error)
		}
	}
	rc.waitHits(t, 2)
	initServer(t, reloadConfig(t.TempDir(), "", globals, logFile, hookSite(rc.URL)), "caddyfile")
	const msg = "the running config uses another queue: deliveries left in this one will not be sent until a config uses it again (point the queue back at it, or retry them there)"
	for _, l := range readLog(t, logFile) {
		if l.str("msg") == msg {
			if n, _ := l.num("pending"); n != 2 || l.str("level") != "error" {
				t.Errorf("left-behind line: %v", l)
			}
			return
		}
	}
	t.Errorf("no log line says that 2 deliveries were left in the old queue")
}
