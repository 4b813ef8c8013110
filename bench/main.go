// Command bench is callhook's benchmark harness: it builds Caddy with the
// plugin from this repository and measures, in one run on one machine,
// callhook against the baselines it should be compared with: Caddy's own
// `respond 202` (the ingest ceiling of any Caddy handler) and a bare Go relay
// (the same webhooks, no durability). Everything listens on 127.0.0.1,
// ports 9400-9499 (-port-base or CALLHOOK_BENCH_PORT_BASE moves them). It prints one markdown table.
//
//	go run ./bench              # the full run (about 20 minutes)
//	go run ./bench -quick       # a smoke run (about 2 minutes)
//	go run ./bench -only=S1,relay1 -duration=10s
//
// CPU profiles of the Caddy under test are saved to bench/results/.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// options are the harness's flags.
type options struct {
	repo, caddyBin, results string
	duration, latDuration   time.Duration
	drainTimeout            time.Duration
	conns, workers          int
	relayQueue, maxInflight int
	rates                   []int
	slowDepth, slowConns    int
	profile                 time.Duration
	sinkDelay               time.Duration
	only                    []string
	keep                    bool
	portBase                int
	natsServer              string
	natsReplicas            int
}

// envInt reads an integer environment variable, or def if unset or bad.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// rowNames are the rows of the table, in the order they run: baselines
// first, so every callhook figure has its baseline from the same run.
var rowNames = []string{"respond202", "relay1", "relay5", "S1", "S1nats", "S5", "SLOW"}

func main() {
	var (
		o         options
		role      = flag.String("role", "", "internal: `relay` runs the bare Go relay (the harness starts it)")
		relayMode = flag.String("relay-mode", "s1", "internal: the relay's webhooks, s1 or s5")
		rates     = flag.String("rates", "200,1000", "open-loop event rates (per second) for the end-to-end latency columns")
		only      = flag.String("only", "", "comma-separated rows to run: "+strings.Join(rowNames, ",")+" (default all); a ratio needs its baseline row in the same run")
		quick     = flag.Bool("quick", false, "a smoke run of about 2 minutes: short phases, -slow-depth=20000, no profiles")
	)
	flag.StringVar(&o.repo, "repo", ".", "repository root (where ./xcaddy is)")
	flag.StringVar(&o.caddyBin, "caddy", "", "use this Caddy binary instead of building one (it must include callhook)")
	flag.StringVar(&o.results, "results", "bench/results", "where profiles and the table are saved")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "closed-loop load per throughput measurement")
	flag.DurationVar(&o.latDuration, "lat-duration", 20*time.Second, "open-loop load per latency rate")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Minute, "how long to wait for queued deliveries to arrive")
	flag.IntVar(&o.conns, "conns", 64, "closed-loop connections")
	flag.IntVar(&o.workers, "workers", 32, "delivery concurrency: callhook's workers and per_destination, and the relay's workers")
	flag.IntVar(&o.relayQueue, "relay-queue", 10000, "the relay's in-memory queue length (webhooks)")
	flag.IntVar(&o.maxInflight, "max-inflight", 2000, "open loop: most requests outstanding at once")
	flag.IntVar(&o.slowDepth, "slow-depth", 1_000_000, "SLOW: queued deliveries to grow to while the receiver is paused")
	flag.IntVar(&o.slowConns, "slow-conns", 0, "SLOW: closed-loop connections while the queue grows (default -conns)")
	flag.DurationVar(&o.profile, "profile", 20*time.Second, "CPU profile length taken from the Caddy admin endpoint during S1, S5 and SLOW (0: none)")
	flag.DurationVar(&o.sinkDelay, "sink-latency", 0, "fixed latency the webhook sink adds before answering")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (queues, Caddy logs)")
	natsServer := flag.String("nats-server", "", "nats-server binary for the S1nats row (default: on PATH or in GOBIN/GOPATH/bin; without one the row is left out of a full run)")
	flag.IntVar(&o.natsReplicas, "nats-replicas", 1, "S1nats: 1 runs one nats-server; 3 runs a local three-server cluster with replicas 3")
	portBase := flag.Int("port-base", envInt("CALLHOOK_BENCH_PORT_BASE", defaultPortBase), "first of the 100 ports on 127.0.0.1 the harness listens on (env CALLHOOK_BENCH_PORT_BASE)")
	flag.Parse()
	setPorts(*portBase)
	o.portBase = *portBase

	if *role == "relay" {
		if err := runRelay(fmt.Sprintf("127.0.0.1:%d", portRelay), *relayMode, o.workers, o.relayQueue, sinkPorts); err != nil {
			log.Fatalf("relay: %v", err)
		}
		return
	}

	if *quick {
		setDefault("duration", func() { o.duration = 5 * time.Second })
		setDefault("lat-duration", func() { o.latDuration = 5 * time.Second })
		setDefault("slow-depth", func() { o.slowDepth = 20_000 })
		setDefault("profile", func() { o.profile = 0 })
	}
	var err error
	if o.rates, err = parseInts(*rates); err != nil {
		log.Fatalf("-rates: %v", err)
	}
	if o.only, err = parseOnly(*only); err != nil {
		log.Fatalf("-only: %v", err)
	}
	o.natsServer = findNATSServer(*natsServer)
	if o.natsServer == "" && strings.TrimSpace(*only) == "" {
		o.only = slices.DeleteFunc(slices.Clone(o.only), func(n string) bool { return n == "S1nats" })
		progress("S1nats left out: no nats-server on PATH or in GOBIN (go install github.com/nats-io/nats-server/v2@v2.15.2)")
	}
	if o.slowConns == 0 {
		o.slowConns = o.conns
	}
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

