package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// bench holds one run: its options, the sink and every row's result.
type bench struct {
	o     options
	bin   string
	tmp   string
	sink  *sink
	stamp string
	rows  map[string]*result
}

// result is what one row measured. Zero values were not measured.
type result struct {
	eventsIn      float64 // events/s accepted (2xx)
	deliveriesOut float64 // deliveries/s received by the sink
	cpuPer1k      float64 // CPU seconds of the process under test per 1000 deliveries (events for respond 202)
	// duringLoad is deliveries/s received while the closed-loop load ran,
	// and duringRatio that over the events/s accepted meanwhile.
	duringLoad, duringRatio float64
	lat                     map[int]latencies
	notes                   []string

	slow *slowResult
	err  error
}

func (r *result) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// slowResult is SLOW's extra figures.
type slowResult struct {
	depth        int64
	ingest       float64 // events/s while the queue grew
	ingestCPU    float64 // CPU s per 1000 events while growing
	drain        float64 // deliveries/s after the release
	drainCPU     float64
	samples      []memSample
	afterDrain   *memSample
	queueFileMiB float64
	// emptyMiB is the queue directory at start, prunedMiB after the drain
	// and the retention prune.
	emptyMiB, prunedMiB float64
}

// memSample is the Caddy process's memory at one queue depth.
type memSample struct {
	point int64 // the depth the sample was taken for (0 after the drain)
	depth int64 // the depth it saw
	heap  heapStats
	mem   memory
	at    time.Duration // since the queue started growing
}

func (b *bench) runRow(name string) *result {
	r := &result{lat: map[int]latencies{}}
	var err error
	switch name {
	case "respond202":
		err = b.respond202(r)
	case "relay1":
		err = b.relay(r, "s1", 1, true)
	case "relay5":
		err = b.relay(r, "s5", 5, false)
	case "S1":
		err = b.callhook(r, "S1", s1Webhook(portSinkS1, ""), 1, true)
	case "S1nats":
		err = b.s1NATS(r)
	case "S5":
		err = b.callhook(r, "S5", s5Webhooks(), 5, false)
	case "SLOW":
		err = b.slow(r)
	}
	r.err = err
	return r
}

func (b *bench) url(port int) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", port, ingestPath)
}

// respond202 measures Caddy answering 202 without doing anything: the most
// events/s any Caddy handler could accept on this machine.
func (b *bench) respond202(r *result) error {
	dir := filepath.Join(b.tmp, "respond202")
	p, err := startCaddy(b.bin, dir, "respond 202", caddyfile(caddyfileConfig{site: respondSite()}))
	if err != nil {
		return err
	}
	defer p.Stop(10 * time.Second)
	g := newGenerator(b.url(portCaddy), b.stamp+"-r-", b.o.conns)
	defer g.close()
	g.closedLoop(b.o.conns, 2*time.Second, nil, nil) // warm up

	cpu0, err := procCPU(p.Pid())
	if err != nil {
		return err
	}
	res := g.closedLoop(b.o.conns, b.o.duration, nil, nil)
	cpu1, err := procCPU(p.Pid())
	if err != nil {
		return err
	}
	r.eventsIn = float64(res.OK) / res.Elapsed.Seconds()
	if res.OK > 0 {
		r.cpuPer1k = (cpu1 - cpu0).Seconds() / float64(res.OK) * 1000
	}
	r.note("CPU per 1000 requests")
	noteLoad(r, res)
	return nil
}

// relay measures the bare Go relay in mode s1 or s5.
func (b *bench) relay(r *result, mode string, perEvent int, latency bool) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir := filepath.Join(b.tmp, "relay-"+mode)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p, err := start("relay ("+mode+")", dir, filepath.Join(dir, "relay.log"), exe,
		"-role=relay", "-relay-mode="+mode, fmt.Sprintf("-port-base=%d", b.o.portBase),
		fmt.Sprintf("-workers=%d", b.o.workers), fmt.Sprintf("-relay-queue=%d", b.o.relayQueue))
	if err != nil {
		return err
	}
	defer p.Stop(10 * time.Second)
	if err := p.WaitListening(30*time.Second, fmt.Sprintf("127.0.0.1:%d", portRelay)); err != nil {
		return err
	}
	return b.measure(r, p, b.url(portRelay), "relay-"+mode, perEvent, latency, "")
}

// callhook measures the built Caddy with callhook and the given webhooks.
func (b *bench) callhook(r *result, name, webhooks string, perEvent int, latency bool) error {
	dir := filepath.Join(b.tmp, name)
	p, err := startCaddy(b.bin, dir, name, caddyfile(caddyfileConfig{
		queueDir: filepath.Join(dir, "queue"),
		workers:  b.o.workers,
		site:     callhookSite(webhooks),
	}))
	if err != nil {
		return err
	}
	defer p.Stop(30 * time.Second)
	return b.measure(r, p, b.url(portCaddy), name, perEvent, latency, name)
}

