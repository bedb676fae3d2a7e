package socket

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/tokend/tokend/socket/proto"
)

// Proof asks tokend for a DPoP proof (RFC 9449) for a request with
// method to url, bound to the token called name as served now: send it
// as the DPoP header beside "Authorization: DPoP <token>". Only for a
// token with dpop = true.
func (c Client) Proof(ctx context.Context, name, method, url string) (string, error) {
	return c.proto().Do(ctx, proto.Request{Verb: proto.VerbProof, Name: name, Method: method, URL: url}.String())
}

// Transport is an http.RoundTripper that adds the token called Name to
// every request: "Authorization: <type> <token>", and for a DPoP token
// a fresh proof for that request in the DPoP header. Requests go on
// through Base (http.DefaultTransport when nil).
//
//	hc := &http.Client{Transport: &socket.Transport{Name: "vibes"}}
type Transport struct {
	Client Client
	Name   string
	Base   http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	ctx := req.Context()
	// The token and its proof must belong together: the token is asked
	// for again if it changed between the two answers.
	for range 2 {
		tok, err := t.Client.Token(ctx, t.Name, 0)
		if err != nil {
			return nil, err
		}
		out := req.Clone(ctx)
		out.Header.Set("Authorization", tok.TokenType+" "+tok.AccessToken)
		if !strings.EqualFold(tok.TokenType, "DPoP") {
			return base.RoundTrip(out)
		}
		proof, err := t.Client.Proof(ctx, t.Name, req.Method, req.URL.String())
		if err != nil {
			return nil, err
		}
		if !proto.ProofBinds(proof, tok.AccessToken) {
			continue
		}
		out.Header.Set("DPoP", proof)
		return base.RoundTrip(out)
	}
	return nil, errors.New("tokend: the token changed twice while its DPoP proof was made")
}
