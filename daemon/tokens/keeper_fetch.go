package tokens

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/oauth"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// One attempt at a token: the credentials from Vault (or memory), the
// client certificate or assertion they make, and the request.

// obtain reads the credentials and asks for a token. When the endpoint
// rejects the client, the secret is read again at once (it may have just
// been rotated) and the request retried if it changed.
func (k *Keeper) obtain(ctx context.Context, cached bool) (oauth.Grant, error) {
	creds := k.cached
	if !cached || creds.ID == "" {
		var err error
		if creds, err = k.credentials(ctx); err != nil {
			return oauth.Grant{}, err
		}
	}
	g, err := k.fetch(ctx, creds)
	var ee *oauth.EndpointError
	if errors.As(err, &ee) && ee.Rejected() {
		src := k.cfg.Source()
		k.log.Warn().Str("error", proto.Clean(err.Error())).Str("source", src).Msg("client credentials rejected; reading them again")
		fresh, verr := k.readCreds(ctx)
		switch {
		case verr != nil:
			k.log.Warn().Err(verr).Msg("reading the client credentials failed; cannot check for rotated ones")
		case fresh == creds:
			k.log.Error().Str("secret", k.secretName()).Msg("the token endpoint rejects the client credentials, and they have not changed: check the client id and secret there")
		default:
			k.log.Info().Str("source", src).Msg("client credentials changed; retrying with them")
			creds = fresh
			g, err = k.fetch(ctx, creds)
		}
	}
	return g, err
}

// fetch makes one token request and reports it.
func (k *Keeper) fetch(ctx context.Context, creds vaultsrc.Credentials) (oauth.Grant, error) {
	tc := k.cfg
	if tc.Issuer != "" {
		if k.endpoint == "" {
			endpoint, err := oauth.Discover(ctx, k.hc, &tc)
			if err != nil {
				return oauth.Grant{}, fmt.Errorf("finding the token endpoint of issuer %s: %w", tc.Issuer, err)
			}
			k.log.Info().Str("issuer", tc.Issuer).Str("token_endpoint", endpoint).Msg("token endpoint discovered")
			k.endpoint = endpoint
		}
		tc.TokenURL = k.endpoint
	}
	if tc.ClientAuth == "tls_client_auth" {
		if err := k.useCertificate(creds); err != nil {
			return oauth.Grant{}, err
		}
	}
	if tc.ClientAuth == "private_key_jwt" {
		// A fresh assertion per request: its jti is never sent twice.
		var err error
		if tc.TransitKey != "" {
			creds.Assertion, err = k.transitAssertion(ctx, &tc, creds.ID)
		} else {
			creds.Assertion, err = oauth.ClientAssertion(&tc, tc.TokenURL, creds.ID, creds.Secret, creds.KeyID, time.Now())
		}
		if err != nil {
			return oauth.Grant{}, err
		}
	}
	if ok, until := k.budget.take(k.clock.Now()); !ok {
		k.obs.Fetched(FetchBudget, 0)
		err := &budgetError{max: k.budget.max, until: until}
		if now := k.clock.Now(); now.Sub(k.budget.warned) >= budgetWindow {
			k.budget.warned = now
			k.log.Error().Int("max_fetches_per_hour", k.budget.max).Time("until", until.UTC()).
				Msg("issuance budget spent: no token requests until the window allows; the current token is served while it lasts")
		}
		return oauth.Grant{}, err
	}
	start := time.Now()
	if tc.DPoP && k.dpop == nil {
		return oauth.Grant{}, errors.New("dpop = true, but no DPoP key could be made (see the log at start)")
	}
	g, err := oauth.Fetch(ctx, k.hc, &tc, creds, k.dpop)
	k.obs.Fetched(fetchResult(err), time.Since(start))
	var ee *oauth.EndpointError
	if k.dpop != nil && errors.As(err, &ee) && ee.Code == "use_dpop_nonce" && !retried(ctx) && k.dpop.Nonce(tc.TokenURL) != "" {
		// RFC 9449 §8: the endpoint wants its nonce in the proof. Once,
		// with everything made afresh (a client assertion's jti too).
		k.log.Debug().Msg("the token endpoint asked for a DPoP nonce: asking again with it")
		return k.fetch(context.WithValue(ctx, retriedKey{}, true), creds)
	}
	if err == nil && k.dpop != nil && !strings.EqualFold(g.TokenType, "DPoP") {
		k.log.Warn().Str("token_type", g.TokenType).Msg("dpop = true, but the token endpoint issued a token that is not DPoP-bound (it ignored the proof): enable DPoP for this client at the authorization server, or set dpop = false to use it as a bearer token")
	}
	if err != nil {
		k.endpoint = "" // the issuer may have moved it: read the metadata again
	}
	return g, err
}

