package main

import (
	"errors"
	"fmt"
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

// natsQueueBlock is the S1nats Caddy's queue: the local server, replicas 1.
func natsQueueBlock() string {
	return fmt.Sprintf("queue nats nats://127.0.0.1:%d {\n\t\t\tstream BENCH\n\t\t}", portNATS)
}

// s1NATS measures S1 with the queue on a local JetStream server that
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
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\njetstream {\n\tstore_dir: %q\n\tsync_interval: always\n}\n",
		portNATS, filepath.Join(dir, "js"))), 0o600); err != nil {
		return err
	}
	ns, err := start("nats-server", dir, filepath.Join(dir, "nats.log"), b.o.natsServer, "-c", conf)
	if err != nil {
		return err
	}
	defer ns.stop(10 * time.Second)
	if err := waitListening(ns, fmt.Sprintf("127.0.0.1:%d", portNATS), 30*time.Second); err != nil {
		return err
	}
	p, err := startCaddy(b.bin, dir, "S1nats", caddyfile(caddyfileConfig{
		queueBlock: natsQueueBlock(),
		workers:    b.o.workers,
		site:       callhookSite(s1Webhook(portSinkS1, "")),
	}))
	if err != nil {
		return err
	}
	defer p.stop(30 * time.Second)
	r.note("nats-server %s, replicas 1, sync_interval always", b.o.natsServer)
	return b.measure(r, p, b.url(portCaddy), "S1nats", 1, true, "S1nats")
}
