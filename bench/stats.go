package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports; reading it properly needs
// sysconf, which needs cgo.
const clockTick = 100

// procCPU is the user+system CPU time a process has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a /proc stat
// line. The command name (field 2) may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, fmt.Errorf("proc stat line has no command name: %q", truncate(b, 80))
	}
	fields := strings.Fields(string(b[end+1:]))
	// fields[0] is field 3 (state), so utime (14) is fields[11].
	if len(fields) < 13 {
		return 0, fmt.Errorf("proc stat line has %d fields after the command name, want at least 13", len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("proc stat utime %q / stime %q are not numbers", fields[11], fields[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}

// memory is a process's resident memory, split the way /proc reports it:
// anonymous pages (the Go heap, stacks, runtime) and file pages (for Caddy
// with the embedded queue, mostly the bbolt file's mmap).
type memory struct {
	RSS, RSSAnon, RSSFile int64 // bytes
}

func procMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	return parseStatus(b)
}

// parseStatus reads VmRSS, RssAnon and RssFile (in kB) from /proc/<pid>/status.
func parseStatus(b []byte) (memory, error) {
	var m memory
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "RssAnon":
			dst = &m.RSSAnon
		case "RssFile":
			dst = &m.RSSFile
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("proc status %s: %q is not a size in kB", name, rest)
		}
		*dst = kb << 10
		found++
	}
	if found == 0 {
		return memory{}, fmt.Errorf("proc status has no VmRSS, RssAnon or RssFile line")
	}
	return m, nil
}

// heapStats are the Go runtime's figures from the heap profile's header
// (`/debug/pprof/heap?debug=1`), which Caddy's admin endpoint serves.
type heapStats struct {
	HeapAlloc, HeapInuse, Sys uint64
}

// parseHeapProfile reads the "# Name = value" lines that runtime/pprof
// appends to a debug=1 heap profile.
func parseHeapProfile(b []byte) (heapStats, error) {
	var h heapStats
	found := 0
	for line := range bytes.Lines(b) {
		name, val, ok := strings.Cut(strings.TrimSpace(string(line)), " = ")
		if !ok {
			continue
		}
		var dst *uint64
		switch name {
		case "# HeapAlloc":
			dst = &h.HeapAlloc
		case "# HeapInuse":
			dst = &h.HeapInuse
		case "# Sys":
			dst = &h.Sys
		default:
			continue
		}
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			return heapStats{}, fmt.Errorf("heap profile %s: %q is not a number", name[2:], val)
		}
		*dst = n
		found++
	}
	if found < 3 {
		return heapStats{}, fmt.Errorf("heap profile lacks the HeapAlloc, HeapInuse and Sys lines (is it debug=1?)")
	}
	return h, nil
}

// sentNS finds the event's send time that the webhook param `sent_ns`
// copied into a body, in any of the four formats: `"sent_ns":123`,
// `sent_ns=123`, `<sent_ns>123</sent_ns>`. It returns 0 if there is none.
func sentNS(body []byte) int64 {
	i := bytes.Index(body, []byte("sent_ns"))
	if i < 0 {
		return 0
	}
	rest := body[i+len("sent_ns"):]
	// skip the separator: `":`, `=`, `>`, and spaces
	j := 0
	for j < len(rest) && j < 4 && (rest[j] < '0' || rest[j] > '9') {
		j++
	}
	var n int64
	digits := 0
	for ; j < len(rest) && rest[j] >= '0' && rest[j] <= '9'; j++ {
		if n > (math.MaxInt64-9)/10 {
			return 0
		}
		n = n*10 + int64(rest[j]-'0')
		digits++
	}
	if digits == 0 {
		return 0
	}
	return n
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// latencies summarises end-to-end latencies.
type latencies struct {
	N        int
	P50, P99 time.Duration
	Max      time.Duration
}

func summarize(ds []time.Duration) latencies {
	s := slices.Clone(ds)
	slices.Sort(s)
	l := latencies{N: len(s)}
	if len(s) > 0 {
		l.P50, l.P99, l.Max = percentile(s, 50), percentile(s, 99), s[len(s)-1]
	}
	return l
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// dirSize is the bytes of the regular files under dir (the queue's store).
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// fsyncLatency times n writes of 4 KiB, each followed by fdatasync, to a
// file in dir: what one durable commit costs on that disk at the least.
func fsyncLatency(dir string, n int) (latencies, error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return latencies{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := bytes.Repeat([]byte{'x'}, 4096)
	ds := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return latencies{}, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return latencies{}, err
		}
		ds = append(ds, time.Since(t))
	}
	return summarize(ds), nil
}
