package delivery

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: the pool promises that after
// Stop, and senders/servers in tests are closed in cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
