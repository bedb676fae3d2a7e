package daemon

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/vaultsrc"
)

func tokenConfig(url, mode string) *TokenConfig {
	return &TokenConfig{Name: "vibes", TokenURL: url, Scope: rbmScope, ClientAuth: mode,
		MinRemaining: time.Minute, RetryMax: 30 * time.Second, RequestTimeout: 2 * time.Second}
}

// The recipe is followed byte for byte in each mode, with a secret full of
// characters that form-encoding changes.
func TestFetchRecipe(t *testing.T) {
	const id, pw = "rbm client", "p+s/w:d=1%&"
	for _, mode := range []string{"basic+body", "basic", "body"} {
		t.Run(mode, func(t *testing.T) {
			e := newEndpoint(t, mode, id, pw)
			g, err := fetch(context.Background(), http.DefaultClient, tokenConfig(e.tokenURL(), mode), vaultsrc.Credentials{ID: id, Secret: pw})
			if err != nil {
				t.Fatal(err)
			}
			if g.AccessToken != e.lastToken() || g.TokenType != "Bearer" || g.Lifetime != time.Hour {
				t.Errorf("grant %+v", g)
			}
		})
	}
}

func TestFetchAnswers(t *testing.T) {
	tests := []struct {
		name     string
		f        fault
		ttl      any
		wantErr  string
		lifetime time.Duration
	}{
		{name: "expires_in string", ttl: "120", lifetime: 2 * time.Minute},
		{name: "expires_in missing", ttl: nil, lifetime: defaultLifetime},
		{name: "503 with Retry-After", f: fault{status: 503, retryAfter: "7", body: "busy"}, wantErr: "answered 503"},
		{name: "429", f: fault{status: 429, body: `{"error":"slow_down"}`}, wantErr: "429 slow_down"},
		{name: "garbage", f: fault{status: 200, body: "<html>"}, wantErr: "not a JSON object"},
		{name: "no access_token", f: fault{status: 200, body: `{"token_type":"Bearer"}`}, wantErr: "no access_token"},
		{name: "token with space", f: fault{status: 200, body: `{"access_token":"a b","expires_in":60}`}, wantErr: "spaces"},
		{name: "bad expires_in", f: fault{status: 200, body: `{"access_token":"a","expires_in":"soon"}`}, wantErr: "expires_in"},
		{name: "huge body", f: fault{status: 200, body: strings.Repeat("x", maxBody+10)}, wantErr: "larger than"},
		{name: "invalid_scope", f: fault{status: 400, body: `{"error":"invalid_scope","error_description":"nope"}`}, wantErr: `400 invalid_scope: "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEndpoint(t, "basic+body", "id", "pw")
			e.ttl = tt.ttl
			if tt.f.status != 0 {
				e.push(tt.f)
			}
			g, err := fetch(context.Background(), http.DefaultClient, tokenConfig(e.tokenURL(), "basic+body"), vaultsrc.Credentials{ID: "id", Secret: "pw"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				var ee *endpointError
				if tt.f.retryAfter != "" && (!errors.As(err, &ee) || ee.RetryAfter != 7*time.Second) {
					t.Errorf("Retry-After not parsed: %#v", err)
				}
				return
			}
			if err != nil || g.Lifetime != tt.lifetime || g.NoExpiry != (tt.ttl == nil) {
				t.Fatalf("grant %+v, err %v", g, err)
			}
		})
	}
}

func TestFetchRejectedAndTimeout(t *testing.T) {
	e := newEndpoint(t, "basic+body", "id", "right")
	_, err := fetch(context.Background(), http.DefaultClient, tokenConfig(e.tokenURL(), "basic+body"), vaultsrc.Credentials{ID: "id", Secret: "wrong"})
	var ee *endpointError
	if !errors.As(err, &ee) || !ee.rejected() || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("want a rejection without the secret, got %v", err)
	}

	e.mu.Lock()
	e.hang = make(chan struct{})
	e.mu.Unlock()
	tc := tokenConfig(e.tokenURL(), "basic+body")
	tc.RequestTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err = fetch(context.Background(), http.DefaultClient, tc, vaultsrc.Credentials{ID: "id", Secret: "right"})
	if err == nil || !strings.Contains(err.Error(), "timed out") || time.Since(start) > 5*time.Second {
		t.Fatalf("hang: %v after %v", err, time.Since(start))
	}
}

// A server that echoes the secret into its error answer, raw or in any form
// the request carried it (form-encoded, either Basic header), must not
// get it into the error text, which is logged and served as ERR reasons.
func TestFetchErrorHidesEchoedSecret(t *testing.T) {
	const id, pw = "rbm client", `p"+s/w\d=1%&`
	forms := []string{
		pw,
		url.QueryEscape(pw),
		base64.StdEncoding.EncodeToString([]byte(id + ":" + pw)),
		base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(pw))),
	}
	for i, form := range forms {
		e := newEndpoint(t, "basic+body", id, pw)
		desc, _ := json.Marshal("bad client secret " + form)
		e.push(fault{status: 401, body: `{"error":"invalid_client","error_description":` + string(desc) + `}`})
		_, err := fetch(context.Background(), http.DefaultClient, tokenConfig(e.tokenURL(), "basic+body"), vaultsrc.Credentials{ID: id, Secret: pw})
		if err == nil || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("form %d: %v", i, err)
		}
		for _, f := range forms {
			if strings.Contains(err.Error(), f) || strings.Contains(err.Error(), strings.Trim(strconv.Quote(f), `"`)) {
				t.Errorf("form %d: error text holds the secret: %s", i, err)
			}
		}
	}
}
