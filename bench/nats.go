package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// portNATS is the local nats-server of the S1nats row.
var portNATS int

// findNATSServer returns the nats-server binary: -nats-server, else PATH,
// else GOBIN or GOPATH/bin; "" when there is none.
func findNATSServer(flagged string) string {
	if flagged != "" {
		return flagged
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		dirs = append(dirs, filepath.Join(strings.TrimSpace(string(out)), "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "nats-server")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// natsQueueBlock is the S1nats Caddy's queue: the local servers.
func natsQueueBlock(replicas int) string {
	var urls []string
	for i := range replicas {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", portNATS+i))
	}
	return fmt.Sprintf("queue nats %s {\n\t\t\tstream BENCH\n\t\t\treplicas %d\n\t\t}", strings.Join(urls, " "), replicas)
}

// natsConfig is server i of n: alone, or clustered on 127.0.0.1 (client
// ports portNATS+i, cluster ports portNATS+3+i, monitoring portNATS+6+i).
func natsConfig(dir string, i, n int) string {
	conf := fmt.Sprintf("server_name: b%d\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\njetstream {\n\tstore_dir: %q\n\tsync_interval: always\n}\n",
		i, portNATS+i, portNATS+6+i, filepath.Join(dir, fmt.Sprintf("js%d", i)))
	if n > 1 {
		var routes []string
		for j := range n {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", portNATS+3+j))
		}
		conf += fmt.Sprintf("cluster {\n\tname: bench\n\tlisten: 127.0.0.1:%d\n\troutes: [%s]\n}\n", portNATS+3+i, strings.Join(routes, ", "))
	}
	return conf
}

// waitJetStream waits until a server's /healthz answers 200 (JetStream up,
// and in a cluster a meta leader known).
func waitJetStream(i int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", portNATS+6+i))
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("nats-server %d: JetStream not healthy within %s", i, within)
}

// s1NATS measures S1 with the queue on local JetStream servers (one, or a
// cluster of -nats-replicas) that
// fsyncs every write before acknowledging it (sync_interval: always), the
// setting under which "202 means stored" holds on NATS.
func (b *bench) s1NATS(r *result) error {
	if b.o.natsServer == "" {
		return errors.New("nats-server not found (install it: go install github.com/nats-io/nats-server/v2@v2.15.2, or pass -nats-server)")
	}
	dir := filepath.Join(b.tmp, "S1nats")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	n := max(b.o.natsReplicas, 1)
	for i := range n {
		conf := filepath.Join(dir, fmt.Sprintf("nats%d.conf", i))
		if err := os.WriteFile(conf, []byte(natsConfig(dir, i, n)), 0o600); err != nil {
			return err
		}
		ns, err := start(fmt.Sprintf("nats-server %d", i), dir, filepath.Join(dir, fmt.Sprintf("nats%d.log", i)), b.o.natsServer, "-c", conf)
		if err != nil {
			return err
		}
		defer ns.Stop(10 * time.Second)
		if err := ns.WaitListening(30*time.Second, fmt.Sprintf("127.0.0.1:%d", portNATS+i)); err != nil {
			return err
		}
	}
	for i := range n {
		if err := waitJetStream(i, time.Minute); err != nil {
			return err
		}
	}
	p, err := startCaddy(b.bin, dir, "S1nats", caddyfile(caddyfileConfig{
		queueBlock: natsQueueBlock(n),
		workers:    b.o.workers,
		site:       callhookSite(s1Webhook(portSinkS1, "")),
	}))
	if err != nil {
		return err
	}
	defer p.Stop(30 * time.Second)
	r.note("%d nats-server on 127.0.0.1, replicas %d, sync_interval always", n, n)
	if err := b.measure(r, p, b.url(portCaddy), "S1nats", 1, true, "S1nats"); err != nil {
		return err
	}
	// The engine itself on the same servers, right after: what S1 on NATS
	// is a fraction of.
	var urls []string
	for i := range n {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", portNATS+i))
	}
	eng, err := engineRate(strings.Join(urls, ","), n, b.o.duration)
	if err != nil {
		r.note("engine not measured: %v", err)
		return nil
	}
	r.note("engine on the same servers (16 async publishers + 4 pull consumers acking, 300 B, replicas %d): %.0f msgs/s; S1 nats = %.3fx of it", n, eng, r.deliveriesOut/eng)
	return nil
}
