package nats

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

// srv is the in-process JetStream server every test of the package uses;
// each test maps its directory to a bucket of its own.
var srv *server.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "callhook-nats-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv, err = startServer(dir, -1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
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

// startServer starts an in-process JetStream server storing in dir.
func startServer(dir string, port int) (*server.Server, error) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
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
		o.URLs = []string{srv.ClientURL()}
	}
	if o.Bucket == "" {
		o.Bucket = bucketFor(dir)
	}
	q, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
