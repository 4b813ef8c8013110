// Package delivery sends queued webhook deliveries: the SSRF guard, Standard
// Webhooks signing, one HTTP attempt and its classification, backoff, and the
// worker pool that leases due work from a queue.Queue.
package delivery

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrBlocked is matched (errors.Is) by every refusal of the SSRF guard.
var ErrBlocked = errors.New("blocked by SSRF guard")

// BlockedError says which address the guard refused and why.
type BlockedError struct {
	Addr netip.Addr // the address as dialled; invalid when it could not be parsed
	Kind string     // "private", "loopback", "NAT64 for private 10.0.0.5", ...
	Raw  string     // the dialled address as text when it could not be parsed
}

func (e *BlockedError) Error() string {
	if !e.Addr.IsValid() {
		// Fail closed: an address we cannot read is one we cannot vouch for.
		return fmt.Sprintf("blocked by SSRF guard: cannot read the dialled address %q", e.Raw)
	}
	return fmt.Sprintf("blocked by SSRF guard: %s is %s; add it to allow_destinations to allow it", e.Addr, e.Kind)
}

// Is makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// Guard refuses addresses a webhook must not reach unless the operator allowed
// them: a rendered URL is user-controlled data, and without this a webhook
// could be pointed at the cloud metadata service or an internal admin port.
// A Guard is immutable; swap it whole on reload.
type Guard struct {
	allow []netip.Prefix
}

// NewGuard returns a guard that lets through the internal addresses inside
// allow and refuses every other non-public address. Invalid prefixes are
// ignored.
func NewGuard(allow []netip.Prefix) *Guard {
	g := &Guard{allow: make([]netip.Prefix, 0, len(allow))}
	for _, p := range allow {
		if p.IsValid() {
			g.allow = append(g.allow, p.Masked())
		}
	}
	return g
}

// Check returns nil if ip may be dialled, or a *BlockedError matching
// ErrBlocked. A nil Guard allows nothing internal.
func (g *Guard) Check(ip netip.Addr) error {
	// Prefix.Contains never matches an address with a zone, so drop it: the
	// zone says which interface, not which address.
	ip = ip.WithZone("")
	if !ip.IsValid() {
		return &BlockedError{Raw: ip.String()}
	}
	if g != nil {
		unmapped := ip.Unmap()
		for _, p := range g.allow {
			if p.Contains(ip) || p.Contains(unmapped) {
				return nil
			}
		}
	}
	if kind := classify(ip); kind != "" {
		return &BlockedError{Addr: ip, Kind: kind}
	}
	return nil
}

type rangeKind struct {
	prefix netip.Prefix
	kind   string
}

func mustRanges(pairs ...string) []rangeKind {
	out := make([]rangeKind, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, rangeKind{netip.MustParsePrefix(pairs[i]), pairs[i+1]})
	}
	return out
}

// Order matters: the first match names the kind, so specific ranges come
// before the ranges that contain them.
var (
	v4Ranges = mustRanges(
		"0.0.0.0/32", "unspecified",
		"0.0.0.0/8", "this network (0.0.0.0/8)",
		"127.0.0.0/8", "loopback",
		"10.0.0.0/8", "private",
		"172.16.0.0/12", "private",
		"192.168.0.0/16", "private",
		"100.64.0.0/10", "carrier-grade NAT",
		"169.254.169.254/32", "cloud metadata",
		"169.254.0.0/16", "link-local",
		"198.18.0.0/15", "benchmarking",
		"224.0.0.0/4", "multicast",
		"255.255.255.255/32", "broadcast",
		"240.0.0.0/4", "reserved",
	)
	v6Ranges = mustRanges(
		"::/128", "unspecified",
		"::1/128", "loopback",
		"::/96", "reserved (IPv4-compatible)",
		"100::/64", "reserved (discard-only)",
		"fd00:ec2::254/128", "cloud metadata",
		"fc00::/7", "private",
		"fe80::/10", "link-local",
		"fec0::/10", "site-local",
		"ff00::/8", "multicast",
	)
	// These IPv6 ranges carry an IPv4 address that the network translates or
	// tunnels to, so the embedded address is what really gets reached.
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	nat64Loc  = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// classify names why ip is not public, or returns "" if it is.
func classify(ip netip.Addr) string {
	if ip.Is4In6() {
		return classify(ip.Unmap())
	}
	if ip.Is4() {
		return lookup(v4Ranges, ip)
	}
	a := ip.As16()
	switch {
	case nat64.Contains(ip):
		v4 := netip.AddrFrom4([4]byte{a[12], a[13], a[14], a[15]})
		if k := lookup(v4Ranges, v4); k != "" {
			return fmt.Sprintf("NAT64 for %s %s", k, v4)
		}
		return ""
	case nat64Loc.Contains(ip):
		return classifyLocalNAT64(a)
	case sixToFour.Contains(ip):
		v4 := netip.AddrFrom4([4]byte{a[2], a[3], a[4], a[5]})
		if k := lookup(v4Ranges, v4); k != "" {
			return fmt.Sprintf("6to4 for %s %s", k, v4)
		}
		return ""
	}
	return lookup(v6Ranges, ip)
}

// localNAT64Layouts are where RFC 6052 puts the IPv4 address for the
// prefix lengths an operator may carve out of the local-use 64:ff9b:1::/48
// (RFC 8215), with the bytes that must be zero: /48, /56, /64 and /96 (the
// last 32 bits). Byte 8 (bits 64-71) and the suffix after the IPv4 address
// are zero in all but /96. The address alone does not say which one the gateway uses.
var localNAT64Layouts = []struct {
	v4, zero []int
}{
	{[]int{6, 7, 9, 10}, []int{8, 11, 12, 13, 14, 15}},
	{[]int{7, 9, 10, 11}, []int{8, 12, 13, 14, 15}},
	{[]int{9, 10, 11, 12}, []int{8, 13, 14, 15}},
	{[]int{12, 13, 14, 15}, nil},
}

// classifyLocalNAT64 refuses an address of 64:ff9b:1::/48 if any layout
// it fits reads a non-public IPv4 address: a gateway with another prefix
// length than the one read would translate it to that host. The most
// telling reason is named (a zero-padded reading is often 0.0.0.0, "unspecified" or "this network").
// A public host refused this way is allowed with allow_destinations.
func classifyLocalNAT64(a [16]byte) string {
	var first string
	for _, l := range localNAT64Layouts {
		if slices.ContainsFunc(l.zero, func(i int) bool { return a[i] != 0 }) {
			continue
		}
		v4 := netip.AddrFrom4([4]byte{a[l.v4[0]], a[l.v4[1]], a[l.v4[2]], a[l.v4[3]]})
		k := lookup(v4Ranges, v4)
		if k == "" {
			continue
		}
		why := fmt.Sprintf("NAT64 for %s %s", k, v4)
		if !strings.HasPrefix(k, "this network") && k != "unspecified" {
			return why
		}
		if first == "" {
			first = why
		}
	}
	return first
}

func lookup(ranges []rangeKind, ip netip.Addr) string {
	for _, r := range ranges {
		if r.prefix.Contains(ip) {
			return r.kind
		}
	}
	return ""
}