// measure runs the throughput phase (closed loop, then every delivery
// waited for) and, if latency, the open-loop phases; profile names the CPU
// profile to take from the admin endpoint ("" for none).
func (b *bench) measure(r *result, p *caddyproc.Proc, url, name string, perEvent int, latency bool, profile string) error {
	sk := b.sink
	g := newGenerator(url, b.stamp+"-"+name+"-", max(b.o.conns, 64))
	defer g.close()

	// Warm up connections, caches and the queue file, then start clean.
	sk.reset()
	warm := g.closedLoop(8, 2*time.Second, nil, nil)
	if warm.OK == 0 {
		return fmt.Errorf("warm-up: no event was accepted (%d refused, %d failed)\n%s", warm.Refused, warm.Failed, p.LogTail(logTailBytes))
	}
	if got, _ := sk.waitFor(warm.OK*int64(perEvent), time.Minute); got < warm.OK*int64(perEvent) {
		return fmt.Errorf("warm-up: %d of %d deliveries arrived within a minute\n%s", got, warm.OK*int64(perEvent), p.LogTail(logTailBytes))
	}
	sk.reset()

	var prof sync.WaitGroup
	if profile != "" && b.o.profile > 0 {
		prof.Add(1)
		go func() {
			defer prof.Done()
			b.saveProfile(profile, "throughput")
		}()
	}
	cpu0, err := procCPU(p.Pid())
	if err != nil {
		return err
	}
	startAt := time.Now()
	res := g.closedLoop(b.o.conns, b.o.duration, nil, nil)
	during := sk.count()
	want := res.OK * int64(perEvent)
	got, last := sk.waitFor(want, b.o.drainTimeout)
	cpu1, err := procCPU(p.Pid())
	if err != nil {
		return err
	}
	prof.Wait()
	r.eventsIn = float64(res.OK) / res.Elapsed.Seconds()
	r.duringLoad = float64(during) / res.Elapsed.Seconds()
	if res.OK > 0 {
		r.duringRatio = float64(during) / float64(res.OK*int64(perEvent))
	}
	if got > 0 {
		r.deliveriesOut = float64(got) / last.Sub(startAt).Seconds()
		r.cpuPer1k = (cpu1 - cpu0).Seconds() / float64(got) * 1000
	}
	if got < want {
		r.note("only %d of %d deliveries arrived within %s", got, want, b.o.drainTimeout)
	}
	if tail := last.Sub(startAt) - res.Elapsed; tail > time.Second {
		r.note("last delivery %.1fs after the load stopped", tail.Seconds())
	}
	noteLoad(r, res)
	r.note("%.0f deliveries/s while the load ran (%.2f× the deliveries of the events accepted meanwhile)", r.duringLoad, r.duringRatio)
	progress("%s: %.0f events/s in, %.0f deliveries/s out (%.0f/s = %.2f× the accepted ones while the load ran), %.3f CPU s per 1k deliveries", name, r.eventsIn, r.deliveriesOut, r.duringLoad, r.duringRatio, r.cpuPer1k)

	if !latency {
		return nil
	}
	for _, rate := range b.o.rates {
		sk.reset()
		sk.record(time.Now())
		res := g.openLoop(rate, b.o.latDuration, b.o.maxInflight)
		want := res.OK * int64(perEvent)
		got, _ := sk.waitFor(want, b.o.drainTimeout)
		l := summarize(sk.latencies())
		r.lat[rate] = l
		if got < want {
			r.note("@%d/s: only %d of %d deliveries arrived", rate, got, want)
		}
		if res.Refused+res.Failed+res.Dropped > 0 {
			r.note("@%d/s: %d refused, %d failed, %d not sent (generator saturated)", rate, res.Refused, res.Failed, res.Dropped)
		}
		progress("%s @%d/s: p50 %s, p99 %s, max %s over %d deliveries", name, rate, ms(l.P50), ms(l.P99), ms(l.Max), l.N)
	}
	return nil
}

// saveProfile takes a CPU profile of the Caddy under test.
func (b *bench) saveProfile(name, phase string) {
	path := filepath.Join(b.o.results, fmt.Sprintf("%s-%s-%s.cpu.pprof", b.stamp, name, phase))
	if err := fetchProfile(int(b.o.profile.Seconds()), path); err != nil {
		progress("%s: no CPU profile: %v", name, err)
		return
	}
	progress("%s: CPU profile of the %s phase saved to %s", name, phase, path)
}

