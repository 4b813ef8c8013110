package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// initServer loads a config (a Caddyfile, or "json") into the in-process
// Caddy through its admin endpoint, as caddytest's InitServer does, and then
// makes sure that this process still holds that endpoint and listens on
// 127.0.0.1 only (checkListeners). Every load of a test goes through here
// or loadCaddyfile (TestLoadsAreChecked).
func initServer(t *testing.T, cfg, configType string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(cfg, configType)
	checkListeners(t)
	return tester
}

// checkListeners fails the test unless the admin endpoint the tests talk to
// is this process's own and every server it runs listens on loopback only
// (a test server reachable from the network, or a test talking to a Caddy
// it did not start, is a bug of the test).
func checkListeners(t *testing.T) {
	t.Helper()
	if err := caddyproc.CheckListeners(os.Getpid(), adminPort); err != nil {
		t.Fatalf("after loading the config: %v", err)
	}
}

// startCaddy loads a Caddyfile into the in-process Caddy. globals go inside
// the callhook global option after the queue; site is the body of the
// http://localhost:<httpPort> site. Each call uses its own queue directory.
func startCaddy(t *testing.T, callhookGlobals, site string) *caddytest.Tester {
	t.Helper()
	tester := initServer(t, caddyfile(t.TempDir(), callhookGlobals, site), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester
}

// newTesterWithQueue is startCaddy with extra options in `queue embedded`.
func newTesterWithQueue(t *testing.T, queueOpts, callhookGlobals, site string) *caddytest.Tester {
	t.Helper()
	cfg := strings.Replace(caddyfile(t.TempDir(), callhookGlobals, site), "\t\t\tpath ", "\t\t\t"+queueOpts+"\n\t\t\tpath ", 1)
	tester := initServer(t, cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester
}

func caddyfile(queueDir, callhookGlobals, site string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	default_bind 127.0.0.1
	http_port %d
	https_port %d
	grace_period 1ns
	skip_install_trust
	callhook {
		queue embedded {
			path %s
		}
		drain_timeout 2s
		%s
	}
}

http://localhost:%d {
	%s
}
`, adminPort, httpPort, httpsPort, queueDir, callhookGlobals, httpPort, site)
}

// answer is callhook's 200/202 body, or an error body.
type answer struct {
	EventID    string `json:"event_id"`
	Event      string `json:"event"`
	Target     string `json:"target"`
	Deliveries []struct {
		ID      string `json:"id"`
		Webhook string `json:"webhook"`
		State   string `json:"state"`
		Error   string `json:"error"`
	} `json:"deliveries"`
	Sync map[string]*struct {
		Status int `json:"status"`
		JSON   any `json:"json"`
	} `json:"sync"`
	Error string `json:"error"`
}

// ids lists the answer's delivery IDs, in order.
func (a answer) ids() []string {
	var out []string
	for _, d := range a.Deliveries {
		out = append(out, d.ID)
	}
	return out
}

func (a answer) id(webhook string) string {
	for _, d := range a.Deliveries {
		if d.Webhook == webhook {
			return d.ID
		}
	}
	return ""
}

// send posts an event and decodes callhook's answer.
func send(t *testing.T, method, path, contentType, body string, header ...string) (int, answer, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, caddyBase+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s %s: answer %d is not JSON: %q", method, path, res.StatusCode, raw)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("answer Content-Type = %q, want application/json", ct)
	}
	return res.StatusCode, a, res.Header
}

func postJSON(t *testing.T, path, body string, header ...string) (int, answer) {
	t.Helper()
	status, a, _ := send(t, "POST", path, "application/json", body, header...)
	return status, a
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func decodeAnswer(t *testing.T, res *http.Response) answer {
	t.Helper()
	defer res.Body.Close()
	var a answer
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	return a
}

// startCaddyDir is startCaddy with the queue in dir, so that reload can
// load another config on the same queue.
func startCaddyDir(t *testing.T, dir, callhookGlobals, site string) *caddytest.Tester {
	t.Helper()
	tester := initServer(t, caddyfile(dir, callhookGlobals, site), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester
}

// reload loads another config on the queue in dir, as `caddy reload` does.
func reload(t *testing.T, dir, callhookGlobals, site string) {
	t.Helper()
	if status, body := loadCaddyfile(t, caddyfile(dir, callhookGlobals, site)); status != http.StatusOK {
		t.Fatalf("reload: %d %s", status, body)
	}
}