// useCertificate makes the client certificate in creds the one the token
// requests present (tls_client_auth), when it changed.
func (k *Keeper) useCertificate(creds vaultsrc.Credentials) error {
	if creds.Cert+creds.Secret == k.certOf {
		return nil
	}
	cert, err := tls.X509KeyPair([]byte(creds.Cert), []byte(creds.Secret))
	if err != nil {
		return fmt.Errorf("the client certificate and key in %s: %w", k.secretName(), err)
	}
	k.cert.Store(&cert)
	k.certOf = creds.Cert + creds.Secret
	// Connections made with the old certificate would keep presenting it.
	if t, ok := k.hc.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	k.log.Info().Str("subject", cert.Leaf.Subject.String()).Time("not_after", cert.Leaf.NotAfter).Msg("client certificate loaded")
	return nil
}

// ClientCertificate is the TLS client's GetClientCertificate: the
// token's own requests, and the proxy's to its upstream, present it.
func (k *Keeper) ClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := k.cert.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil // none yet: the handshake goes on without one
}

// transitAssertion has Vault Transit sign a fresh client assertion.
func (k *Keeper) transitAssertion(ctx context.Context, tc *config.Fetch, clientID string) (string, error) {
	signer, ok := k.creds.(TransitSigner)
	if !ok {
		return "", fmt.Errorf("transit_key: the credential source cannot sign")
	}
	ctx, cancel := context.WithTimeout(ctx, vaultTimeout)
	defer cancel()
	if k.transitType == "" {
		keyType, err := signer.TransitKeyType(ctx, tc.TransitMount, tc.TransitKey)
		if err != nil {
			return "", err
		}
		k.transitType = keyType
	}
	alg, err := oauth.TransitAlg(k.transitType, tc.AssertionAlg)
	if err != nil {
		return "", err
	}
	a, err := oauth.SignedAssertion(tc, tc.TokenURL, clientID, tc.AssertionKID, alg, time.Now(), func(input []byte) ([]byte, error) {
		return signer.TransitSign(ctx, tc.TransitMount, tc.TransitKey, alg, input)
	})
	if err != nil {
		k.transitType = "" // the key may have been replaced: read its type again
	}
	return a, err
}

// retriedKey marks a token request made again with the DPoP nonce.
type retriedKey struct{}

func retried(ctx context.Context) bool { return ctx.Value(retriedKey{}) != nil }

// fetchResult is the result label of a token request's outcome.
func fetchResult(err error) string {
	var ee *oauth.EndpointError
	switch {
	case err == nil:
		return fetchSuccess
	case !errors.As(err, &ee):
		return fetchError
	case ee.Rejected():
		return fetchRejected
	case ee.Status == http.StatusTooManyRequests:
		return fetchRateLimited
	}
	return fetchError
}

// credentials reads the client credentials, falling back to the last
// good ones when Vault cannot answer quickly (or a file cannot be read).
func (k *Keeper) credentials(ctx context.Context) (vaultsrc.Credentials, error) {
	c, err := k.readCreds(ctx)
	if err == nil {
		return c, nil
	}
	if k.cached.ID == "" {
		return c, fmt.Errorf("no client credentials yet: %w", err)
	}
	k.log.Warn().Err(err).Msg(k.cfg.Source() + " read failed; using the credentials in memory")
	return k.cached, nil
}

// readCreds reads the client credentials from their source: Vault, or
// the files (at every request, so that a rotated file is used at once).
func (k *Keeper) readCreds(ctx context.Context) (vaultsrc.Credentials, error) {
	if k.cfg.Files.Set() {
		c, err := k.cfg.Files.Read("token." + k.cfg.Name)
		if err != nil {
			return c, err
		}
		k.remember(c)
		return c, nil
	}
	timeout := vaultTimeout
	if k.share != nil {
		// A shared token's refresh also waits on Vault for the entry: every
		// step must fit the slack the lease leaves (shareSlack).
		timeout = k.share.vaultTimeout()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := k.creds.Read(ctx, k.cfg.Secret)
	if err != nil {
		return c, err
	}
	k.remember(c)
	return c, nil
}

// remember keeps c as the last good credentials.
func (k *Keeper) remember(c vaultsrc.Credentials) {
	if k.cached.ID != "" && c != k.cached {
		k.log.Info().Str("client_id", c.ID).Str("source", k.cfg.Source()).Msg("client credentials changed")
	}
	k.cached = c
}

// secretName says where the credentials are, for the log: the Vault
// secret, or the files.
func (k *Keeper) secretName() string {
	if f := k.cfg.Files; f.Set() {
		return "files " + strings.Join(slices.DeleteFunc([]string{f.IDFile, f.SecretFile, f.PrivateKeyFile, f.CertFile, f.KeyFile}, func(s string) bool { return s == "" }), ", ")
	}
	return k.cfg.Secret.String()
}
