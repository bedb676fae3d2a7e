package oauth

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// NewClient is the HTTP client for token requests. It follows no
// redirect: the request carries the client secret (see fetch). roots nil
// means the system's; cert, when set, gives the client certificate
// (tls_client_auth).
func NewClient(roots *x509.CertPool, cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *http.Client {
	t := &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	if roots != nil || cert != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots, GetClientCertificate: cert, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
