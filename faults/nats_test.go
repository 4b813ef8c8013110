//go:build linux

package faults

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// The NATS scenarios run a three-server JetStream cluster (real nats-server
// processes, replicas 3, sync_interval always) and two or three Caddy nodes
// sharing one queue on it, all on 127.0.0.1. They need the nats-server
// binary (.ci/run installs it: go install github.com/nats-io/nats-server/v2@v2.15.2).

// Caddy nodes of the NATS scenarios, from portBase (one pair each).
const portsNATS = 80

// natsBase is the first of the ports the NATS servers listen on (client,
// cluster and monitoring ports of three servers, ten per scenario): 14200
// by default, and moved with CALLHOOK_FAULTS_PORT_BASE like the Caddy
// ports, so that two runs of the suite on one machine do not join each
// other's clusters.
func natsBase() int { return portBase + 4700 }

func natsServerBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(goPath(), "bin")} {
		if dir == "" {
			continue
		}
		if p := filepath.Join(dir, "nats-server"); fileExists(p) {
			return p
		}
	}
	skipNoNATS(t)
	return ""
}

func goPath() string {
	if p := os.Getenv("GOPATH"); p != "" {
		return strings.Split(p, string(os.PathListSeparator))[0]
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// natsProc is one nats-server process of a cluster, restartable on the same
// store directory and ports.
type natsProc struct {
	*caddyproc.Proc
	t      *testing.T
	client int
	mon    int
}

// natsCluster starts three JetStream servers clustered on 127.0.0.1 and
// waits until JetStream answers on each.
func natsCluster(t *testing.T, scenario int) []*natsProc {
	t.Helper()
	ps := natsClusterDown(t, scenario)
	startCluster(ps)
	return ps
}

// startCluster starts the servers and waits until JetStream answers on each.
func startCluster(ps []*natsProc) {
	for _, p := range ps {
		p.start()
	}
	for _, p := range ps {
		p.waitHealthy()
	}
}

// natsClusterDown sets up three clustered JetStream servers without
// starting them.
func natsClusterDown(t *testing.T, scenario int) []*natsProc {
	t.Helper()
	bin := natsServerBinary(t)
	base := natsBase() + 10*scenario
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", base+3+i))
	}
	var ps []*natsProc
	for i := range 3 {
		dir := t.TempDir()
		confFile := filepath.Join(dir, "nats.conf")
		p := &natsProc{t: t, client: base + i, mon: base + 6 + i, Proc: caddyproc.New(caddyproc.Options{
			Name:      fmt.Sprintf("nats-server n%d", i),
			Command:   []string{bin, "-c", confFile},
			Home:      dir,
			Log:       filepath.Join(dir, "nats.log"),
			ErrorTail: 3000,
		})}
		conf := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
	store_dir: %q
	sync_interval: always
}
cluster {
	name: callhook-faults
	listen: 127.0.0.1:%d
	routes: [%s]
}
`, i, p.client, p.mon, filepath.Join(dir, "js"), base+3+i, strings.Join(routes, ", "))
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	t.Cleanup(func() {
		for _, p := range ps {
			if p.Running() {
				_ = p.Proc.Kill()
			}
			if t.Failed() {
				t.Logf("last lines of nats-server log %s:\n%s", p.LogPath(), p.LogTail(3000))
			}
		}
	})
	return ps
}

func (p *natsProc) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.client) }

func (p *natsProc) start() {
	p.t.Helper()
	if err := p.Proc.Start(); err != nil {
		p.t.Fatal(err)
	}
	if err := p.WaitListening(30*time.Second, fmt.Sprintf("127.0.0.1:%d", p.client)); err != nil {
		p.t.Fatal(err)
	}
}

// waitHealthy waits until the server's JetStream is part of a cluster with
// a leader (its /healthz answers 200).
func (p *natsProc) waitHealthy() {
	p.t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		res, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.mon))
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("nats-server on %d not healthy within 60s", p.client)
}

func (p *natsProc) kill9() {
	p.t.Helper()
	if err := p.Proc.Kill(); err != nil {
		p.t.Fatal(err)
	}
}

// natsSite is a site whose queue is the cluster's, shared by every node.
func natsSite(ns []*natsProc, hooks string) site {
	var urls []string
	for _, n := range ns {
		urls = append(urls, n.url())
	}
	return site{
		queueBlock: fmt.Sprintf("queue nats %s {\n\t\t\tstream FAULTS\n\t\t\treplicas 3\n\t\t}", strings.Join(urls, " ")),
		globals:    "workers 16",
		hooks:      hooks,
	}
}

// nodes starts n Caddy nodes on the same site.
func nodes(t *testing.T, n int, s site) []*caddyProc {
	t.Helper()
	var ps []*caddyProc
	for i := range n {
		p := newCaddy(t, portsNATS+2*i)
		p.start(s)
		ps = append(ps, p)
	}
	return ps
}

// spread posts events to the nodes round-robin, as a load balancer would:
// an event that gets no answer or a 503 is posted again to the next node,
// until one answers 200 or 202.
type spread struct {
	posters []*poster
	led     *ledger
	n       atomic.Int64
}

func newSpread(t *testing.T, led *ledger, ps []*caddyProc) *spread {
	s := &spread{led: led}
	for _, p := range ps {
		s.posters = append(s.posters, newPoster(t, p.base(), led))
	}
	return s
}

func (s *spread) send(call string, deadline time.Time) error {
	i := int(s.n.Add(1))
	for {
		p := s.posters[i%len(s.posters)]
		status, a, _, err := p.post(call, 32)
		switch {
		case err == nil && (status == http.StatusOK || status == http.StatusAccepted):
			if len(a.Deliveries) == 0 {
				return fmt.Errorf("event %s: answer %d names no deliveries", call, status)
			}
			return nil
		case err == nil && status != http.StatusServiceUnavailable:
			return fmt.Errorf("event %s: unexpected answer %d: %s", call, status, a.Error)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("event %s: no 200/202 by the deadline; last: status %d, error %v, %s", call, status, err, a.Error)
		}
		why := fmt.Sprintf("%d %s", status, a.Error)
		if err != nil {
			why = "no answer"
			if errors.Is(err, syscall.ECONNREFUSED) {
				why = "connection refused"
			}
		}
		s.led.repost(why)
		i++
		time.Sleep(20 * time.Millisecond)
	}
}

// load posts events from several clients and calls at(k) once the k-th
// event of marks has been answered, while the clients keep posting.
func (s *spread) load(t *testing.T, prefix string, events, clients int, marks []int, at func(k int)) {
	t.Helper()
	work := make(chan int)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range work {
				if err := s.send(fmt.Sprintf("%s-%d", prefix, i), time.Now().Add(2*time.Minute)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		defer close(work)
		for i := range events {
			work <- i
		}
	}()
	for k, m := range marks {
		deadline := time.Now().Add(2 * time.Minute)
		for s.led.eventCount() < m {
			if time.Now().After(deadline) {
				t.Fatalf("%s: only %d events answered after 2 minutes", prefix, s.led.eventCount())
			}
			time.Sleep(5 * time.Millisecond)
		}
		at(k)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.led.eventCount(); n != events {
		t.Fatalf("%s: %d of %d events were answered", prefix, n, events)
	}
}

func flaky(int) reply {
	if rand.IntN(10) == 0 {
		return reply{status: http.StatusServiceUnavailable}
	}
	return reply{status: http.StatusOK, delay: time.Duration(rand.IntN(20)) * time.Millisecond}
}

// A leased delivery of a node that died is attempted again once its lease
// ends: the default webhook timeout plus 30 s.
const natsDrain = 2 * time.Minute

// TestNATSKillCaddyNode: three Caddy nodes share the queue; one is killed
// with SIGKILL under load and not restarted. Its accepted events and the
// deliveries it held must be delivered by the other two.
func TestNATSKillCaddyNode(t *testing.T) {
	const events, clients = 300, 6
	ns := natsCluster(t, 0)
	rc := newSink(t, flaky)
	ps := nodes(t, 3, natsSite(ns, hook("crm", rc.url())+hook("erp", rc.url(), "method PUT")))
	led := newLedger()
	sp := newSpread(t, led, ps)
	var inflight int
	sp.load(t, "natskill", events, clients, []int{events / 3}, func(int) {
		inflight = rc.active()
		ps[1].kill9()
		t.Logf("kill -9 of Caddy node 2 after %d accepted events, %d attempts in flight", led.eventCount(), inflight)
	})
	tl := waitDelivered(led, natsDrain, rc)
	verify(t, "nats_kill_caddy_node", led, tl, rc)
	if tl.accepted != 2*events {
		t.Errorf("%d deliveries accepted for %d events with 2 webhooks each", tl.accepted, events)
	}
	summary(t, "nats_kill_caddy_node", tl, fmt.Sprintf(" nodes=3 killed=1 reposts=%d requests=%d", led.reposts, tl.requests))
}

// TestNATSKillNATSServer kills one of the three NATS servers with SIGKILL
// under load (the stream's leader or not) and restarts it later. Ingest may
// answer 503 while the stream elects a new leader; nothing accepted may be
// lost.
func TestNATSKillNATSServer(t *testing.T) {
	const events, clients = 300, 6
	ns := natsCluster(t, 1)
	rc := newSink(t, flaky)
	ps := nodes(t, 2, natsSite(ns, hook("crm", rc.url())+hook("erp", rc.url(), "method PUT")))
	led := newLedger()
	sp := newSpread(t, led, ps)
	sp.load(t, "natsserver", events, clients, []int{events / 3, 2 * events / 3}, func(k int) {
		if k == 0 {
			ns[0].kill9()
			t.Logf("kill -9 of NATS server n0 after %d accepted events", led.eventCount())
			return
		}
		ns[0].start()
		t.Logf("NATS server n0 restarted after %d accepted events", led.eventCount())
	})
	tl := waitDelivered(led, natsDrain, rc)
	verify(t, "nats_kill_nats_server", led, tl, rc)
	summary(t, "nats_kill_nats_server", tl, fmt.Sprintf(" nodes=2 reposts=%d (%s) requests=%d", led.reposts, led.repostReasons(), tl.requests))
}

// TestNATSClusterRestart kills all three NATS servers at once (SIGKILL) under
// load, keeps them down for two seconds and starts them again. Ingest answers
// 503 meanwhile; the Caddy nodes reconnect by themselves and deliver
// everything accepted before and after.
func TestNATSClusterRestart(t *testing.T) {
	const events, clients = 240, 6
	ns := natsCluster(t, 2)
	rc := newSink(t, flaky)
	ps := nodes(t, 2, natsSite(ns, hook("crm", rc.url())+hook("erp", rc.url(), "method PUT")))
	led := newLedger()
	sp := newSpread(t, led, ps)
	sp.load(t, "natsrestart", events, clients, []int{events / 3}, func(int) {
		for _, n := range ns {
			n.kill9()
		}
		t.Logf("kill -9 of all three NATS servers after %d accepted events", led.eventCount())
		time.Sleep(2 * time.Second)
		for _, n := range ns {
			n.start()
		}
		t.Logf("NATS cluster restarted")
	})
	tl := waitDelivered(led, natsDrain, rc)
	verify(t, "nats_cluster_restart", led, tl, rc)
	summary(t, "nats_cluster_restart", tl, fmt.Sprintf(" nodes=2 reposts=%d (%s) requests=%d", led.reposts, led.repostReasons(), tl.requests))
}

// TestNATSReceiverOutageNodeDies: the receiver refuses connections while
// events flow through three nodes, one node is killed with SIGKILL during
// the outage, then the receiver comes back. Everything accepted arrives,
// including the retries the dead node had scheduled.
func TestNATSReceiverOutageNodeDies(t *testing.T) {
	const events, clients = 150, 4
	ns := natsCluster(t, 3)
	rc := newSink(t, okReply)
	rc.down()
	ps := nodes(t, 3, natsSite(ns, hook("crm", rc.url())+hook("erp", rc.url(), "method PUT")))
	led := newLedger()
	sp := newSpread(t, led, ps)
	sp.load(t, "natsoutage", events, clients, []int{events / 2}, func(int) {
		ps[0].kill9()
		t.Logf("kill -9 of Caddy node 1 during the receiver outage, after %d accepted events", led.eventCount())
	})
	time.Sleep(time.Second)
	rc.up()
	t.Logf("receiver back up")
	tl := waitDelivered(led, natsDrain, rc)
	verify(t, "nats_receiver_outage_node_dies", led, tl, rc)
	summary(t, "nats_receiver_outage_node_dies", tl, fmt.Sprintf(" nodes=3 killed=1 reposts=%d requests=%d", led.reposts, tl.requests))
}

// TestNATSNodeStartsBeforeNATS: a Caddy node boots while its whole NATS
// cluster is down, as after a power cut that brings the edge back first.
// Caddy starts and serves; callhook answers 503 (JSON, Retry-After) and
// accepts nothing until the cluster is up, then opens its queue by itself
// and accepts and delivers every event, with no restart.
func TestNATSNodeStartsBeforeNATS(t *testing.T) {
	const events, clients = 120, 4
	ns := natsClusterDown(t, 4)
	rc := newSink(t, okReply)
	node := newCaddy(t, portsNATS)
	node.startListening(natsSite(ns, hook("crm", rc.url())+hook("erp", rc.url(), "method PUT")))

	status, a, h, err := newPoster(t, node.base(), newLedger()).post("natsboot-early", 0)
	if err != nil || status != http.StatusServiceUnavailable || !strings.Contains(a.Error, "retry later") || h.Get("Retry-After") == "" {
		t.Fatalf("event posted while NATS is down: status %d, error %q, Retry-After %q, %v; want a JSON 503 with Retry-After",
			status, a.Error, h.Get("Retry-After"), err)
	}

	led := newLedger()
	sp := newSpread(t, led, []*caddyProc{node})
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := c; i < events; i += clients {
				if err := sp.send(fmt.Sprintf("natsboot-%d", i), time.Now().Add(2*time.Minute)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	time.Sleep(2 * time.Second) // the clients are answered 503 meanwhile
	if n := led.eventCount(); n != 0 {
		t.Fatalf("%d events accepted while NATS was down", n)
	}
	startCluster(ns)
	t.Logf("NATS cluster started after %d posts answered 503", led.repostCount())
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if led.reposts == 0 {
		t.Errorf("no post was answered 503 while NATS was down")
	}
	tl := waitDelivered(led, natsDrain, rc)
	verify(t, "nats_node_starts_before_nats", led, tl, rc)
	if tl.accepted != 2*events {
		t.Errorf("%d deliveries accepted for %d events with 2 webhooks each", tl.accepted, events)
	}
	summary(t, "nats_node_starts_before_nats", tl, fmt.Sprintf(" nodes=1 reposts=%d (%s) requests=%d", led.reposts, led.repostReasons(), tl.requests))
}
