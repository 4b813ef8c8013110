package nats

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callhook/caddy-callhook/module/queue"
	"github.com/callhook/caddy-callhook/module/queue/queuetest"
)

func env(id string, ds ...*queue.Delivery) *queue.Envelope {
	e := &queue.Envelope{Event: queue.Event{ID: id, Target: "t", Name: "call.ended", CallID: "c-" + id, ReceivedAt: time.Now()}}
	for _, d := range ds {
		d.EventID = id
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

// pair opens two queues on one bucket, as two Caddy nodes would.
func pair(t *testing.T) (*Queue, *Queue) {
	dir := t.TempDir()
	a, b := openTest(t, dir, Options{}), openTest(t, dir, Options{})
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestTwoNodesShareWorkOnce(t *testing.T) {
	a, b := pair(t)
	ctx := t.Context()
	const n = 300
	for i := range n / 3 {
		q := a
		if i%2 == 1 {
			q = b
		}
		if _, err := q.Enqueue(ctx, env(fmt.Sprintf("e%d", i), dlv("w1", "https://a:443", ""), dlv("w2", "https://b:443", ""), dlv("w3", "", ""))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	acked := map[string]int{}
	byNode := map[int]int{}
	var wg sync.WaitGroup
	for node, q := range []*Queue{a, b, a, b} {
		wg.Go(func() {
			for {
				mu.Lock()
				done := len(acked) >= n
				mu.Unlock()
				if done {
					return
				}
				ls, err := q.Lease(ctx, queue.LeaseRequest{Max: 7, Lease: time.Minute, Wait: 100 * time.Millisecond, DefaultDestinationBudget: 3})
				if err != nil {
					t.Error(err)
					return
				}
				for _, l := range ls {
					if err := q.Ack(ctx, l.Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
						t.Errorf("ack %s: %v", l.Delivery.ID, err)
					}
					mu.Lock()
					acked[l.Delivery.ID]++
					byNode[node%2]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for id, c := range acked {
		if c != 1 {
			t.Errorf("%s acked %d times", id, c)
		}
	}
	if byNode[0] == 0 || byNode[1] == 0 {
		t.Errorf("one node did all the work: %v", byNode)
	}
	waitFor(t, func() bool { s, _ := b.Stats(ctx); return s.Delivered == n })
	t.Logf("acked per node: %v", byNode)
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOrderAcrossNodes(t *testing.T) {
	a, b := pair(t)
	ctx := t.Context()
	d1, d2, d3 := dlv("w", "", "k"), dlv("w", "", "k"), dlv("w", "", "k")
	if _, err := a.Enqueue(ctx, env("o1", d1, d2)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Enqueue(ctx, env("o2", d3)); err != nil {
		t.Fatal(err)
	}
	ls, err := a.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: time.Second})
	if err != nil || len(ls) != 1 || ls[0].Delivery.ID != d1.ID {
		t.Fatalf("node a leased %v, %v; want only the head %s", ls, err, d1.ID)
	}
	if got, _ := b.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 300 * time.Millisecond}); len(got) != 0 {
		t.Fatalf("node b leased %s while the head of its order key is leased on node a", got[0].Delivery.ID)
	}
	if err := a.Ack(ctx, ls[0].Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
		t.Fatal(err)
	}
	ls, err = b.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 2 * time.Second})
	if err != nil || len(ls) != 1 || ls[0].Delivery.ID != d2.ID {
		t.Fatalf("node b leased %v, %v; want %s", ls, err, d2.ID)
	}
	if err := b.Dead(ctx, ls[0].Token, queue.Attempt{}, "gone"); err != nil {
		t.Fatal(err)
	}
	ls, err = a.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 2 * time.Second})
	if err != nil || len(ls) != 1 || ls[0].Delivery.ID != d3.ID {
		t.Fatalf("node a leased %v, %v; want %s", ls, err, d3.ID)
	}
}

func TestLeaseTakenOverByOtherNode(t *testing.T) {
	a, b := pair(t)
	ctx := t.Context()
	d := dlv("w", "", "")
	if _, err := a.Enqueue(ctx, env("x1", d)); err != nil {
		t.Fatal(err)
	}
	old, err := a.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: 200 * time.Millisecond})
	if err != nil || len(old) != 1 {
		t.Fatalf("lease: %v %v", old, err)
	}
	// Node a "dies" holding it; node b takes it once the lease has ended.
	cur, err := b.Lease(ctx, queue.LeaseRequest{Max: 1, Lease: time.Minute, Wait: 2 * time.Second})
	if err != nil || len(cur) != 1 || cur[0].Delivery.ID != d.ID {
		t.Fatalf("node b leased %v, %v; want %s after a's lease ended", cur, err, d.ID)
	}
	if err := a.Ack(ctx, old[0].Token, queue.Attempt{Start: time.Now(), Status: 200}); !errors.Is(err, queue.ErrStaleLease) {
		t.Fatalf("node a's late Ack: %v, want ErrStaleLease", err)
	}
	if err := b.Ack(ctx, cur[0].Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
		t.Fatal(err)
	}
	got, err := a.Get(ctx, d.ID)
	if err != nil || got.State != queue.Delivered || len(got.Attempts) != 1 {
		t.Fatalf("Get from node a: %+v, %v; want delivered with b's one attempt", got, err)
	}
}

func TestStoredPauseAppliesOnEveryNode(t *testing.T) {
	a, b := pair(t)
	ctx := t.Context()
	if _, err := a.Enqueue(ctx, env("p1", dlv("hot", "", ""), dlv("cool", "", ""))); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPause(ctx, "t", "hot", &queue.Pause{Since: time.Now(), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { p, _ := b.Pauses(ctx); return len(p) == 1 })
	ls, err := b.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute})
	if err != nil || len(ls) != 1 || ls[0].Delivery.Webhook != "cool" {
		t.Fatalf("node b leased %v, %v; want only the webhook not paused on node a", ls, err)
	}
	if err := a.SetPause(ctx, "t", "hot", nil); err != nil {
		t.Fatal(err)
	}
	ls, err = b.Lease(ctx, queue.LeaseRequest{Max: 10, Lease: time.Minute, Wait: 2 * time.Second})
	if err != nil || len(ls) != 1 || ls[0].Delivery.Webhook != "hot" {
		t.Fatalf("after resume node b leased %v, %v; want the hot one", ls, err)
	}
}

func TestDedupAcrossNodes(t *testing.T) {
	a, b := pair(t)
	ctx := t.Context()
	e1 := env("dd1", dlv("w", "", ""))
	e1.DedupKey = "same"
	e2 := env("dd2", dlv("w", "", ""))
	e2.DedupKey = "same"
	if _, err := a.Enqueue(ctx, e1); err != nil {
		t.Fatal(err)
	}
	r, err := b.Enqueue(ctx, e2)
	if err != nil || !r.Duplicate || r.EventID != "dd1" {
		t.Fatalf("second node's Enqueue = %+v, %v; want a duplicate of dd1", r, err)
	}
}

func TestSettingMismatchIsAStartError(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, Options{}).Close()
	_, err := Open(Options{URLs: []string{srv.ClientURL()}, Bucket: bucketFor(dir), Replicas: 3})
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
	if testing.Short() {
		t.Skip("cluster conformance in -short mode")
	}
	urls := startCluster(t, 3)
	queuetest.Run(t, func(t *testing.T, dir string, o queuetest.Options) queue.Queue {
		return openTest(t, dir, Options{URLs: urls, Replicas: 3, MaxPending: o.MaxPending, DedupWindow: o.DedupWindow})
	})
}

