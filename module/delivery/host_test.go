package delivery

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckHost(t *testing.T) {
	open := NewGuard(nil)
	allowLo := NewGuard([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.1.0.0/16")})
	tests := []struct {
		host    string
		g       *Guard
		blocked string // "" means allowed
	}{
		{"example.com", open, ""},
		{"203.0.113.7", open, ""},
		{"127.0.0.1", open, "loopback"},
		{"localhost", open, "loopback"},
		{"LOCALHOST.", open, "loopback"},
		{"api.localhost", open, "loopback"},
		{"[::1]", open, "loopback"},
		{"10.0.0.5", open, "private"},
		{"169.254.169.254", open, "metadata"},
		{"169.254.1.1", open, "link-local"},
		{"0.0.0.0", open, "unspecified"},
		{"127.0.0.1", allowLo, ""},
		{"localhost", allowLo, ""},
		{"10.1.2.3", allowLo, ""},
		{"10.2.0.1", allowLo, "private"},
	}
	for _, tt := range tests {
		err := tt.g.CheckHost(tt.host)
		switch {
		case tt.blocked == "" && err != nil:
			t.Errorf("%s: %v, want allowed", tt.host, err)
		case tt.blocked != "" && err == nil:
			t.Errorf("%s: allowed, want refused", tt.host)
		case tt.blocked != "" && (!strings.Contains(err.Error(), "allow_destinations") || !strings.Contains(err.Error(), tt.blocked)):
			t.Errorf("%s: %v, want it to name %q and allow_destinations", tt.host, err, tt.blocked)
		}
	}
}
