package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

func tokenConfig(url, mode string) *config.Fetch {
	return &config.Fetch{Name: "vibes", TokenURL: url, Scope: daemontest.RBMScope, ClientAuth: mode,
		MinRemaining: time.Minute, RetryMax: 30 * time.Second, RequestTimeout: 2 * time.Second}
}

// The recipe is followed byte for byte in each mode, with a secret full of
// characters that form-encoding changes.
func TestFetchRecipe(t *testing.T) {
	const id, pw = "rbm client", "p+s/w:d=1%&"
	for _, mode := range []string{"basic+body", "basic", "body"} {
		t.Run(mode, func(t *testing.T) {
			e := daemontest.NewEndpoint(t, mode, id, pw)
			g, err := Fetch(context.Background(), http.DefaultClient, tokenConfig(e.TokenURL(), mode), vaultsrc.Credentials{ID: id, Secret: pw}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if g.AccessToken != e.LastToken() || g.TokenType != "Bearer" || g.Lifetime != time.Hour {
				t.Errorf("Grant %+v", g)
			}
		})
	}
}

func TestFetchAnswers(t *testing.T) {
	tests := []struct {
		name     string
		f        daemontest.Fault
		ttl      any
		wantErr  string
		lifetime time.Duration
	}{
		{name: "expires_in string", ttl: "120", lifetime: 2 * time.Minute},
		{name: "expires_in missing", ttl: nil, lifetime: DefaultLifetime},
		{name: "503 with Retry-After", f: daemontest.Fault{Status: 503, RetryAfter: "7", Body: "busy"}, wantErr: "answered 503"},
		{name: "429", f: daemontest.Fault{Status: 429, Body: `{"error":"slow_down"}`}, wantErr: "429 slow_down"},
		{name: "garbage", f: daemontest.Fault{Status: 200, Body: "<html>"}, wantErr: "not a JSON object"},
		{name: "no access_token", f: daemontest.Fault{Status: 200, Body: `{"token_type":"Bearer"}`}, wantErr: "no access_token"},
		{name: "token with space", f: daemontest.Fault{Status: 200, Body: `{"access_token":"a b","expires_in":60}`}, wantErr: "spaces"},
		{name: "bad expires_in", f: daemontest.Fault{Status: 200, Body: `{"access_token":"a","expires_in":"soon"}`}, wantErr: "expires_in"},
		{name: "huge body", f: daemontest.Fault{Status: 200, Body: strings.Repeat("x", maxBody+10)}, wantErr: "larger than"},
		{name: "invalid_scope", f: daemontest.Fault{Status: 400, Body: `{"error":"invalid_scope","error_description":"nope"}`}, wantErr: `400 invalid_scope`},
		{name: "expires_in NaN", f: daemontest.Fault{Status: 200, Body: `{"access_token":"a","expires_in":"NaN"}`}, wantErr: "expires_in"},
		{name: "expires_in Inf", f: daemontest.Fault{Status: 200, Body: `{"access_token":"a","expires_in":"+Inf"}`}, wantErr: "expires_in"},
		{name: "expires_in negative", f: daemontest.Fault{Status: 200, Body: `{"access_token":"a","expires_in":-5}`}, wantErr: "expires_in"},
		{name: "expires_in zero", f: daemontest.Fault{Status: 200, Body: `{"access_token":"a","expires_in":0}`}, wantErr: "expires_in"},
		{name: "expires_in under a second", f: daemontest.Fault{Status: 200, Body: `{"access_token":"a","expires_in":0.5}`}, wantErr: "expires_in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := daemontest.NewEndpoint(t, "basic+body", "id", "pw")
			e.SetTTL(tt.ttl)
			if tt.f.Status != 0 {
				e.Push(tt.f)
			}
			g, err := Fetch(context.Background(), http.DefaultClient, tokenConfig(e.TokenURL(), "basic+body"), vaultsrc.Credentials{ID: "id", Secret: "pw"}, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				var ee *EndpointError
				if tt.f.RetryAfter != "" && (!errors.As(err, &ee) || ee.RetryAfter != 7*time.Second) {
					t.Errorf("Retry-After not parsed: %#v", err)
				}
				return
			}
			if err != nil || g.Lifetime != tt.lifetime || g.NoExpiry != (tt.ttl == nil) {
				t.Fatalf("Grant %+v, err %v", g, err)
			}
		})
	}
}