func noteLoad(r *result, res loadResult) {
	if res.Refused > 0 || res.Failed > 0 {
		r.note("%d answers not 2xx, %d transport errors", res.Refused, res.Failed)
	}
}

// slowDepths are the queue depths at which SLOW samples memory.
var slowDepths = []int64{10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000}

// slow pauses the receiver, grows the queue to the target depth with
// closed-loop ingest, sampling the Caddy process's Go heap and RSS at each
// depth, then releases the receiver and measures the drain.
func (b *bench) slow(r *result) error {
	sk := b.sink
	dir := filepath.Join(b.tmp, "SLOW")
	queueDir := filepath.Join(dir, "queue")
	// The default retention and dedup window while the queue grows and
	// drains; a reload to short ones afterwards, so the prune can be
	// measured (dedup keys are kept for the longest dedup_window
	// configured).
	slowConfig := func(retention string) string {
		hook := slowWebhook()
		if retention != "" {
			hook = "\t\t\tdedup_window " + retention + "\n" + hook
		}
		return caddyfile(caddyfileConfig{
			queueDir:  queueDir,
			workers:   b.o.workers,
			retention: retention,
			site:      callhookSite(hook),
		})
	}
	p, err := startCaddy(b.bin, dir, "SLOW", slowConfig(""))
	if err != nil {
		return err
	}
	defer p.Stop(30 * time.Second)
	store := filepath.Join(queueDir, "queue")
	s := &slowResult{}
	r.slow = s
	g := newGenerator(b.url(portCaddy), b.stamp+"-slow-", max(b.o.slowConns, 64))
	defer g.close()

	sk.reset()
	warm := g.closedLoop(8, 2*time.Second, nil, nil)
	if got, _ := sk.waitFor(warm.OK, time.Minute); warm.OK == 0 || got < warm.OK {
		return fmt.Errorf("warm-up: %d of %d deliveries arrived\n%s", got, warm.OK, p.LogTail(logTailBytes))
	}
	// "Empty": open, with the warm-up's few deliveries delivered.
	s.emptyMiB = float64(dirSize(store)) / (1 << 20)
	sk.reset()
	sk.pause()
	defer sk.resume()

	target := int64(b.o.slowDepth)
	var points []int64
	for _, d := range slowDepths {
		if d < target {
			points = append(points, d)
		}
	}
	points = append(points, target)

	var ok atomic.Int64
	var samplesDone sync.WaitGroup
	sampleCh := make(chan struct{})
	growStart := time.Now()
	samplesDone.Add(1)
	go func() {
		// Sample as the depth passes each point; a sample lags its point by
		// the time a GC and two reads take, and records the depth it saw.
		defer samplesDone.Done()
		next := 0
		for next < len(points)-1 { // the last point is sampled after the load stops
			select {
			case <-sampleCh:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if ok.Load() < points[next] {
				continue
			}
			if m, err := sampleMemory(p.Pid(), ok.Load(), time.Since(growStart)); err == nil {
				m.point = points[next]
				s.samples = append(s.samples, m)
				progress("SLOW: depth %d: heap %s, RssAnon %s, RssFile %s", m.depth, mib(m.heap.HeapAlloc), mib(uint64(m.mem.RSSAnon)), mib(uint64(m.mem.RSSFile)))
			} else {
				progress("SLOW: sampling memory at depth %d: %v", ok.Load(), err)
			}
			for next < len(points)-1 && ok.Load() >= points[next] {
				next++
			}
		}
	}()

	var prof sync.WaitGroup
	if b.o.profile > 0 {
		prof.Add(1)
		go func() { defer prof.Done(); b.saveProfile("SLOW", "grow") }()
	}
	cpu0, err := procCPU(p.Pid())
	if err != nil {
		return err
	}
	res := g.closedLoop(b.o.slowConns, 24*time.Hour, &ok, func(n int64) bool { return n >= target })
	cpu1, err := procCPU(p.Pid())
	if err != nil {
		return err
	}
	close(sampleCh)
	samplesDone.Wait()
	prof.Wait()
	s.depth = res.OK
	s.ingest = float64(res.OK) / res.Elapsed.Seconds()
	if res.OK > 0 {
		s.ingestCPU = (cpu1 - cpu0).Seconds() / float64(res.OK) * 1000
	}
	noteLoad(r, res)
	if m, err := sampleMemory(p.Pid(), res.OK, time.Since(growStart)); err == nil {
		m.point = target
		s.samples = append(s.samples, m)
		progress("SLOW: depth %d: heap %s, RssAnon %s, RssFile %s", m.depth, mib(m.heap.HeapAlloc), mib(uint64(m.mem.RSSAnon)), mib(uint64(m.mem.RSSFile)))
	}
	s.queueFileMiB = float64(dirSize(store)) / (1 << 20)
	if b.o.profile > 0 {
		path := filepath.Join(b.o.results, fmt.Sprintf("%s-SLOW-grown.heap.pprof", b.stamp))
		if err := fetchHeapProfile(path); err == nil {
			progress("SLOW: heap profile at depth %d saved to %s", res.OK, path)
		}
	}
	progress("SLOW: %d deliveries queued at %.0f events/s; releasing the receiver", res.OK, s.ingest)

	// Drain: every queued delivery must arrive.
	if b.o.profile > 0 {
		prof.Add(1)
		go func() { defer prof.Done(); b.saveProfile("SLOW", "drain") }()
	}
	cpu0, err = procCPU(p.Pid())
	if err != nil {
		return err
	}
	released := time.Now()
	sk.resume()
	got, last := sk.waitFor(res.OK, b.o.drainTimeout)
	cpu1, err = procCPU(p.Pid())
	if err != nil {
		return err
	}
	prof.Wait()
	if got > 0 {
		s.drain = float64(got) / last.Sub(released).Seconds()
		s.drainCPU = (cpu1 - cpu0).Seconds() / float64(got) * 1000
	}
	if got < res.OK {
		r.note("drain: only %d of %d deliveries arrived within %s", got, res.OK, b.o.drainTimeout)
	}
	if n := sk.held503.Load(); n > 0 {
		r.note("%d held attempts timed out (503) and were retried", n)
	}
	if m, err := sampleMemory(p.Pid(), 0, time.Since(growStart)); err == nil {
		s.afterDrain = &m
	}
	progress("SLOW: drained %d deliveries at %.0f/s", got, s.drain)
	if got == 0 {
		return errors.New("drain: nothing arrived after the receiver was released")
	}
	// The retention prune and the compaction after it give the space
	// back: reload with a one-second retention and dedup window (the reload runs the prune
	// at once), then wait until the directory is within 2x of empty or has
	// stopped shrinking for a while.
	if err := admin().Load(slowConfig(slowRetention.String())); err != nil {
		return fmt.Errorf("reloading SLOW with retention %s: %v", slowRetention, err)
	}
	low, still := dirSize(store), 0
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline) && still < 6; {
		time.Sleep(pruneSettle)
		n := dirSize(store)
		if n < low {
			low, still = n, 0
		} else {
			still++
		}
		if float64(low)/(1<<20) <= 2*s.emptyMiB {
			break
		}
	}
	s.prunedMiB = float64(low) / (1 << 20)
	progress("SLOW: queue directory %.1f MiB empty, %.0f MiB full, %.1f MiB after the drain and prune", s.emptyMiB, s.queueFileMiB, s.prunedMiB)
	return nil
}

