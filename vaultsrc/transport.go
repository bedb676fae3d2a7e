package vaultsrc

import (
	"fmt"
	"io"
	"net/http"
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
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != g.host {
		return nil, fmt.Errorf("vault at %s redirected to %s://%s: tokend sends its Vault token to no other host (point address at the active node, or let the standby forward requests)",
			g.host, req.URL.Scheme, req.URL.Host)
	}
	resp, err := g.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = capped{io.LimitReader(resp.Body, maxBody), resp.Body}
	return resp, nil
}

type capped struct {
	io.Reader
	io.Closer
}