func TestFetchRejectedAndTimeout(t *testing.T) {
	e := daemontest.NewEndpoint(t, "basic+body", "id", "right")
	_, err := Fetch(context.Background(), http.DefaultClient, tokenConfig(e.TokenURL(), "basic+body"), vaultsrc.Credentials{ID: "id", Secret: "wrong"}, nil)
	var ee *EndpointError
	if !errors.As(err, &ee) || !ee.Rejected() || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("want a rejection without the secret, got %v", err)
	}

	e.Hold()
	tc := tokenConfig(e.TokenURL(), "basic+body")
	tc.RequestTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err = Fetch(context.Background(), http.DefaultClient, tc, vaultsrc.Credentials{ID: "id", Secret: "right"}, nil)
	if err == nil || !strings.Contains(err.Error(), "timed out") || time.Since(start) > 5*time.Second {
		t.Fatalf("hang: %v after %v", err, time.Since(start))
	}
}

// A server that echoes the secret into its error answer, in any form the
// request carried it or a server might re-encode it, must not get it into
// the error text (served as ERR reasons and STATUS=) or the description
// (logged). The description never reaches clients at all.
func TestFetchErrorHidesEchoedSecret(t *testing.T) {
	const id, pw = "rbm client", `p"+s/w\d=1%&é`
	lowerHex := func(s string) string {
		return regexp.MustCompile(`%[0-9A-F]{2}`).ReplaceAllStringFunc(s, strings.ToLower)
	}
	jsonU := func(s string) string { // every byte as a \u escape, as JSON allows
		var b strings.Builder
		for _, r := range s {
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		return b.String()
	}
	forms := map[string]string{
		"raw":                 pw,
		"form-encoded":        url.QueryEscape(pw),
		"form-encoded, lower": lowerHex(url.QueryEscape(pw)),
		"path-encoded":        url.PathEscape(pw),
		"path-encoded, lower": lowerHex(url.PathEscape(pw)),
		"base64 secret":       base64.StdEncoding.EncodeToString([]byte(pw)),
		"base64url secret":    base64.RawURLEncoding.EncodeToString([]byte(pw)),
		"basic literal":       base64.StdEncoding.EncodeToString([]byte(id + ":" + pw)),
		"basic rfc":           base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(pw))),
	}
	for name, form := range forms {
		for _, field := range []string{"error_description", "error"} {
			e := daemontest.NewEndpoint(t, "basic+body", id, pw)
			raw, _ := json.Marshal("bad client secret " + form + " here")
			text := string(raw)
			if name == "raw" {
				text = `"bad client secret ` + jsonU(pw) + ` here"`
			}
			body := `{"error":"invalid_client","error_description":` + text + `}`
			if field == "error" {
				body = `{"error":` + text + `}`
			}
			e.Push(daemontest.Fault{Status: 401, Body: body})
			_, err := Fetch(context.Background(), http.DefaultClient, tokenConfig(e.TokenURL(), "basic+body"), vaultsrc.Credentials{ID: id, Secret: pw}, nil)
			var ee *EndpointError
			if !errors.As(err, &ee) || !ee.Rejected() {
				t.Fatalf("%s in %s: %v", name, field, err)
			}
			for what, txt := range map[string]string{"error text": err.Error(), "description": ee.Description} {
				for _, f := range forms {
					if strings.Contains(txt, f) || strings.Contains(txt, proto.Clean(f)) || strings.Contains(txt, strings.Trim(strconv.Quote(f), `"`)) {
						t.Errorf("%s in %s: the %s holds the secret: %s", name, field, what, txt)
					}
				}
			}
			if strings.Contains(err.Error(), "here") {
				t.Errorf("%s in %s: the description reached the client-facing text: %s", name, field, err)
			}
		}
	}
}

