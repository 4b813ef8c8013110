package callhook

import (
	"testing"

	"golang.org/x/time/rate"
)

// TestParseRateLimitSpellings: rate_limit takes the units people write
// (20/sec, 600/min) with the same meaning as 20/s and 600/m, and refuses
// the rest naming the accepted forms.
func TestParseRateLimitSpellings(t *testing.T) {
	for _, tt := range []struct {
		in    string
		rate  rate.Limit
		burst int
	}{
		{"20/s", 20, 20}, {"20/sec", 20, 20}, {"20/second", 20, 20}, {"20 / SEC", 20, 20},
		{"600/m", 10, 10}, {"600/min", 10, 10}, {"600/minute", 10, 10}, {"30/m", 0.5, 1},
	} {
		r, burst, err := parseRateLimit(tt.in)
		if err != nil || r != tt.rate || burst != tt.burst {
			t.Errorf("%q: %v per second, burst %d, %v; want %v, %d", tt.in, r, burst, err, tt.rate, tt.burst)
		}
	}
	for _, bad := range []string{"20/h", "20", "20/seconds", "0/s", "-1/s", "1.5/s", "200000/s"} {
		if _, _, err := parseRateLimit(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
