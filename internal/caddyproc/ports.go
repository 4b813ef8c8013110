package caddyproc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Test Caddys must never share a port with a Caddy they did not start: a
// quick-start Caddy left running on localhost:2999 once received an
// integration test's config through its admin endpoint and went on serving
// it. So every harness takes its ports from PickPorts (free now, chosen at
// run time) and WaitListening makes sure the listener that answers is its
// own child's.

// pickLow and pickHigh bound the ports PickPorts draws from: above the
// usual fixed service ports (the quick start's 2999 and 8080, the bench
// harness's 9400s) and below the kernel's ephemeral range, where the
// kernel would pick the local port of an outgoing connection or of a
// listener on port 0, and could take a port of ours between a kill -9 and
// the restart on the same ports.
const (
	pickLow  = 20000
	pickHigh = 32768 // Linux's default ip_local_port_range starts here
)

// PickPort is PickPorts(1)[0].
func PickPort() (int, error) {
	ps, err := PickPorts(1)
	if err != nil {
		return 0, err
	}
	return ps[0], nil
}

// PickPorts returns n distinct ports on which nothing listens on 127.0.0.1,
// ::1 or all interfaces, drawn at random so that harnesses running at once
// rarely try the same ones. A port is free when checked, not reserved: the
// process that uses it must still fail clearly if it is taken by then
// (Caddy does not start; WaitListening names the other listener).
func PickPorts(n int) ([]int, error) {
	lo, hi := pickRange()
	return pickPorts(n, lo, hi, rand.IntN(hi-lo))
}

// pickRange is [pickLow, pickHigh), cut at the start of this machine's
// ephemeral range when that starts lower.
func pickRange() (lo, hi int) {
	lo, hi = pickLow, pickHigh
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start-1000 > lo && start < hi {
				hi = start
			}
		}
	}
	return lo, hi
}

// pickPorts scans [lo, hi) from lo+offset, wrapping around, for n free
// ports.
func pickPorts(n, lo, hi, offset int) ([]int, error) {
	var out []int
	for i := 0; i < hi-lo && len(out) < n; i++ {
		p := lo + (offset+i)%(hi-lo)
		if CheckFree(p) == nil {
			out = append(out, p)
		}
	}
	if len(out) < n {
		return nil, fmt.Errorf("picking %d free ports: only %d of %d-%d are free on 127.0.0.1 and ::1", n, len(out), lo, hi-1)
	}
	return out, nil
}

// CheckFree returns an error when something listens on port on 127.0.0.1,
// on ::1 or on all interfaces: a test must not start a Caddy there, nor
// talk to the one that is there. It binds the port for a moment to find
// out.
func CheckFree(port int) error {
	for _, addr := range []string{"127.0.0.1", "::1"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			continue
		}
		if addr == "::1" && !errors.Is(err, syscall.EADDRINUSE) {
			continue // no IPv6 loopback on this machine: nothing can listen there
		}
		return fmt.Errorf("port %d is in use on %s (%v)", port, addr, err)
	}
	return nil
}

// StandIn is a listener that only counts the connections it gets: in a
// test, a server the harness did not start (a quick-start Caddy on its
// ports), which the harness must never talk to.
type StandIn struct {
	ln net.Listener
	n  atomic.Int32
}

// ListenStandIn starts a StandIn on addr.
func ListenStandIn(addr string) (*StandIn, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &StandIn{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.n.Add(1)
			c.Close()
		}
	}()
	return s, nil
}

// Connections is how many connections the stand-in has accepted.
func (s *StandIn) Connections() int { return int(s.n.Load()) }

// Close stops the stand-in.
func (s *StandIn) Close() error { return s.ln.Close() }
