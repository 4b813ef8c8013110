package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// testCA is a private CA made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate; it returns the tls pair and its PEMs.
func (ca *testCA) issue(t *testing.T, cn string, client bool, dns []string, ips []net.IP) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: dns, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM, keyPEM
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsReceiver is an https receiver on 127.0.0.1 with cert; clientCAs, if
// set, makes it require a client certificate signed by them.
func tlsReceiver(t *testing.T, cert tls.Certificate, clientCAs *x509.CertPool) (*httptest.Server, chan string) {
	got := make(chan string, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "-"
		if len(r.TLS.PeerCertificates) > 0 {
			who = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		got <- r.URL.Path + " " + who
		w.Write([]byte(`{"ok":true}`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		srv.TLS.ClientCAs = clientCAs
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, got
}

// TestWebhookTLS: a receiver behind a private CA that requires a client
// certificate, one whose certificate names another host (server_name), and
// the same receivers without the settings failing; for queued and sync
// webhooks alike (SPEC §12).
func TestWebhookTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := newTestCA(t, "crm test CA"), newTestCA(t, "callhook clients CA")
	srvCert, _, _ := serverCA.issue(t, "crm", false, nil, []net.IP{net.ParseIP("127.0.0.1")})
	namedCert, _, _ := serverCA.issue(t, "crm.internal", false, []string{"crm.internal"}, nil)
	_, clientPEM, clientKey := clientCA.issue(t, "callhook", true, nil, nil)
	caFile := writeFile(t, dir, "ca.pem", serverCA.pem)
	certFile := writeFile(t, dir, "client.pem", clientPEM)
	// not *.key or *.crt: caddytest rewrites such paths to its own files
	keyFile := writeFile(t, dir, "client-key.pem", clientKey)
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	mtls, mtlsGot := tlsReceiver(t, srvCert, pool)
	named, namedGot := tlsReceiver(t, namedCert, nil)

	startCaddy(t, "allow_destinations 127.0.0.1/32\n\t\thttps_only", fmt.Sprintf(`
	handle /calls/* {
		callhook {
			webhook mtls {
				on after_call
				url %[1]s/mtls
				param id call.call_id
				tls {
					ca %[3]s
					client_certificate %[4]s %[5]s
				}
			}
			webhook no_client_cert {
				on after_call
				url %[1]s/no_client_cert
				param id call.call_id
				backoff 50ms 100ms
				max_attempts 2
				tls {
					ca %[3]s
				}
			}
			webhook named {
				on after_call
				url %[2]s/named
				param id call.call_id
				tls {
					ca %[3]s
					server_name crm.internal
				}
			}
			webhook system_roots {
				on after_call
				url %[1]s/system_roots
				param id call.call_id
				backoff 50ms 100ms
				max_attempts 2
			}
			webhook route {
				on before_call
				sync
				url %[1]s/route
				param id call.call_id
				tls {
					ca %[3]s
					client_certificate %[4]s %[5]s
				}
			}
		}
	}`, mtls.URL, named.URL, caFile, certFile, keyFile))

	status, a := postJSON(t, "/calls/after_call", `{"call_id":"tls-1"}`)
	if status != 202 {
		t.Fatalf("status %d %+v", status, a)
	}
	for _, want := range []struct {
		ch   chan string
		what string
	}{{mtlsGot, "/mtls callhook"}, {namedGot, "/named -"}} {
		select {
		case got := <-want.ch:
			if got != want.what {
				t.Errorf("receiver got %q, want %q", got, want.what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no request %q", want.what)
		}
	}
	for webhook, reason := range map[string]string{"no_client_cert": "tls", "system_roots": "certificate signed by unknown authority"} {
		d := waitState(t, a.id(webhook), "dead")
		if !strings.Contains(d.LastError, reason) {
			t.Errorf("%s: last error %q, want it to mention %q", webhook, d.LastError, reason)
		}
	}
	select {
	case got := <-mtlsGot:
		t.Errorf("the receiver that requires a client certificate got %q without one", got)
	default:
	}

	// sync webhooks use the same settings
	res, raw, _ := postRaw(t, "/calls/before_call", "application/json", `{"call_id":"tls-2"}`)
	var sa answer
	json.Unmarshal([]byte(raw), &sa)
	if res.StatusCode != 202 || sa.Sync["route"] == nil || sa.Sync["route"].Status != 200 {
		t.Errorf("sync over mTLS: %d %s", res.StatusCode, raw)
	}
}

// TestTLSLoadErrors: missing, unreadable and mismatched files fail
// `caddy validate`; https_only and a tls block on http:// fail at adapt
// with the line.
func TestTLSLoadErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	_, certPEM, _ := ca.issue(t, "a", true, nil, nil)
	_, _, otherKey := ca.issue(t, "b", true, nil, nil)
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	certFile := writeFile(t, dir, "a.pem", certPEM)
	otherKeyFile := writeFile(t, dir, "b-key.pem", otherKey)
	notPEM := writeFile(t, dir, "notpem.pem", []byte("hello"))
	validate := func(tlsBlock string) error {
		src := "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl https://crm.example/x\n\t\t\ttls {\n" + tlsBlock + "\n\t\t\t}\n\t\t}\n\t}\n}\n"
		out, err := adapt(t, "Caddyfile", []byte(src))
		if err != nil {
			return err
		}
		var cfg caddy.Config
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		return caddy.Validate(&cfg)
	}
	for name, tt := range map[string]struct{ block, want string }{
		"missing ca":     {"\t\t\t\tca " + filepath.Join(dir, "nope.pem"), "webhook w: tls ca: open"},
		"ca not pem":     {"\t\t\t\tca " + notPEM, "no PEM certificate"},
		"mismatched":     {"\t\t\t\tclient_certificate " + certFile + " " + otherKeyFile, "private key does not match public key"},
		"missing key":    {"\t\t\t\tclient_certificate " + certFile + " " + filepath.Join(dir, "none.pem"), "tls client_certificate"},
		"unknown":        {"\t\t\t\tcert " + certFile, "tls: unknown option \"cert\""},
		"one arg":        {"\t\t\t\tclient_certificate " + certFile, "takes the certificate file and the key file"},
		"fine (control)": {"\t\t\t\tca " + caFile, ""},
	} {
		err := validate(tt.block)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want %q", name, err, tt.want)
		}
	}
	// https_only: an http:// URL is refused at adapt, with the url's line
	src := "{\n\tcallhook {\n\t\thttps_only\n\t}\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl http://crm.example/x\n\t\t}\n\t}\n}\n"
	if _, err := adapt(t, "Caddyfile", []byte(src)); err == nil || !strings.Contains(err.Error(), "https_only") || !strings.Contains(err.Error(), "Caddyfile:10") {
		t.Errorf("https_only: %v", err)
	}
	src = "{\n\tcallhook\n}\n:8080 {\n\tcallhook {\n\t\twebhook w {\n\t\t\ton after_call\n\t\t\turl http://crm.example/x\n\t\t\ttls {\n\t\t\t\tca " + caFile + "\n\t\t\t}\n\t\t}\n\t}\n}\n"
	if _, err := adapt(t, "Caddyfile", []byte(src)); err == nil || !strings.Contains(err.Error(), "only applies to https") || !strings.Contains(err.Error(), "Caddyfile:9") {
		t.Errorf("tls on http: %v", err)
	}
	// the same from JSON
	cfg := `{"apps":{"callhook":{"https_only":true},"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"http://crm.example/x"}]}]}]}}}}}`
	var c caddy.Config
	json.Unmarshal([]byte(cfg), &c)
	if err := caddy.Validate(&c); err == nil || !strings.Contains(err.Error(), "https_only") {
		t.Errorf("JSON https_only: %v", err)
	}
	cfg = `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[{"handler":"callhook","webhooks":[{"name":"w","on":["after_call"],"url":"https://crm.example/x","tls":{"ca":"` + filepath.Join(dir, "nope.pem") + `"}}]}]}]}}}}}`
	c = caddy.Config{}
	json.Unmarshal([]byte(cfg), &c)
	if err := caddy.Validate(&c); err == nil || !strings.Contains(err.Error(), "tls ca") {
		t.Errorf("JSON missing ca: %v", err)
	}
}