// slowRetention is the retention SLOW reloads with after the drain, so the
// prune that gives the drained space back runs within the measurement.
const slowRetention = time.Second

// pruneSettle is how long SLOW waits between two looks at the queue
// directory's size after the drain.
const pruneSettle = 5 * time.Second

func sampleMemory(pid int, depth int64, at time.Duration) (memSample, error) {
	h, err := fetchHeap()
	if err != nil {
		return memSample{}, err
	}
	m, err := procMemory(pid)
	if err != nil {
		return memSample{}, err
	}
	return memSample{depth: depth, heap: h, mem: m, at: at}, nil
}

// details lists the SLOW memory samples and the notes, for the saved file.
func (b *bench) details() string {
	var sb strings.Builder
	if r := b.rows["SLOW"]; r != nil && r.slow != nil {
		sb.WriteString("\nSLOW: memory of the Caddy process by queue depth (Go heap after a forced GC)\n\n")
		sb.WriteString("| depth | time | HeapAlloc | HeapInuse | Go Sys | RssAnon | RssFile |\n|---:|---:|---:|---:|---:|---:|---:|\n")
		rows := r.slow.samples
		if r.slow.afterDrain != nil {
			rows = append(rows, *r.slow.afterDrain)
		}
		for i, m := range rows {
			depth := fmt.Sprint(m.depth)
			if r.slow.afterDrain != nil && i == len(rows)-1 {
				depth = "drained"
			}
			fmt.Fprintf(&sb, "| %s | %.0fs | %s | %s | %s | %s | %s |\n", depth, m.at.Seconds(),
				mib(m.heap.HeapAlloc), mib(m.heap.HeapInuse), mib(m.heap.Sys), mib(uint64(m.mem.RSSAnon)), mib(uint64(m.mem.RSSFile)))
		}
		fmt.Fprintf(&sb, "\nqueue directory at full depth: %.0f MiB\n", r.slow.queueFileMiB)
	}
	return sb.String()
}
