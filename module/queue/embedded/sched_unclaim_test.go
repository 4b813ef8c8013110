package embedded

import (
	"testing"
	"time"
)

// TestUnclaimRestoresExpiry: a lease whose outcome failed to commit after a
// sweep skipped it (it was finishing) still expires at its end.
func TestUnclaimRestoresExpiry(t *testing.T) {
	var s scheduler
	s.init()
	now := time.Now()
	lr := &leaseRec{id: "d1", until: now.Add(time.Second), lane: s.lane("dest\x00hook")}
	s.addLease(lr)
	claimed, err := s.claim(lr.token(), now)
	if err != nil {
		t.Fatal(err)
	}
	s.sweep(now.Add(2 * time.Second)) // skips the finishing lease
	s.unclaim(claimed)                // its commit failed
	s.sweep(now.Add(3 * time.Second))
	if s.leases["d1"] != nil {
		t.Fatal("the expired lease is still held after its failed outcome: its delivery waits for another lease or a restart")
	}
}
