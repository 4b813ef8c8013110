package delivery

import (
	"fmt"
	"net/netip"
	"strings"
)

// CheckHost checks a webhook URL's host as written in the config, before
// any DNS: a literal address the guard refuses, or localhost (and names
// under .localhost, which resolve to loopback by convention), fails with a
// message naming allow_destinations. Other names pass: the guard checks
// the address they resolve to on every connection.
func (g *Guard) CheckHost(host string) error {
	h := strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		v4, v6 := g.Check(netip.AddrFrom4([4]byte{127, 0, 0, 1})), g.Check(netip.IPv6Loopback())
		if v4 != nil && v6 != nil {
			return fmt.Errorf("url host %s is loopback, which the SSRF guard refuses: add 127.0.0.1/32 to allow_destinations in the global callhook option, or call a public host", host)
		}
		return nil
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return nil // a name: checked when dialled
	}
	if err := g.Check(ip); err != nil {
		be, ok := err.(*BlockedError)
		if !ok {
			return err
		}
		return fmt.Errorf("url host %s is %s, which the SSRF guard refuses: add %s to allow_destinations in the global callhook option, or call a public host", host, be.Kind, netip.PrefixFrom(ip.WithZone(""), ip.BitLen()))
	}
	return nil
}
