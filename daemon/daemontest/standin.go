package daemontest

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// RBMScope is the scope the API documents.
const RBMScope = "https://rbm.vibes.com/rbm.agents"

// Endpoint is a strict stand-in for the API's token Endpoint: it accepts
// only the documented recipe, byte for byte, for its client_auth mode.
type Endpoint struct {
	*httptest.Server
	t    testing.TB
	mode string // basic+body, basic or body

	mu       sync.Mutex
	id, pw   string
	ttl      any // expires_in as sent: int, string or nil (omitted)
	faults   []Fault
	always   *Fault        // after faults, until ClearFaults
	extra    string        // expected after the recipe's body
	hang     chan struct{} // when set, requests block on it
	delay    time.Duration // every answer takes this long
	issued   []string
	problems []string

	Calls, inflight, MaxInflight atomic.Int32
}

type Fault struct {
	Status     int
	RetryAfter string
	Body       string
}

func NewEndpoint(t testing.TB, mode, id, pw string) *Endpoint {
	return newEndpoint(t, mode, id, pw, false)
}

// NewTLSEndpoint is NewEndpoint over https, with a certificate of its own
// CA, whose PEM CAFile holds.
func NewTLSEndpoint(t testing.TB, mode, id, pw string) (e *Endpoint, caFile string) {
	e = newEndpoint(t, mode, id, pw, true)
	caFile = filepath.Join(t.TempDir(), "endpoint-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.Certificate().Raw}), 0o644)
	return e, caFile
}

func newEndpoint(t testing.TB, mode, id, pw string, tls bool) *Endpoint {
	e := &Endpoint{t: t, mode: mode, id: id, pw: pw, ttl: 3600}
	if tls {
		e.Server = httptest.NewTLSServer(http.HandlerFunc(e.serve))
	} else {
		e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	}
	t.Cleanup(func() {
		e.Release()
		e.Close()
		for _, p := range e.problems {
			t.Errorf("token endpoint saw a request off the recipe: %s", p)
		}
	})
	return e
}

func (e *Endpoint) TokenURL() string { return e.URL + "/oauth2/token" }

func (e *Endpoint) SetCreds(id, pw string) {
	e.mu.Lock()
	e.id, e.pw = id, pw
	e.mu.Unlock()
}

// SetTTL sets the expires_in of the tokens issued from now on.
func (e *Endpoint) SetTTL(ttl any) {
	e.mu.Lock()
	e.ttl = ttl
	e.mu.Unlock()
}

// SetDelay makes every answer from now on take d: a slow endpoint.
func (e *Endpoint) SetDelay(d time.Duration) {
	e.mu.Lock()
	e.delay = d
	e.mu.Unlock()
}

// Hold makes requests wait until release: a token endpoint that hangs.
func (e *Endpoint) Hold() {
	e.mu.Lock()
	e.hang = make(chan struct{})
	e.mu.Unlock()
}

// Release lets held requests, and later ones, through.
func (e *Endpoint) Release() {
	e.mu.Lock()
	if e.hang != nil {
		close(e.hang)
		e.hang = nil
	}
	e.mu.Unlock()
}

// Issued lists the tokens issued so far.
func (e *Endpoint) Issued() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.issued)
}

func (e *Endpoint) IssuedCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.issued)
}

func (e *Endpoint) Push(f ...Fault) {
	e.mu.Lock()
	e.faults = append(e.faults, f...)
	e.mu.Unlock()
}

// FailAll answers every request with f, after the pushed faults, until
// ClearFaults.
func (e *Endpoint) FailAll(f Fault) {
	e.mu.Lock()
	e.always = &f
	e.mu.Unlock()
}

// Expect makes the endpoint require these bytes after the recipe's body,
// e.g. "&audience=…&resource=…".
func (e *Endpoint) Expect(extra string) {
	e.mu.Lock()
	e.extra = extra
	e.mu.Unlock()
}

// ClearFaults drops the faults not served yet: the next request succeeds.
func (e *Endpoint) ClearFaults() {
	e.mu.Lock()
	e.faults, e.always = nil, nil
	e.mu.Unlock()
}

func (e *Endpoint) LastToken() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.issued) == 0 {
		return ""
	}
	return e.issued[len(e.issued)-1]
}

