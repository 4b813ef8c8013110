//go:build linux

package faults

import (
	"fmt"
	"testing"

	"github.com/callhook/caddy-callhook/internal/caddyproc"
)

// standIn listens on addr for the length of the test, counting the
// connections it gets: a server the suite did not start. It returns nil when
// addr is taken already (by a real one, which the test cannot watch).
func standIn(t *testing.T, addr string) *caddyproc.StandIn {
	t.Helper()
	s, err := caddyproc.ListenStandIn(addr)
	if err != nil {
		t.Logf("%s is taken already (%v): not watched", addr, err)
		return nil
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestTakenPorts: a scenario whose ports are taken runs on others, and
// neither it nor anything else the suite does touches a server it did not
// start, such as the quick start's (127.0.0.1:8080, admin localhost:2999).
func TestTakenPorts(t *testing.T) {
	watched := map[string]*caddyproc.StandIn{}
	for _, addr := range []string{
		"127.0.0.1:2999", "127.0.0.1:8080", // the quick start's
		fmt.Sprintf("127.0.0.1:%d", portBase+portsTaken), // this scenario's HTTP and admin ports
		fmt.Sprintf("127.0.0.1:%d", portBase+portsTaken+1),
	} {
		watched[addr] = standIn(t, addr)
	}
	if watched[fmt.Sprintf("127.0.0.1:%d", portBase+portsTaken)] == nil {
		t.Skip("cannot take this scenario's port to show that it picks another")
	}
	p := newCaddy(t, portsTaken)
	if p.httpPort == portBase+portsTaken || p.adminPort == portBase+portsTaken+1 {
		t.Fatalf("newCaddy took the taken ports %d and %d", p.httpPort, p.adminPort)
	}
	p.start(site{})
	if err := p.load(site{routes: "handle /other {\n\t\trespond 204\n\t}"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.adminGet("/config/"); err != nil {
		t.Fatal(err)
	}
	for addr, n := range watched {
		if n != nil && n.Connections() != 0 {
			t.Errorf("the stand-in on %s got %d connections", addr, n.Connections())
		}
	}
}
