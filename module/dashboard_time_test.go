package callhook

import (
	"testing"
	"time"
)

// TestShortTimeNamesItsZone: the dashboard's times say they are UTC, from
// a time and from the API's RFC 3339 text (whatever zone it carries).
func TestShortTimeNamesItsZone(t *testing.T) {
	kyiv := time.FixedZone("EET", 2*3600)
	for _, v := range []any{time.Date(2026, 12, 6, 5, 4, 5, 0, kyiv), "2026-12-06T05:04:05+02:00", "2026-12-06T03:04:05.000Z"} {
		if got := shortTime(v); got != "2026-12-06 03:04:05 UTC" {
			t.Errorf("shortTime(%v) = %q, want 2026-12-06 03:04:05 UTC", v, got)
		}
	}
}