// IssuedSince reports whether tok is among the tokens issued after the
// first n.
func (e *Endpoint) IssuedSince(n int, tok string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.issued[n:] {
		if t == tok {
			return true
		}
	}
	return false
}

// recipe is the exact body the API documents.
func recipe(mode, id, pw string) string {
	b := "grant_type=client_credentials"
	if mode != "basic" {
		b += "&client_id=" + url.QueryEscape(id) + "&client_secret=" + url.QueryEscape(pw)
	}
	return b + "&scope=" + url.QueryEscape(RBMScope)
}

func (e *Endpoint) serve(w http.ResponseWriter, r *http.Request) {
	e.Calls.Add(1)
	if n := e.inflight.Add(1); n > e.MaxInflight.Load() {
		e.MaxInflight.Store(n)
	}
	defer e.inflight.Add(-1)
	e.mu.Lock()
	hang := e.hang
	var f *Fault
	if len(e.faults) > 0 {
		f = &e.faults[0]
		e.faults = e.faults[1:]
	} else {
		f = e.always
	}
	id, pw, ttl, extra, delay := e.id, e.pw, e.ttl, e.extra, e.delay
	e.mu.Unlock()
	if hang != nil {
		<-hang
	}
	time.Sleep(delay)
	body, _ := io.ReadAll(r.Body)
	bad := func(format string, args ...any) {
		e.mu.Lock()
		e.problems = append(e.problems, fmt.Sprintf(format, args...))
		e.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_request"}`)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/oauth2/token" {
		bad("%s %s", r.Method, r.URL.Path)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		bad("Content-Type %q", ct)
		return
	}
	if f != nil {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.WriteHeader(f.Status)
		io.WriteString(w, f.Body)
		return
	}
	// Credentials: compare against what this endpoint currently accepts.
	wantAuth := ""
	switch e.mode {
	case "basic+body":
		wantAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+pw))
	case "basic":
		wantAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(pw)))
	}
	gotAuth := r.Header.Get("Authorization")
	if string(body) != recipe(e.mode, id, pw)+extra || gotAuth != wantAuth {
		// Same shape with other credentials is a wrong secret, not a broken recipe.
		form, err := url.ParseQuery(string(body))
		shapeOK := err == nil && form.Get("grant_type") == "client_credentials" && form.Get("scope") == RBMScope &&
			(e.mode == "body") == (gotAuth == "") && (e.mode == "basic") == (form.Get("client_secret") == "")
		if !shapeOK {
			bad("body %q, Authorization header present: %v", body, gotAuth != "")
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="api"`)
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client","error_description":"client authentication failed"}`)
		return
	}
	tok := fmt.Sprintf("tok-%d-%d", time.Now().UnixNano(), e.Calls.Load())
	e.mu.Lock()
	e.issued = append(e.issued, tok)
	e.mu.Unlock()
	resp := map[string]any{"access_token": tok, "token_type": "Bearer"}
	if ttl != nil {
		resp["expires_in"] = ttl
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// VaultStandIn is a small httptest Vault: token lookup-self and one KV v2
// secret. The real server is used elsewhere; here it keeps systemd-focused
// tests fast and independent of the 17-minute Vault build.
func VaultStandIn(t *testing.T, id, secret string) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") != "test-token" {
			w.WriteHeader(403)
			fmt.Fprint(w, `{"errors":["permission denied"]}`)
			return
		}
		switch {
		case r.URL.Path == "/v1/auth/token/lookup-self":
			fmt.Fprint(w, `{"data":{"ttl":0,"renewable":false,"policies":["root"]}}`)
		case strings.HasPrefix(r.URL.Path, "/v1/secret/data/"):
			fmt.Fprintf(w, `{"data":{"data":{"client_id":%q,"client_secret":%q},"metadata":{"version":1}}}`, id, secret)
		default:
			w.WriteHeader(404)
			fmt.Fprint(w, `{"errors":[]}`)
		}
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// StandInConfig is a one-token config against the stand-ins: a Vault
// stand-in holding cid/csecret and the endpoint ep, retry_max 1s.
func StandInConfig(t *testing.T, ep *Endpoint) Config {
	dir := t.TempDir()
	tok := filepath.Join(dir, "vault-token")
	os.WriteFile(tok, []byte("test-token"), 0o644)
	c := OneToken(VaultStandIn(t, "cid", "csecret"), tok, ep.TokenURL())
	c.Vibes().RetryMax = "1s"
	return c
}
