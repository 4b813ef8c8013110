package natswq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/queuetest"
)

func env(id string, ds ...*queue.Delivery) *queue.Envelope {
	e := &queue.Envelope{Event: queue.Event{ID: id, Target: "t", Name: "call.ended", CallID: "c-" + id, ReceivedAt: time.Now()}}
	for _, d := range ds {
		d.EventID = id
		d.CallID = "c-" + id
		e.Deliveries = append(e.Deliveries, d)
	}
	return e
}

var seq int

func dlv(webhook, dest, orderKey string) *queue.Delivery {
	seq++
	return &queue.Delivery{
		ID: fmt.Sprintf("d%05d", seq), Target: "t", Event: "call.ended", CallID: "c", Webhook: webhook,
		Destination: dest, OrderKey: orderKey, State: queue.Pending,
		Request:   queue.Request{Method: "POST", URL: "https://example.com/" + webhook},
		CreatedAt: time.Now(),
	}
}

func TestSettingMismatchIsAStartError(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{}).Close()
	_, err := Open(Options{URLs: []string{urls[0]}, Bucket: bucketFor(dir), Replicas: 3, Partitions: 4})
	if err == nil || !strings.Contains(err.Error(), "replicas 1") || !strings.Contains(err.Error(), "`replicas 1`") {
		t.Fatalf("Open with replicas changed: %v; want an error naming the replicas setting", err)
	}
}

func TestConnectionLossAnswersUnavailable(t *testing.T) {
	dir := t.TempDir()
	s, err := startServer(dir, -1)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	q := openTest(t, dir, Options{URLs: []string{s.ClientURL()}})
	defer q.Close()
	ctx := t.Context()
	if _, err := q.Enqueue(ctx, env("u1", dlv("w", "", ""))); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	s.WaitForShutdown()
	start := time.Now()
	_, err = q.Enqueue(ctx, env("u2", dlv("w", "", "")))
	if !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("Enqueue with the server down: %v, want ErrUnavailable", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Enqueue with the server down took %v", el)
	}
	if _, err := q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Minute}); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("Lease with the server down: %v, want ErrUnavailable", err)
	}
	// The same server comes back on the same port: the client reconnects.
	port := addr[strings.LastIndex(addr, ":")+1:]
	var p int
	fmt.Sscan(port, &p)
	s, err = startServer(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	deadline := time.Now().Add(10 * time.Second)
	if err := enqueueBy(ctx, q, env("u2", dlv("w", "", "")), deadline); err != nil {
		t.Fatalf("Enqueue after the server came back: %v", err)
	}
	var got []queue.Lease
	for time.Now().Before(deadline) && len(got) < 2 {
		ls, _ := q.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 200 * time.Millisecond})
		got = append(got, ls...)
	}
	if len(got) != 2 {
		t.Fatalf("leased %d after reconnecting, want the 2 stored", len(got))
	}
}

func TestSecretsNotInErrors(t *testing.T) {
	_, err := Open(Options{URLs: []string{"nats://callhook:hunter2@127.0.0.1:1"}, ConnectTimeout: 200 * time.Millisecond})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Open error %v: want an error without the password", err)
	}
}

// TestConformanceCluster runs the suite once against a three-node
// in-process JetStream cluster with replicas 3.
func TestConformanceCluster(t *testing.T) {
	if testing.Short() || replicas == 3 {
		t.Skip("cluster conformance in -short mode, or TestConformance runs on a cluster already")
	}
	urls := startCluster(t, 3)
	queuetest.Run(t, func(t *testing.T, dir string, o queuetest.Options) queue.Queue {
		return openTest(t, dir, Options{URLs: urls, Replicas: 3, MaxPending: o.MaxPending, DedupWindow: o.DedupWindow})
	})
}

