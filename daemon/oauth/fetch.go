// Package oauth is tokend's OAuth2 client: one client-credentials token
// request (the API's documented recipe, RFC 6749's header and body forms,
// private_key_jwt and tls_client_auth), the assertions private_key_jwt
// signs, the discovery of a token endpoint from its issuer, and the HTTP
// client that never follows a redirect with a secret.
//
// Nothing it returns holds a secret: the server's texts are redacted in
// every encoding of the secret and cleaned to one printable line before
// they reach an error.
package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/internal/buildinfo"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// maxBody caps what is read of a token endpoint's answer.
const maxBody = 1 << 20

// DefaultLifetime is assumed when an answer has no expires_in: short, so
// a token of unknown life is replaced soon.
const DefaultLifetime = 5 * time.Minute

// Grant is a token endpoint's successful answer.
type Grant struct {
	AccessToken string
	TokenType   string
	Lifetime    time.Duration
	NoExpiry    bool // expires_in was missing; Lifetime is the default
}

// EndpointError is a failed token request. Its text never holds a secret.
// It goes to clients (ERR unavailable) and to systemd's STATUS=, which any
// local user can read, so it leaves out the server's free-text
// error_description: that is for the log only (Description), redacted and
// cleaned like every server text.
type EndpointError struct {
	Status      int    // HTTP status, 0 when no answer arrived
	Code        string // RFC 6749 §5.2 "error", if any
	Description string // error_description; logs only
	RetryAfter  time.Duration
	Err         error // transport or decoding failure
}

func (e *EndpointError) Error() string {
	switch {
	case e.Status == 0:
		return fmt.Sprintf("token endpoint unreachable: %v", e.Err)
	case e.Err != nil:
		return fmt.Sprintf("token endpoint answered %d: %v", e.Status, e.Err)
	case e.Code != "":
		return fmt.Sprintf("token endpoint answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("token endpoint answered %d %s", e.Status, http.StatusText(e.Status))
}

func (e *EndpointError) Unwrap() error { return e.Err }

// Rejected reports whether the endpoint refused the client's credentials,
// which calls for a fresh read of the secret (it may have been rotated).
func (e *EndpointError) Rejected() bool {
	return e.Status == http.StatusUnauthorized || e.Code == "invalid_client"
}

// tokenRequest builds the client-credentials request. "basic+body" is the
// API's documented recipe byte for byte: the raw "id:secret" in the Basic
// header and both again in the form, fields in the documented order.
// "basic" form-encodes id and secret before base64, as RFC 6749 §2.3.1
// says and strict servers require; "body" is client_secret_post.
func tokenRequest(ctx context.Context, tc *config.Fetch, creds vaultsrc.Credentials) (*http.Request, error) {
	var body strings.Builder
	body.WriteString("grant_type=client_credentials")
	switch tc.ClientAuth {
	case "private_key_jwt":
		// The keeper signs a fresh assertion for every request.
		if creds.Assertion == "" {
			return nil, errors.New("private_key_jwt: no client assertion to send")
		}
		body.WriteString("&client_id=" + url.QueryEscape(creds.ID))
		body.WriteString("&client_assertion_type=" + url.QueryEscape(assertionType))
		body.WriteString("&client_assertion=" + creds.Assertion)
	case "basic+body", "body":
		body.WriteString("&client_id=" + url.QueryEscape(creds.ID))
		body.WriteString("&client_secret=" + url.QueryEscape(creds.Secret))
	case "tls_client_auth":
		// RFC 8705 §2.1: the TLS handshake authenticates; the body names
		// the client.
		body.WriteString("&client_id=" + url.QueryEscape(creds.ID))
	}
	if tc.Scope != "" {
		body.WriteString("&scope=" + url.QueryEscape(tc.Scope))
	}
	body.WriteString(tc.Params)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tc.TokenURL, strings.NewReader(body.String()))
	if err != nil {
		return nil, fmt.Errorf("token request for %q: %w", tc.TokenURL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tokend/"+buildinfo.Version)
	switch tc.ClientAuth {
	case "basic+body":
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(basicLiteral(creds))))
	case "basic":
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(basicEncoded(creds))))
	}
	return req, nil
}

