package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/proto"
)

// discover reads the token endpoint from the issuer's metadata: OpenID
// Connect Discovery's /.well-known/openid-configuration, else RFC 8414's
// /.well-known/oauth-authorization-server. The metadata must name the
// same issuer (OIDC Discovery §4.3, RFC 8414 §3.3: else anyone who can
// answer there could send the client secret elsewhere), and its token
// endpoint must be https unless loopback or allowed.
func Discover(ctx context.Context, hc *http.Client, tc *config.Fetch) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tc.RequestTimeout)
	defer cancel()
	iss, err := url.Parse(tc.Issuer)
	if err != nil {
		return "", fmt.Errorf("issuer %q: %w", tc.Issuer, err)
	}
	path := strings.TrimSuffix(iss.Path, "/")
	var tried []string
	for _, where := range []string{
		strings.TrimSuffix(tc.Issuer, "/") + "/.well-known/openid-configuration",
		iss.Scheme + "://" + iss.Host + "/.well-known/oauth-authorization-server" + path,
	} {
		meta, status, err := getMetadata(ctx, hc, where)
		if status == http.StatusNotFound {
			tried = append(tried, where+" (404)")
			continue
		}
		if err != nil {
			return "", fmt.Errorf("discovery at %s: %w", where, err)
		}
		if strings.TrimSuffix(meta.Issuer, "/") != strings.TrimSuffix(tc.Issuer, "/") {
			return "", fmt.Errorf("discovery at %s names issuer %q, not %q", where, proto.Clean(meta.Issuer), tc.Issuer)
		}
		u, err := url.Parse(meta.TokenEndpoint)
		switch {
		case meta.TokenEndpoint == "":
			return "", fmt.Errorf("discovery at %s has no token_endpoint", where)
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil:
			return "", fmt.Errorf("discovery at %s: token_endpoint %q is not an http(s) URL", where, proto.Clean(meta.TokenEndpoint))
		case u.Scheme == "http" && !tc.InsecureHTTP && !config.IsLoopback(u.Hostname()):
			return "", fmt.Errorf("discovery at %s: token_endpoint %q is plain http to a host that is not loopback; set allow_insecure_http = true to allow it", where, u.Redacted())
		}
		return meta.TokenEndpoint, nil
	}
	return "", fmt.Errorf("no discovery document: tried %s", strings.Join(tried, ", "))
}

type metadata struct {
	Issuer        string `json:"issuer"`
	TokenEndpoint string `json:"token_endpoint"`
}

func getMetadata(ctx context.Context, hc *http.Client, where string) (metadata, int, error) {
	var m metadata
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, where, nil)
	if err != nil {
		return m, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return m, 0, scrubURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, resp.StatusCode, fmt.Errorf("answered %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return m, resp.StatusCode, err
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, resp.StatusCode, fmt.Errorf("not JSON metadata: %w", err)
	}
	return m, resp.StatusCode, nil
}
