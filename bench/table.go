package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// rowInfo says what a row is and what it is compared with.
var rowInfo = map[string]struct{ label, what string }{
	"respond202": {"respond 202", "Caddy `respond 202`: no work, the ingest ceiling of any handler"},
	"relay1":     {"relay-1", "bare Go relay, 1 JSON POST per event, in-memory queue, no durability"},
	"relay5":     {"relay-5", "bare Go relay, the 5 S5 webhooks per event, no durability"},
	"S1":         {"S1", "callhook, 1 signed JSON webhook per event"},
	"S1nats":     {"S1 nats", "S1 with `queue nats` on local nats-server (sync_interval always; see notes for replicas)"},
	"S5":         {"S5", "callhook, 5 webhooks per event (json, jsonrpc, form, xml, json; 5-8 params)"},
}

// table renders the one markdown table of the run.
func (b *bench) table() string {
	var sb strings.Builder
	sb.WriteString("| row | what | events/s in | deliveries/s out |")
	for _, rate := range b.o.rates {
		fmt.Fprintf(&sb, " e2e p50 / p99 @%d/s |", rate)
	}
	sb.WriteString(" CPU s / 1k deliveries | notes |\n|---|---|---:|---:|")
	for range b.o.rates {
		sb.WriteString("---:|")
	}
	sb.WriteString("---:|---|\n")

	rel1, rel5, resp, s1 := b.rows["relay1"], b.rows["relay5"], b.rows["respond202"], b.rows["S1"]
	for _, name := range rowNames {
		r := b.rows[name]
		if r == nil {
			continue
		}
		if name == "SLOW" {
			b.slowRows(&sb, r, resp, s1)
			continue
		}
		info := rowInfo[name]
		var base *result
		var baseName string
		switch name {
		case "S1", "S1nats":
			base, baseName = rel1, "relay-1"
		case "S5":
			base, baseName = rel5, "relay-5"
		}
		cells := []string{info.label, info.what}
		cells = append(cells, num(r.eventsIn, 0))
		if name == "respond202" {
			cells = append(cells, "–")
		} else {
			cells = append(cells, withRatio(num(r.deliveriesOut, 0), r.deliveriesOut, base, func(x *result) float64 { return x.deliveriesOut }, baseName))
		}
		for _, rate := range b.o.rates {
			l, ok := r.lat[rate]
			if !ok || l.N == 0 {
				cells = append(cells, "–")
				continue
			}
			cell := ms(l.P50) + " / " + ms(l.P99)
			if (name == "S1" || name == "S1nats") && rel1 != nil && rel1.err == nil {
				if bl, ok := rel1.lat[rate]; ok && bl.P99 > 0 {
					cell += fmt.Sprintf(" (p99 %.2f× relay-1)", float64(l.P99)/float64(bl.P99))
				}
			}
			cells = append(cells, cell)
		}
		cells = append(cells, withRatio(num(r.cpuPer1k, 3), r.cpuPer1k, base, func(x *result) float64 { return x.cpuPer1k }, baseName))
		notes := r.notes
		if r.err != nil {
			notes = append([]string{"FAILED: " + firstLine(r.err.Error())}, notes...)
		}
		cells = append(cells, strings.Join(notes, "; "))
		writeRow(&sb, cells)
	}
	return sb.String()
}