// basicLiteral is what "basic+body" puts in the Basic header, base64 aside:
// the API's recipe, the raw "id:secret".
func basicLiteral(c vaultsrc.Credentials) string { return c.ID + ":" + c.Secret }

// basicEncoded is the RFC 6749 §2.3.1 form "basic" uses: id and secret
// form-encoded first.
func basicEncoded(c vaultsrc.Credentials) string {
	return url.QueryEscape(c.ID) + ":" + url.QueryEscape(c.Secret)
}

// Fetch performs one token request.
//
// With dp (dpop = true) the request carries a DPoP proof, and a
// DPoP-Nonce the endpoint sends is kept for the next proofs; an answer
// use_dpop_nonce is the caller's to retry (a new client assertion may be
// needed too).
func Fetch(ctx context.Context, hc *http.Client, tc *config.Fetch, creds vaultsrc.Credentials, dp *DPoP) (Grant, error) {
	ctx, cancel := context.WithTimeout(ctx, tc.RequestTimeout)
	defer cancel()
	req, err := tokenRequest(ctx, tc, creds)
	if err != nil {
		return Grant{}, err
	}
	if dp != nil {
		proof, err := dp.Proof(http.MethodPost, tc.TokenURL, "", time.Now())
		if err != nil {
			return Grant{}, err
		}
		req.Header.Set("DPoP", proof)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Grant{}, &EndpointError{Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	if dp != nil {
		dp.SetNonce(tc.TokenURL, resp.Header.Get("DPoP-Nonce"))
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Never followed (the client's CheckRedirect): the request carries
		// the secret, and a redirect may point anywhere.
		where := "no Location"
		if loc, err := resp.Location(); err == nil {
			where = "a redirect to " + loc.Scheme + "://" + loc.Host
		}
		return Grant{}, &EndpointError{Status: resp.StatusCode, Err: fmt.Errorf("%s; tokend does not follow redirects with the client secret: set token_url to the final URL", where)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return Grant{}, &EndpointError{Status: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if len(body) > maxBody {
		return Grant{}, &EndpointError{Status: resp.StatusCode, Err: fmt.Errorf("answer larger than %d bytes", maxBody)}
	}
	if resp.StatusCode != http.StatusOK {
		e := &EndpointError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil {
			// An error code is one word (invalid_client); free text in
			// its place is logged like a description, never served.
			if isCode(oe.Error) {
				e.Code = oe.Error
			} else if oe.Error != "" {
				oe.Description = strings.TrimSpace("error " + oe.Error + "; " + oe.Description)
			}
			e.Description = serverText(oe.Description, proto.MaxText, creds)
		}
		return Grant{}, e
	}
	return parseGrant(resp.StatusCode, body, creds)
}

// parseGrant decodes a 200 answer; creds are only for hiding the secret
// from error texts.
func parseGrant(status int, body []byte, creds vaultsrc.Credentials) (Grant, error) {
	var g struct {
		AccessToken *string         `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	bad := func(format string, args ...any) (Grant, error) {
		return Grant{}, &EndpointError{Status: status, Err: fmt.Errorf(format, args...)}
	}
	if err := json.Unmarshal(body, &g); err != nil {
		return bad("answer is not a JSON object")
	}
	if g.AccessToken == nil || *g.AccessToken == "" {
		return bad("answer has no access_token")
	}
	// The token travels on one protocol line: refuse anything that would
	// break it (and never quote it).
	if !isTokenText(*g.AccessToken) {
		return bad("access_token has spaces or non-printable characters")
	}
	out := Grant{AccessToken: *g.AccessToken, TokenType: g.TokenType}
	if out.TokenType == "" {
		out.TokenType = "Bearer"
	} else if !isTokenText(out.TokenType) || len(out.TokenType) > 64 {
		return bad("token_type %q is not a single word", serverText(out.TokenType, 64, creds))
	}
	if strings.EqualFold(out.TokenType, "bearer") {
		out.TokenType = "Bearer"
	}
	secs, present, err := parseExpiresIn(g.ExpiresIn, creds)
	if err != nil {
		return bad("%v", err)
	}
	if !present {
		out.Lifetime, out.NoExpiry = DefaultLifetime, true
	} else {
		out.Lifetime = time.Duration(secs) * time.Second
	}
	return out, nil
}

// parseExpiresIn accepts a JSON number or a numeric string.
func parseExpiresIn(raw json.RawMessage, creds vaultsrc.Credentials) (secs int64, present bool, err error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, false, nil
	}
	if uq, uerr := strconv.Unquote(s); uerr == nil && strings.HasPrefix(s, `"`) {
		s = strings.TrimSpace(uq)
	}
	f, perr := strconv.ParseFloat(s, 64)
	// Written so that NaN fails too; Inf is over the bound. Under a second
	// would truncate to a lifetime of 0.
	if perr != nil || !(f >= 1 && f <= 10*365*24*3600) {
		return 0, true, fmt.Errorf("expires_in %q is not a number of seconds from 1 to 10 years", serverText(s, 32, creds))
	}
	return int64(f), true, nil
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// isCode reports whether s looks like an RFC 6749 §5.2 error code.
func isCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// IsTokenText reports whether s can be a token or a token type: one word
// of printable ASCII, so that it can neither break a protocol line nor
// add a header.
func IsTokenText(s string) bool { return isTokenText(s) }

func isTokenText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return s != ""
}

// serverText makes text a server sent safe to log and to serve: the client
// secret removed in every form the request carried it or a server might
// echo it (raw; form- or path-encoded with either case of hex; base64,
// padded or not, standard or URL alphabet, of the secret and of both Basic
// credentials), then cleaned and capped. JSON's \u escapes are undone by
// the decoder before this sees the text.
func serverText(s string, max int, c vaultsrc.Credentials) string {
	return proto.CleanN(redact(s, secretForms(c)), max)
}

// secretForms lists the encodings of c's secret, and the client assertion
// (a credential for its two minutes) and its signature, to hide.
func secretForms(c vaultsrc.Credentials) []string {
	var forms []string
	if c.Assertion != "" {
		forms = append(forms, c.Assertion, c.Assertion[strings.LastIndexByte(c.Assertion, '.')+1:])
	}
	if c.Secret == "" {
		return forms
	}
	forms = append(forms, c.Secret, url.QueryEscape(c.Secret), url.PathEscape(c.Secret))
	for _, plain := range []string{c.Secret, basicLiteral(c), basicEncoded(c)} {
		// Unpadded forms are prefixes of the padded ones.
		forms = append(forms, base64.RawStdEncoding.EncodeToString([]byte(plain)), base64.RawURLEncoding.EncodeToString([]byte(plain)))
	}
	return forms
}

// redact replaces every occurrence of the forms in s, ignoring ASCII case
// (percent-encoding may use either; hiding a little more is harmless).
func redact(s string, forms []string) string {
	fold := asciiLower(s)
	var hide []bool
	for _, f := range forms {
		if f == "" {
			continue
		}
		lf := asciiLower(f)
		for i := 0; ; {
			j := strings.Index(fold[i:], lf)
			if j < 0 {
				break
			}
			if hide == nil {
				hide = make([]bool, len(s))
			}
			for k := i + j; k < i+j+len(lf); k++ {
				hide[k] = true
			}
			i += j + 1
		}
	}
	if hide == nil {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case !hide[i]:
			b.WriteByte(s[i])
		case i == 0 || !hide[i-1]:
			b.WriteString("[redacted]")
		}
	}
	return b.String()
}

// asciiLower lowercases ASCII letters only, so byte offsets stay put.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// scrubURLError shortens timeouts to `Post "…/oauth2/token": timed out`;
// other transport errors keep their shape (`dial tcp …: connection
// refused`). A url.Error names the URL, never the request body.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if errors.Is(err, context.DeadlineExceeded) || ue.Timeout() {
			return fmt.Errorf("%s %q: timed out", ue.Op, ue.URL)
		}
	}
	return err
}
