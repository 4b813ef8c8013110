package natswq

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

// srv is the in-process JetStream server the package's tests use, with the
// server's default limits (max_payload 1 MB among them); each test maps its
// directory to buckets of its own. CALLHOOK_NATS_CLUSTER (comma-separated
// URLs of a JetStream cluster of three servers) runs them against that
// cluster instead, with replicas 3.
var (
	srv      *server.Server
	urls     []string
	replicas = 1
)

func TestMain(m *testing.M) {
	if c := os.Getenv("CALLHOOK_NATS_CLUSTER"); c != "" {
		urls, replicas = strings.Split(c, ","), 3
		code := m.Run()
		os.Exit(code)
	}
	dir, err := os.MkdirTemp("", "callhook-natswq-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv, err = startServer(dir, -1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	urls = []string{srv.ClientURL()}
	code := m.Run()
	srv.Shutdown()
	srv.WaitForShutdown()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startServer starts an in-process JetStream server storing in dir, with
// default limits.
func startServer(dir string, port int) (*server.Server, error) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		return nil, err
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("nats server not ready")
	}
	return s, nil
}

// bucketFor maps a test directory to a bucket name.
func bucketFor(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "T" + hex.EncodeToString(sum[:8])
}

func openTest(t testing.TB, dir string, o Options) *Queue {
	t.Helper()
	if o.URLs == nil {
		o.URLs = urls
	}
	if o.Bucket == "" {
		o.Bucket = bucketFor(dir)
	}
	if o.Node == "" {
		o.Node = "node-" + o.Bucket
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Replicas == 0 {
		o.Replicas = replicas
	}
	// As OpenOrWait does in a node: a cluster that cannot place a stream
	// now (a peer missed its heartbeats on a loaded machine) is waited for.
	q, err := Open(o)
	for end := time.Now().Add(30 * time.Second); err != nil && unreachable(err) && time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
		q, err = Open(o)
	}
	if err != nil {
		t.Fatal(err)
	}
	return q
}
