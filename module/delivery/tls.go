package delivery

import (
	"crypto/tls"
	"net/http"
	"sync"
)

// tlsProfiles are the TLS settings of webhooks that have their own (a
// private CA, a client certificate, a server name), by profile key. Each
// has its own transport: a transport has one TLS config. Deliveries name
// their profile (queue.Policy.TLS) and the sender looks it up at every
// attempt, so reloaded settings (a renewed client certificate) apply to
// queued work, and no key material is stored in the queue.
type tlsProfiles struct {
	mu sync.RWMutex
	m  map[string]*http.Client
	ts []*http.Transport
}

// SetTLSProfiles replaces the TLS profiles with configs (profile key to
// settings). Connections made under the old settings are closed once idle;
// attempts already running finish on them.
func (s *Sender) SetTLSProfiles(configs map[string]*tls.Config) {
	m := make(map[string]*http.Client, len(configs))
	var ts []*http.Transport
	for key, cfg := range configs {
		t := s.transport.Clone() // same guarded dialer, limits and timeouts
		t.TLSClientConfig = cfg.Clone()
		ts = append(ts, t)
		c := *s.client
		c.Transport = t
		m[key] = &c
	}
	s.tls.mu.Lock()
	old := s.tls.ts
	s.tls.m, s.tls.ts = m, ts
	s.tls.mu.Unlock()
	for _, t := range old {
		t.CloseIdleConnections()
	}
}

// clientFor returns the client for a delivery's TLS profile, or false
// when the profile is not in the running config.
func (s *Sender) clientFor(profile string) (*http.Client, bool) {
	if profile == "" {
		return s.client, true
	}
	s.tls.mu.RLock()
	defer s.tls.mu.RUnlock()
	c, ok := s.tls.m[profile]
	return c, ok
}

func (s *Sender) closeTLSIdle() {
	s.tls.mu.RLock()
	defer s.tls.mu.RUnlock()
	for _, t := range s.tls.ts {
		t.CloseIdleConnections()
	}
}