// slowRows are SLOW's three rows: ingest while the queue grows, drain after
// the release, and memory against depth.
func (b *bench) slowRows(sb *strings.Builder, r, resp, s1 *result) {
	dashes := make([]string, len(b.o.rates))
	for i := range dashes {
		dashes[i] = "–"
	}
	s := r.slow
	if s == nil {
		writeRow(sb, append(append([]string{"SLOW", "receiver paused", "–", "–"}, dashes...), "–", "FAILED: "+firstLine(fmt.Sprint(r.err))))
		return
	}
	respRate := func(x *result) float64 { return x.eventsIn }
	ingest := []string{"SLOW ingest", fmt.Sprintf("callhook S1 webhook, receiver paused, queue grows to %s deliveries", num(float64(s.depth), 0)),
		withRatio(num(s.ingest, 0), s.ingest, resp, respRate, "respond 202"), "–"}
	ingest = append(append(ingest, dashes...), num(s.ingestCPU, 3), "CPU per 1000 events queued")
	writeRow(sb, ingest)

	s1Rate := func(x *result) float64 { return x.deliveriesOut }
	notes := r.notes
	if r.err != nil {
		notes = append([]string{"FAILED: " + firstLine(r.err.Error())}, notes...)
	}
	drain := []string{"SLOW drain", "the receiver released: the queued deliveries go out, no ingest", "–",
		withRatio(num(s.drain, 0), s.drain, s1, s1Rate, "S1")}
	drain = append(append(drain, dashes...), num(s.drainCPU, 3), strings.Join(notes, "; "))
	writeRow(sb, drain)

	mem := []string{"SLOW memory", "Caddy's Go heap (after GC) and RSS against queue depth", "–", "–"}
	mem = append(append(mem, dashes...), "–", memoryNote(s))
	writeRow(sb, mem)
}

// memoryNote compares the first and the last sample: the Go heap should be
// flat whatever the depth; RssFile is mostly the store's files in the page
// cache.
func memoryNote(s *slowResult) string {
	if len(s.samples) == 0 {
		return "no samples"
	}
	first, last := s.samples[0], s.samples[len(s.samples)-1]
	var parts []string
	for _, m := range s.samples {
		parts = append(parts, fmt.Sprintf("%s: %s", short(m.point), mib(m.heap.HeapAlloc)))
	}
	note := "heap " + strings.Join(parts, ", ")
	if first.heap.HeapAlloc > 0 && len(s.samples) > 1 {
		note += fmt.Sprintf(" (%+.0f%% from %s to %s)", (float64(last.heap.HeapAlloc)/float64(first.heap.HeapAlloc)-1)*100, short(first.point), short(last.point))
	}
	note += fmt.Sprintf("; RssAnon %s → %s; RssFile %s → %s; queue directory %.2f MiB empty, %.0f MiB full, %.2f MiB after the drain and a prune with retention and dedup_window 1s",
		mib(uint64(first.mem.RSSAnon)), mib(uint64(last.mem.RSSAnon)), mib(uint64(first.mem.RSSFile)), mib(uint64(last.mem.RSSFile)), s.emptyMiB, s.queueFileMiB, s.prunedMiB)
	if s.emptyMiB > 0 && s.prunedMiB > 0 {
		note += fmt.Sprintf(" (%.1f× empty)", s.prunedMiB/s.emptyMiB)
	}
	if a := s.afterDrain; a != nil {
		note += fmt.Sprintf("; drained: heap %s, RssAnon %s", mib(a.heap.HeapAlloc), mib(uint64(a.mem.RSSAnon)))
	}
	return note
}

// withRatio appends "(0.84× base)" when the baseline ran and measured it.
func withRatio(cell string, v float64, base *result, get func(*result) float64, baseName string) string {
	if base == nil || base.err != nil || v == 0 {
		return cell
	}
	if bv := get(base); bv > 0 {
		return fmt.Sprintf("%s (%.2f× %s)", cell, v/bv, baseName)
	}
	return cell
}

func writeRow(sb *strings.Builder, cells []string) {
	sb.WriteString("|")
	for _, c := range cells {
		sb.WriteString(" ")
		sb.WriteString(strings.ReplaceAll(c, "|", "\\|"))
		sb.WriteString(" |")
	}
	sb.WriteString("\n")
}

// num formats v with thousands separators and the given decimals; 0 is "–".
func num(v float64, decimals int) string {
	if v == 0 {
		return "–"
	}
	s := strconv.FormatFloat(v, 'f', decimals, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	var out []byte
	for i, c := range []byte(intPart) {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	if frac != "" {
		return string(out) + "." + frac
	}
	return string(out)
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// short writes a depth as 10k, 1M.
func short(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
