package daemon

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

	"github.com/tokend/tokend/vaultsrc"
)

// maxBody caps what is read of a token endpoint's answer.
const maxBody = 1 << 20

// defaultLifetime is assumed when an answer has no expires_in: short, so
// a token of unknown life is replaced soon.
const defaultLifetime = 5 * time.Minute

// grant is a token endpoint's successful answer.
type grant struct {
	AccessToken string
	TokenType   string
	Lifetime    time.Duration
	NoExpiry    bool // expires_in was missing; Lifetime is the default
}

// endpointError is a failed token request. Its text never holds a secret.
type endpointError struct {
	Status      int    // HTTP status, 0 when no answer arrived
	Code        string // RFC 6749 §5.2 "error", if any
	Description string
	RetryAfter  time.Duration
	Err         error // transport or decoding failure
}

func (e *endpointError) Error() string {
	switch {
	case e.Status == 0:
		return fmt.Sprintf("token endpoint unreachable: %v", e.Err)
	case e.Err != nil:
		return fmt.Sprintf("token endpoint answered %d: %v", e.Status, e.Err)
	case e.Code != "" && e.Description != "":
		return fmt.Sprintf("token endpoint answered %d %s: %q", e.Status, e.Code, e.Description)
	case e.Code != "":
		return fmt.Sprintf("token endpoint answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("token endpoint answered %d %s", e.Status, http.StatusText(e.Status))
}

// rejected reports whether the endpoint refused the client's credentials,
// which calls for a fresh read of the secret (it may have been rotated).
func (e *endpointError) rejected() bool {
	return e.Status == http.StatusUnauthorized || e.Code == "invalid_client"
}

// tokenRequest builds the client-credentials request. "basic+body" is the
// API's documented recipe byte for byte: the raw "id:secret" in the Basic
// header and both again in the form, fields in the documented order.
// "basic" form-encodes id and secret before base64, as RFC 6749 §2.3.1
// says and strict servers require; "body" is client_secret_post.
func tokenRequest(ctx context.Context, tc *TokenConfig, creds vaultsrc.Credentials) (*http.Request, error) {
	var body strings.Builder
	body.WriteString("grant_type=client_credentials")
	if tc.ClientAuth != "basic" {
		body.WriteString("&client_id=" + url.QueryEscape(creds.ID))
		body.WriteString("&client_secret=" + url.QueryEscape(creds.Secret))
	}
	if tc.Scope != "" {
		body.WriteString("&scope=" + url.QueryEscape(tc.Scope))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tc.TokenURL, strings.NewReader(body.String()))
	if err != nil {
		return nil, fmt.Errorf("token request for %q: %w", tc.TokenURL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tokend/"+Version)
	switch tc.ClientAuth {
	case "basic+body":
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(creds.ID+":"+creds.Secret)))
	case "basic":
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(
			[]byte(url.QueryEscape(creds.ID)+":"+url.QueryEscape(creds.Secret))))
	}
	return req, nil
}

// fetch performs one token request.
func fetch(ctx context.Context, hc *http.Client, tc *TokenConfig, creds vaultsrc.Credentials) (grant, error) {
	ctx, cancel := context.WithTimeout(ctx, tc.RequestTimeout)
	defer cancel()
	req, err := tokenRequest(ctx, tc, creds)
	if err != nil {
		return grant{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return grant{}, &endpointError{Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return grant{}, &endpointError{Status: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if len(body) > maxBody {
		return grant{}, &endpointError{Status: resp.StatusCode, Err: fmt.Errorf("answer larger than %d bytes", maxBody)}
	}
	if resp.StatusCode != http.StatusOK {
		e := &endpointError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil {
			e.Code = serverText(oe.Error, 64, creds)
			e.Description = serverText(oe.Description, 200, creds)
		}
		return grant{}, e
	}
	return parseGrant(resp.StatusCode, body, creds)
}

// parseGrant decodes a 200 answer; creds are only for hiding the secret
// from error texts.
func parseGrant(status int, body []byte, creds vaultsrc.Credentials) (grant, error) {
	var g struct {
		AccessToken *string         `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	bad := func(format string, args ...any) (grant, error) {
		return grant{}, &endpointError{Status: status, Err: fmt.Errorf(format, args...)}
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
	out := grant{AccessToken: *g.AccessToken, TokenType: g.TokenType}
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
		out.Lifetime, out.NoExpiry = defaultLifetime, true
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
	if perr != nil || f <= 0 || f > 10*365*24*3600 {
		return 0, true, fmt.Errorf("expires_in %q is not a positive number of seconds", serverText(s, 32, creds))
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

func isTokenText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return s != ""
}

// serverText makes text a server sent safe to log and to serve as an ERR
// reason: the client secret removed in every form the request carried it
// (a server may echo the request), then printable ASCII, capped. All
// server text in an endpointError passes through here.
func serverText(s string, max int, c vaultsrc.Credentials) string {
	if c.Secret != "" {
		for _, form := range []string{
			base64.StdEncoding.EncodeToString([]byte(c.ID + ":" + c.Secret)),
			base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.ID) + ":" + url.QueryEscape(c.Secret))),
			url.QueryEscape(c.Secret),
			c.Secret,
		} {
			s = strings.ReplaceAll(s, form, "[redacted]")
		}
	}
	b := []byte(s)
	if len(b) > max {
		b = b[:max]
	}
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
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
