package main

import "testing"

// TestSetPorts: -port-base moves every listener, and they stay in its 100.
func TestSetPorts(t *testing.T) {
	defer setPorts(defaultPortBase)
	setPorts(12000)
	all := append([]int{portCaddy, portAdmin, portRelay, portSinkSlow, portNATS}, sinkPorts...)
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