func startCluster(t *testing.T, n int) []string {
	t.Helper()
	base := 14280
	var routes []*url.URL
	for i := range n {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", base+i)})
	}
	var urls []string
	var servers []*server.Server
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "callhook-test", Host: "127.0.0.1", Port: base + i},
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

// TestLeaseCancelledMidClaimDropsNothing: the pool cancels a waiting Lease
// whenever a worker finishes. A claim already sent must still come back as
// a lease, or the delivery would sit leased by nobody for a whole lease.
func TestLeaseCancelledMidClaimDropsNothing(t *testing.T) {
	q := openTest(t, t.TempDir(), Options{})
	defer q.Close()
	ctx := t.Context()
	const n = 120
	for i := range n / 4 {
		if _, err := q.Enqueue(ctx, env(fmt.Sprintf("c%d", i), dlv("w1", "", ""), dlv("w2", "", ""), dlv("w3", "", ""), dlv("w4", "", ""))); err != nil {
			t.Fatal(err)
		}
	}
	acked := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; acked < n && time.Now().Before(deadline); i++ {
		lctx, cancel := context.WithTimeout(ctx, time.Duration(i%7)*150*time.Microsecond)
		ls, _ := q.Lease(lctx, queue.LeaseRequest{Max: 9, Lease: time.Minute})
		cancel()
		for _, l := range ls {
			if err := q.Ack(ctx, l.Token, queue.Attempt{Start: time.Now(), Status: 200}); err != nil {
				t.Fatal(err)
			}
			acked++
		}
	}
	if s, _ := q.Stats(ctx); acked != n || s.Leased != 0 {
		t.Fatalf("acked %d of %d; %d left leased by nobody (Stats %+v)", acked, n, s.Leased, s)
	}
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
func freePort(t *testing.T) int {
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
	q, err := OpenOrWait(Options{URLs: []string{srv.ClientURL()}, Bucket: bucketFor(dir), Replicas: 3})
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

// A batch the server refused whole, for being busy or incomplete, is one
// to send again, and in the end a 503 (ErrUnavailable), never a 500; a
// CAS conflict stays a conflict.
func TestBatchRefusalsAreRetryable(t *testing.T) {
	q := &Queue{nc: &natsgo.Conn{}}
	for _, c := range []struct {
		code        jetstream.ErrorCode
		unavailable bool
	}{
		{10176, true}, {10175, true}, {10210, true}, {10211, true},
		{jetstream.JSErrCodeStreamWrongLastSequence, false},
	} {
		err := batchAckError(&jetstream.APIError{Code: 400, ErrorCode: c.code, Description: "x"})
		if got := errors.Is(q.fail(t.Context(), "storing", err), queue.ErrUnavailable); got != c.unavailable {
			t.Errorf("batch refused with %d: unavailable %v, want %v (%v)", c.code, got, c.unavailable, err)
		}
		if c.code == jetstream.JSErrCodeStreamWrongLastSequence && !isCASConflict(err) {
			t.Errorf("a CAS conflict in a batch is no longer seen as one: %v", err)
		}
	}
}

// A dedup key that conflicts but cannot be read (here a delete marker
// stands in for a winner's write not yet applied) is waited for, then
// answered ErrUnavailable: the client's retry can succeed, so not a 500.
func TestDedupConflictNotReadableIsUnavailable(t *testing.T) {
	q := openTest(t, t.TempDir(), Options{})
	defer q.Close()
	e := env("dc1", dlv("w", "", ""))
	e.DedupKey = "t\x00call.ended\x00c-dc1"
	if err := q.kv.Delete(t.Context(), dedupKey(e.DedupKey)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := q.Enqueue(t.Context(), e)
	if !errors.Is(err, queue.ErrUnavailable) || !strings.Contains(err.Error(), "dedup key") {
		t.Fatalf("Enqueue whose dedup key conflicts unreadably: %v, want ErrUnavailable about the dedup key", err)
	}
	if el := time.Since(start); el < dedupSettle {
		t.Errorf("gave up after %v, want the %v a replicated write may take to apply", el, dedupSettle)
	}
}