func startCluster(t testing.TB, n int) []string {
	t.Helper()
	ports := make([]int, n)
	var routes []*url.URL
	for i := range n {
		ports[i] = freePort(t)
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])})
	}
	var urls []string
	var servers []*server.Server
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "callhook-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		servers = append(servers, s)
		urls = append(urls, s.ClientURL())
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, s := range servers {
		for !s.JetStreamIsClustered() || s.JetStreamIsLeader() == false && !anyLeader(servers) {
			if ctx.Err() != nil {
				t.Fatal("cluster did not form within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return urls
}

func anyLeader(ss []*server.Server) bool {
	for _, s := range ss {
		if s.JetStreamIsLeader() {
			return true
		}
	}
	return false
}

// enqueueBy enqueues e again and again until it is stored or deadline
// passes (a server coming up), and returns the last error.
func enqueueBy(ctx context.Context, q queue.Queue, e *queue.Envelope, deadline time.Time) error {
	for {
		_, err := q.Enqueue(ctx, e)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a port on 127.0.0.1 nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A node whose NATS server is down when it starts starts anyway: every
// call answers ErrUnavailable (ingest 503) until the server is up, then the
// queue opens by itself, with the cap set meanwhile.
func TestOpenOrWaitStartsBeforeServer(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	start := time.Now()
	q, err := OpenOrWait(Options{URLs: []string{fmt.Sprintf("nats://127.0.0.1:%d", port)}, Bucket: bucketFor(dir)})
	if err != nil {
		t.Fatalf("OpenOrWait with the server down: %v, want a queue that waits", err)
	}
	defer q.Close()
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("OpenOrWait with the server down took %v", el)
	}
	ctx := t.Context()
	_, err = q.Enqueue(ctx, env("w1", dlv("w", "", "")))
	if !errors.Is(err, queue.ErrUnavailable) || !strings.Contains(err.Error(), "no servers available") {
		t.Fatalf("Enqueue before the server is up: %v, want ErrUnavailable saying why", err)
	}
	if _, err := q.Stats(ctx); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("Stats before the server is up: %v, want ErrUnavailable", err)
	}
	lstart := time.Now()
	if ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Minute, Wait: 300 * time.Millisecond}); err != nil || len(ls) != 0 {
		t.Fatalf("Lease before the server is up: %v, %v; want an empty long poll", ls, err)
	}
	if el := time.Since(lstart); el < 250*time.Millisecond {
		t.Errorf("Lease before the server is up returned after %v, want its Wait (300ms)", el)
	}
	q.(interface{ SetMaxPending(int) }).SetMaxPending(1)

	s, err := startServer(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if err := enqueueBy(ctx, q, env("w1", dlv("w", "", "")), time.Now().Add(15*time.Second)); err != nil {
		t.Fatalf("Enqueue after the server came up: %v", err)
	}
	if _, err := q.Enqueue(ctx, env("w2", dlv("w", "", ""))); !errors.Is(err, queue.ErrFull) {
		t.Errorf("Enqueue over the max_pending set before the queue opened: %v, want ErrFull", err)
	}
	ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 3 * time.Second})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease after the queue opened: %d leases, %v; want the one stored", len(ls), err)
	}
	if err := q.Ack(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

// Close of a queue still waiting for NATS stops the background open at
// once (TestMain's leak check sees its goroutines).
func TestOpenOrWaitCloseWhileWaiting(t *testing.T) {
	q, err := OpenOrWait(Options{URLs: []string{fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))}, Bucket: "TWAIT"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // one background try
	start := time.Now()
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close while waiting took %v", el)
	}
	if _, err := q.Enqueue(t.Context(), env("c1", dlv("w", "", ""))); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("Enqueue after Close: %v, want ErrClosed", err)
	}
	if _, err := q.Lease(t.Context(), queue.LeaseRequest{Max: 1, Lease: time.Minute, Wait: time.Second}); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("Lease after Close: %v, want ErrClosed", err)
	}
	if err := q.Close(); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

// What waiting cannot fix is still a start error.
func TestOpenOrWaitConfigErrorsFailAtOnce(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{}).Close()
	q, err := OpenOrWait(Options{URLs: []string{urls[0]}, Bucket: bucketFor(dir), Replicas: 3})
	if err == nil {
		q.Close()
		t.Fatal("OpenOrWait with replicas changed: no error, want the start error naming replicas")
	}
	if !strings.Contains(err.Error(), "`replicas 1`") {
		t.Fatalf("OpenOrWait with replicas changed: %v", err)
	}
}

// A server without JetStream will not grow one by waiting: a start error
// that says how to enable it.
func TestOpenOrWaitServerWithoutJetStream(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	q, err := OpenOrWait(Options{URLs: []string{s.ClientURL()}, Bucket: "TNOJS"})
	if err == nil {
		q.Close()
		t.Fatal("OpenOrWait on a server without JetStream: no error, want a start error")
	}
	if !strings.Contains(err.Error(), "JetStream is not enabled on the server (start nats-server with -js") {
		t.Fatalf("OpenOrWait on a server without JetStream: %v", err)
	}
}

// A node that waited for NATS and then finds a bucket it cannot use keeps
// answering ErrUnavailable, and its error says why.
func TestOpenOrWaitThenMismatch(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	q, err := OpenOrWait(Options{URLs: []string{fmt.Sprintf("nats://127.0.0.1:%d", port)}, Bucket: "TMISMATCH", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	s, err := startServer(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	first, err := Open(Options{URLs: []string{s.ClientURL()}, Bucket: "TMISMATCH"})
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = q.Enqueue(t.Context(), env("m1", dlv("w", "", "")))
		if strings.Contains(fmt.Sprint(err), "replicas 1") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !errors.Is(err, queue.ErrUnavailable) || !strings.Contains(err.Error(), "`replicas 1`") {
		t.Fatalf("Enqueue once NATS answers with a bucket of other replicas: %v, want ErrUnavailable naming the setting", err)
	}
}

// A stream that cannot be placed because a server is offline is waited for
// (OpenOrWait, 503 meanwhile); one the cluster has too few servers for is a
// start error.
func TestPlacementWhilePeerOffline(t *testing.T) {
	for _, c := range []struct {
		desc string
		want bool
	}{
		{"no suitable peers for placement, peer offline", true},
		{"no suitable peers for placement, insufficient resources", false},
	} {
		err := fmt.Errorf("creating stream: %w", &jetstream.APIError{Code: 400, ErrorCode: jsClusterNoPeers, Description: c.desc})
		if got := unreachable(err); got != c.want {
			t.Errorf("unreachable(%q) = %v, want %v", c.desc, got, c.want)
		}
	}
}
