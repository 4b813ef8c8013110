package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// TestSetPorts: -port-base moves every listener, and they stay in its 100.
func TestSetPorts(t *testing.T) {
	defer setPorts(defaultPortBase)
	setPorts(12000)
	all := usedPorts()
	seen := map[int]bool{}
	for _, p := range all {
		if p < 12000 || p > 12099 || seen[p] {
			t.Errorf("port %d: outside 12000-12099 or used twice (%v)", p, all)
		}
		seen[p] = true
	}
	if portCaddy != 12000 {
		t.Errorf("the Caddy under test is on %d, want the base", portCaddy)
	}
}

// TestPortsFreeRefusesTaken: a run whose ports are taken (a Caddy left on
// the admin port, say) is refused before it starts anything, and says how
// to move the harness.
func TestPortsFreeRefusesTaken(t *testing.T) {
	defer setPorts(defaultPortBase)
	base, err := caddyproc.PickPort()
	if err != nil {
		t.Fatal(err)
	}
	setPorts(base)
	if err := portsFree(); err != nil {
		t.Skipf("ports near %d are in use already: %v", base, err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", portAdmin))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = portsFree()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("port %d is in use", portAdmin)) || !strings.Contains(err.Error(), "-port-base") {
		t.Fatalf("portsFree with the admin port taken = %v", err)
	}
}
