package callhook

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/callhook/caddy-callhook/module/queue"
)

func parseNATS(t *testing.T, src string) (*NATSQueue, error) {
	t.Helper()
	d := caddyfile.NewTestDispenser(src)
	q := new(NATSQueue)
	return q, q.UnmarshalCaddyfile(d)
}

func TestNATSQueueCaddyfile(t *testing.T) {
	q, err := parseNATS(t, `nats nats://n1:4222 nats://n2:4222 {
		stream   ORDERS
		partitions 12
		replicas 3
		user     callhook
		password {env.NATS_PASSWORD}
		tls {
			ca /etc/nats/ca.pem
			client_certificate /etc/nats/c.pem /etc/nats/c.key
		}
		max_pending 1000000
	}`)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(q)
	want := `{"urls":["nats://n1:4222","nats://n2:4222"],"stream":"ORDERS","partitions":12,"replicas":3,"user":"callhook","password":"{env.NATS_PASSWORD}","tls":{"ca":"/etc/nats/ca.pem","client_certificate":"/etc/nats/c.pem","client_key":"/etc/nats/c.key"},"max_pending":1000000}`
	if string(got) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", got, want)
	}
}

func TestNATSQueueCaddyfileErrors(t *testing.T) {
	for _, tt := range []struct{ name, src, want string }{
		{"no url", "nats {\n}", "needs the servers' URLs"},
		{"bad scheme", "nats http://n1:4222", `scheme "http"`},
		{"unknown option", "nats nats://n1:4222 {\n\tstreams X\n}", `unknown option "streams" in queue nats: expected stream, partitions, replicas, credentials, user, password, token, nkey, tls or max_pending, at Testfile:2`},
		{"partitions 0", "nats nats://n1:4222 {\n\tpartitions 0\n}", "partitions \"0\": want 1 to 64 (default 8; the most nodes that deliver at once), at Testfile:2"},
		{"replicas 0", "nats nats://n1:4222 {\n\treplicas 0\n}", "replicas \"0\": want 1 to 5 (1 for one server, 3 for a production cluster), at Testfile:2"},
		{"two auth methods", "nats nats://n1:4222 {\n\ttoken abc\n\tcredentials /x.creds\n}", "use one of credentials, user/password, token or nkey"},
		{"user without password", "nats nats://n1:4222 {\n\tuser u\n}", "user and password go together"},
		{"client cert without key", "nats nats://n1:4222 {\n\ttls {\n\t\tclient_certificate /c.pem\n\t}\n}", "client_certificate needs the certificate file and the key file, at Testfile:3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseNATS(t, tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNATSQueueProvision(t *testing.T) {
	q := &NATSQueue{URLs: []string{"nats://u:s3cret@n1:4222"}, Credentials: filepath.Join(t.TempDir(), "missing.creds")}
	if err := q.Provision(caddy.Context{}); err == nil || !strings.Contains(err.Error(), "credentials file") {
		t.Fatalf("Provision with a missing credentials file: %v", err)
	}
	t.Setenv("CALLHOOK_TEST_NATS_TOKEN", "tok3n")
	q = &NATSQueue{URLs: []string{"nats://u:s3cret@n1:4222"}, Token: "{env.CALLHOOK_TEST_NATS_TOKEN}"}
	if err := q.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	if q.token != "tok3n" {
		t.Errorf("token placeholder expanded to %q", q.token)
	}
	if k := q.Key(); strings.Contains(k, "s3cret") || strings.Contains(k, "tok3n") {
		t.Errorf("Key %q holds a secret; it is logged", k)
	}
	other := &NATSQueue{URLs: []string{"nats://u:s3cret@n1:4222"}, Token: "other"}
	_ = other.Provision(caddy.Context{})
	if other.Key() == q.Key() {
		t.Errorf("a changed token keeps the key %q: a reload would not reconnect with it", q.Key())
	}
}

// TestNATSQueueOpen opens the backend against an in-process server and
// checks a stored setting that changed is a start error naming it.
func TestNATSQueueOpen(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	q := &NATSQueue{URLs: []string{s.ClientURL()}, Stream: "MODTEST"}
	if err := q.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	opened, err := q.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opened.Enqueue(t.Context(), &queue.Envelope{Event: queue.Event{ID: "e1", Target: "t"}}); err != nil {
		t.Fatal(err)
	}
	opened.Close()
	q.Replicas = 3
	if _, err := q.Open(nil); err == nil || !strings.Contains(err.Error(), "replicas 1 but callhook needs 3") {
		t.Fatalf("Open with replicas changed: %v", err)
	}
}
