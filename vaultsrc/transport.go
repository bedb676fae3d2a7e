package vaultsrc

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// maxBody caps what is read of any Vault answer. The library reads error
// bodies whole (and a proxy's error page may be anything); a KV secret
// holding client credentials is far smaller.
const maxBody = 1 << 20

// guard wraps the Vault client's transport. The library follows one
// redirect by itself (301, 302, 307), sending the Vault token again to
// wherever Location points; guard refuses every request to a host other
// than the configured Vault's, so the token never leaves for another host.
// It also caps every answer's body at maxBody.
type guard struct {
	base http.RoundTripper
	host string // host:port of the configured address
	// certAsked says that Vault asked for a client certificate in a
	// handshake since the last answer, and tokend had none to give. Under
	// TLS 1.3 the refusal that follows reaches the client in many forms
	// (the alert, a broken pipe, a reset, HTTP/2's "client conn could not
	// be established"): this is the one sure sign of the cause.
	certAsked atomic.Bool
}

// watchCertRequests sets certAsked whenever a server asks for a client
// certificate that t has none of (neither VAULT_CLIENT_CERT nor
// cert_file); the handshake then goes on without one, as before.
func (g *guard) watchCertRequests(t *http.Transport) {
	if t.TLSClientConfig == nil || len(t.TLSClientConfig.Certificates) > 0 || t.TLSClientConfig.GetClientCertificate != nil {
		return
	}
	t.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		g.certAsked.Store(true)
		return &tls.Certificate{}, nil
	}
}

// CertRequiredError is a Vault that refused the TLS handshake for want
// of a client certificate, with the fix.
type CertRequiredError struct {
	Host string
	Err  error // the handshake's own error
}

func (e *CertRequiredError) Error() string {
	return "vault at " + e.Host + " requires a client certificate: set VAULT_CLIENT_CERT and VAULT_CLIENT_KEY (Environment= in a drop-in for tokend.service), or auth = \"cert\" with cert_file and key_file"
}

func (e *CertRequiredError) Unwrap() error { return e.Err }

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != g.host {
		return nil, fmt.Errorf("vault at %s redirected to %s://%s: tokend sends its Vault token to no other host (point address at the active node, or let the standby forward requests)",
			g.host, req.URL.Scheme, req.URL.Host)
	}
	resp, err := g.base.RoundTrip(req)
	if err != nil {
		if g.certAsked.Load() || strings.Contains(err.Error(), "tls: certificate required") {
			err = &CertRequiredError{Host: g.host, Err: err}
		}
		return nil, err
	}
	g.certAsked.Store(false)
	resp.Body = capped{io.LimitReader(resp.Body, maxBody), resp.Body}
	return resp, nil
}

type capped struct {
	io.Reader
	io.Closer
}
