package tokens

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/daemon/oauth"
	"github.com/tokend/tokend/vaultsrc"
)

// Discovery: OIDC's document first, RFC 8414's (path after the
// well-known part) when that is 404; the issuer must match, and the token
// endpoint must be https unless loopback. A keeper with issuer gets its
// token through the discovered endpoint, and reads the metadata again
// after a failure.
func TestDiscover(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	var docs map[string]string
	var srv *httptest.Server
	var hits []string
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits = append(hits, r.URL.Path)
		doc, ok := docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, strings.ReplaceAll(doc, "ISSUER", srv.URL))
	}))
	defer srv.Close()
	tc := func(issuer string) *config.Fetch {
		f := tokenConfig("", "basic+body")
		f.Issuer = issuer
		return f
	}
	good := `{"issuer":"ISSUER/tenant","token_endpoint":"` + ep.TokenURL() + `"}`

	for _, c := range []struct {
		name, path, doc, want string
	}{
		{"oidc", "/tenant/.well-known/openid-configuration", good, ep.TokenURL()},
		{"rfc8414", "/.well-known/oauth-authorization-server/tenant", good, ep.TokenURL()},
		{"wrong issuer", "/tenant/.well-known/openid-configuration", `{"issuer":"https://evil.example","token_endpoint":"https://evil.example/t"}`, `names issuer "https://evil.example"`},
		{"plain http", "/tenant/.well-known/openid-configuration", `{"issuer":"ISSUER/tenant","token_endpoint":"http://api.example.com/t"}`, `is plain http to a host that is not loopback`},
		{"no endpoint", "/tenant/.well-known/openid-configuration", `{"issuer":"ISSUER/tenant"}`, `has no token_endpoint`},
		{"none", "/elsewhere", good, `no discovery document: tried ` + "ISSUER" + `/tenant/.well-known/openid-configuration (404)`},
	} {
		docs = map[string]string{c.path: c.doc}
		got, err := oauth.Discover(context.Background(), http.DefaultClient, tc(srv.URL+"/tenant"))
		want := strings.ReplaceAll(c.want, "ISSUER", srv.URL)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", c.name, got, want)
		}
	}

	// A keeper: discovers, fetches, and discovers again after a failure.
	docs = map[string]string{"/tenant/.well-known/openid-configuration": good}
	hits = nil
	k := New(*tc(srv.URL + "/tenant"), Deps{Creds: &fakeVault{creds: vaultsrc.Credentials{ID: "cid", Secret: "csecret"}}, Client: http.DefaultClient, Log: zerolog.Nop()})
	if _, err := k.obtain(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	ep.Push(daemontest.Fault{Status: 503})
	k.obtain(context.Background(), false)
	if _, err := k.obtain(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 {
		t.Errorf("metadata read %d times for 3 attempts, one failed; want 2: %v", len(hits), hits)
	}
}