// setDefault applies a -quick default unless the flag was given.
func setDefault(name string, apply func()) {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	if !given {
		apply()
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive whole number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseOnly(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return rowNames, nil
	}
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		i := slices.IndexFunc(rowNames, func(n string) bool { return strings.EqualFold(n, f) })
		if i < 0 {
			return nil, fmt.Errorf("unknown row %q: expected some of %s", f, strings.Join(rowNames, ","))
		}
		out = append(out, rowNames[i])
	}
	return out, nil
}

func run(o options) error {
	if err := portsFree(); err != nil {
		return err
	}
	started := time.Now()
	load0 := loadAvg()
	if err := os.MkdirAll(o.results, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "callhook-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		progress("temporary files in %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	bin := o.caddyBin
	needCaddy := slices.ContainsFunc(o.only, func(n string) bool { return n != "relay1" && n != "relay5" })
	if bin == "" && needCaddy {
		bin = filepath.Join(tmp, "caddy")
		progress("building caddy from %s/xcaddy", o.repo)
		t := time.Now()
		if err := caddyproc.Build(o.repo, bin); err != nil {
			return err
		}
		progress("built in %s", time.Since(t).Round(time.Second))
	}

	sk := &sink{delay: o.sinkDelay, holdMax: 5 * time.Minute}
	if err := sk.listen(append(slices.Clone(sinkPorts), portSinkSlow)...); err != nil {
		return err
	}
	defer sk.close()

	b := &bench{o: o, bin: bin, tmp: tmp, sink: sk, stamp: started.Format("20060102-150405"), rows: map[string]*result{}}
	// The cost of durability on this disk, for the latency targets.
	fsync, err := fsyncLatency(tmp, 500)
	if err != nil {
		return err
	}
	progress("fsync on the queue's disk (%s): p50 %s, p99 %s", tmp, ms(fsync.P50), ms(fsync.P99))
	for _, name := range o.only {
		progress("== %s", name)
		r := b.runRow(name)
		b.rows[name] = r
		if r.err != nil {
			progress("%s failed: %v", name, r.err)
		}
	}

	table := b.table()
	footer := fmt.Sprintf("\nfsync (4 KiB write + fdatasync) on the queue's disk: p50 %s, p99 %s over %d. Load average before: %s; after: %s. %d CPUs, %s. Total run time %s. Flags: %s\n",
		ms(fsync.P50), ms(fsync.P99), fsync.N, load0, loadAvg(), runtime.NumCPU(), runtime.Version(), time.Since(started).Round(time.Second), flagsUsed())
	fmt.Print(table)
	fmt.Print(footer)
	out := filepath.Join(o.results, "bench-"+b.stamp+".md")
	if err := os.WriteFile(out, []byte(table+footer+b.details()), 0o644); err != nil {
		return err
	}
	progress("table and details saved to %s", out)
	return nil
}

// progress logs to stderr, so stdout carries only the table.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// flagsUsed is the command line's flags, for the record of a run.
func flagsUsed() string {
	if len(os.Args) < 2 {
		return "(defaults)"
	}
	return strings.Join(os.Args[1:], " ")
}