// A token request follows no redirect: the catcher it points to, on
// another port and over plain http, receives nothing, and the error names
// the status and the Location's host.
func TestFetchNoRedirect(t *testing.T) {
	var caught atomic.Int32
	catcher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { caught.Add(1) }))
	defer catcher.Close()
	target := catcher.URL + "/steal"
	for _, status := range []int{301, 302, 303, 307, 308} {
		redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target, status)
		}))
		hc := NewClient(nil, nil)
		hc.Transport.(*http.Transport).TLSClientConfig = redirector.Client().Transport.(*http.Transport).TLSClientConfig
		_, err := Fetch(context.Background(), hc, tokenConfig(redirector.URL+"/oauth2/token", "basic+body"), vaultsrc.Credentials{ID: "id", Secret: "pw"}, nil)
		redirector.Close()
		want := fmt.Sprintf("answered %d: a redirect to %s; tokend does not follow redirects", status, strings.TrimSuffix(catcher.URL, "/steal"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%d: %v, want %q", status, err, want)
		}
	}
	if n := caught.Load(); n != 0 {
		t.Errorf("the catcher received %d requests", n)
	}
}

// audience, resource (one field per entry) and extra_params (sorted by
// key) reach the endpoint byte for byte after the recipe's fields; what
// tokend sends itself cannot be set through extra_params.
func TestFetchParams(t *testing.T) {
	const id, pw = "cid", "csecret"
	e := daemontest.NewEndpoint(t, "basic+body", id, pw)
	cfg := daemontest.OneToken("http://127.0.0.1:8200", "/t", e.TokenURL())
	v := cfg.Vibes()
	v.Audience = "https://api.example.com/"
	v.Resource = []string{"https://a.example.com/v1", "urn:example:b"}
	v.ExtraParams = map[string]string{"tenant": "t 1&2", "a_first": "x"}
	c, err := config.ParseConfig("p.toml", []byte(cfg.TOML()))
	if err != nil {
		t.Fatal(err)
	}
	e.Expect("&audience=https%3A%2F%2Fapi.example.com%2F&resource=https%3A%2F%2Fa.example.com%2Fv1&resource=urn%3Aexample%3Ab&a_first=x&tenant=t+1%262")
	if _, err := Fetch(context.Background(), http.DefaultClient, &c.Tokens["vibes"].Fetch, vaultsrc.Credentials{ID: id, Secret: pw}, nil); err != nil {
		t.Fatalf("fetch with the parameters: %v", err)
	}

	for extra, want := range map[string]string{
		"extra_params = { client_assertion_type = \"x\" }\n": `token.vibes.extra_params: "client_assertion_type" is set by tokend itself`,
		"extra_params = { scope = \"x\" }\n":                 `token.vibes.extra_params: "scope" is set by tokend itself`,
		"extra_params = { n = 1 }\n":                         `token.vibes.extra_params: n: want a string, got an integer`,
		"extra_params = \"a=b\"\n":                           `token.vibes.extra_params: want a table`,
		"resource = [\"relative/path\"]\n":                   `token.vibes.resource: "relative/path" is not an absolute URI`,
		"resource = [\"https://x/#frag\"]\n":                 `token.vibes.resource: "https://x/#frag" is not an absolute URI without a fragment`,
		"resource = \"https://x/\"\n":                        `line 10: token.vibes.resource: want an array, got a string`,
	} {
		base := daemontest.OneToken("http://127.0.0.1:8200", "/t", e.TokenURL()).TOML()
		_, err := config.ParseConfig("p.toml", []byte(base+extra))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v\nwant %s", extra, err, want)
		}
	}
}

// An endpoint that echoes the client assertion (private_key_jwt) gets it
// hidden like a secret: it is a credential until it expires.
func TestFetchErrorHidesEchoedAssertion(t *testing.T) {
	const assertion = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjIn0.c2lnbmF0dXJlLW9mLXRoZS1hc3NlcnRpb24"
	e := daemontest.NewEndpoint(t, "basic+body", "c", "unused")
	for _, echo := range []string{assertion, "c2lnbmF0dXJlLW9mLXRoZS1hc3NlcnRpb24"} {
		e.Push(daemontest.Fault{Status: 401, Body: `{"error":"invalid_client","error_description":"bad assertion ` + echo + `"}`})
		tc := tokenConfig(e.TokenURL(), "private_key_jwt")
		_, err := Fetch(context.Background(), http.DefaultClient, tc, vaultsrc.Credentials{ID: "c", Assertion: assertion}, nil)
		var ee *EndpointError
		if !errors.As(err, &ee) || !ee.Rejected() {
			t.Fatalf("%v", err)
		}
		if strings.Contains(ee.Description, "c2lnbmF0dXJl") || !strings.Contains(ee.Description, "bad assertion") {
			t.Errorf("the description holds the assertion: %q", ee.Description)
		}
	}
}
