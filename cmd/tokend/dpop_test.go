package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket"
	"github.com/tokend/tokend/socket/proto"
)

// resourceServer checks DPoP as RFC 9449 §7 says: the proof's signature
// with its jwk, typ, htm, htu, iat, a jti never seen before, ath, its
// own nonce (once, to make the client retry), and the key's thumbprint
// equal to the token's cnf.jkt, which it learns from the authorization
// server's introspection.
type resourceServer struct {
	*httptest.Server
	introspect func(token string) map[string]any
	mu         sync.Mutex
	jtis       map[string]bool
	nonce      string // required when set
	ok, bad    int
	problems   []string
}

func newResourceServer(t *testing.T, introspect func(string) map[string]any, nonce string) *resourceServer {
	rs := &resourceServer{introspect: introspect, jtis: map[string]bool{}, nonce: nonce}
	rs.Server = httptest.NewTLSServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.Close)
	return rs
}

// counts are the requests verified and the problems seen so far.
func (rs *resourceServer) counts() (ok int, problems []string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.ok, append([]string(nil), rs.problems...)
}

func (rs *resourceServer) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(code, why string) {
		rs.mu.Lock()
		rs.bad++
		rs.problems = append(rs.problems, why)
		rs.mu.Unlock()
		if code == "use_dpop_nonce" {
			w.Header().Set("DPoP-Nonce", rs.nonce)
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`DPoP error=%q, error_description=%q`, code, why))
		w.WriteHeader(http.StatusUnauthorized)
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "DPoP ")
	if !ok {
		fail("invalid_token", "no DPoP token: "+r.Header.Get("Authorization"))
		return
	}
	header, claims, err := daemontest.VerifyDPoPProof(r.Header.Get("DPoP"))
	if err != nil {
		fail("invalid_dpop_proof", err.Error())
		return
	}
	htu := "https://" + r.Host + r.URL.Path
	sum := sha256.Sum256([]byte(tok))
	iat, _ := claims["iat"].(float64)
	jti, _ := claims["jti"].(string)
	rs.mu.Lock()
	replayed := rs.jtis[jti]
	rs.jtis[jti] = true
	rs.mu.Unlock()
	switch {
	case header["typ"] != "dpop+jwt":
		fail("invalid_dpop_proof", fmt.Sprintf("typ %v", header["typ"]))
	case claims["htm"] != r.Method || claims["htu"] != htu:
		fail("invalid_dpop_proof", fmt.Sprintf("htm %v htu %v, want %s %s", claims["htm"], claims["htu"], r.Method, htu))
	case time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute:
		fail("invalid_dpop_proof", "iat")
	case jti == "" || replayed:
		fail("invalid_dpop_proof", "jti replayed or missing")
	case claims["ath"] != base64.RawURLEncoding.EncodeToString(sum[:]):
		fail("invalid_dpop_proof", "ath")
	case rs.nonce != "" && claims["nonce"] != rs.nonce:
		fail("use_dpop_nonce", "nonce")
	default:
		info := rs.introspect(tok)
		cnf, _ := info["cnf"].(map[string]any)
		if info["active"] != true || cnf == nil || cnf["jkt"] != thumbprint(header["jwk"].(map[string]any)) {
			fail("invalid_token", fmt.Sprintf("introspection %v does not bind the token to the proof's key", info))
			return
		}
		rs.mu.Lock()
		rs.ok++
		rs.mu.Unlock()
		fmt.Fprintf(w, "ok %s %s", r.Method, r.URL.Path)
	}
}

// thumbprint is RFC 7638's, computed here independently of tokend.
func thumbprint(jwk map[string]any) string {
	var members []string
	switch jwk["kty"] {
	case "EC":
		members = []string{"crv", "kty", "x", "y"}
	case "OKP":
		members = []string{"crv", "kty", "x"}
	case "RSA":
		members = []string{"e", "kty", "n"}
	}
	var parts []string
	for _, m := range members {
		parts = append(parts, fmt.Sprintf("%q:%q", m, jwk[m]))
	}
	sum := sha256.Sum256([]byte("{" + strings.Join(parts, ",") + "}"))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// DPoP against the real OAuth2 server (oidc-provider, the client bound
// to DPoP, a nonce required at the token endpoint) and a strict resource
// server (a nonce required once, introspection for cnf.jkt): the token
// is DPoP, PROOF's proofs verify, and the proxy adds a proof to every
// request, answering the resource server's nonce once.
func TestE2EDPoP(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			const id, secret = "dpop-client", "dpop-s3cret"
			idp := daemontest.StartIdP(t, "CLIENT_ID="+id, "CLIENT_SECRET="+secret, "AUTH_METHOD=client_secret_basic", "TTL=600",
				"DPOP=1", "DPOP_NONCE=1")
			introspect := func(tok string) map[string]any {
				req, _ := http.NewRequest("POST", idp.URL+"/token/introspection", strings.NewReader(url.Values{"token": {tok}}.Encode()))
				req.SetBasicAuth(id, secret)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return map[string]any{"error": err.Error()}
				}
				defer resp.Body.Close()
				out := map[string]any{}
				json.NewDecoder(resp.Body).Decode(&out)
				return out
			}
			rs := newResourceServer(t, introspect, "rs-nonce-1")
			dir := t.TempDir()
			secretFile := filepath.Join(dir, "secret")
			os.WriteFile(secretFile, []byte(secret), 0o600)
			caFile := filepath.Join(dir, "rs-ca.pem")
			writeCert(t, caFile, rs.Server)
			port := daemontest.FreePort(t)
			d := daemontest.StartTokend(t, daemontest.Config{
				LogLevel: "debug",
				Token: map[string]*daemontest.TokenConfig{"api": {TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope,
					ClientAuth: "basic", ClientID: id, ClientSecretFile: secretFile, DPoP: true, DPoPAlg: alg, CAFile: caFile}},
				Proxy: map[string]*daemontest.ProxyConfig{"rs": {Listen: fmt.Sprintf("127.0.0.1:%d", port), Upstream: rs.URL}},
			})
			c := proto.Client{Path: d.Sock}
			header, err := c.Do(t.Context(), "HEADER api")
			tok, isDPoP := strings.CutPrefix(header, "DPoP ")
			if err != nil || !isDPoP {
				t.Fatalf("HEADER: %q %v\n%s", header, err, d.Out)
			}
			if info := introspect(tok); info["token_type"] != "DPoP" || info["cnf"] == nil {
				t.Errorf("introspection: %v", info)
			}

			// PROOF, sent by a program that calls the API itself. The
			// first request meets the resource server's nonce.
			for i, want := range []int{401, 200} {
				proof, err := c.Do(t.Context(), "PROOF api GET "+rs.URL+"/v1/things?page=2")
				if err != nil {
					t.Fatalf("PROOF: %v", err)
				}
				req, _ := http.NewRequest("GET", rs.URL+"/v1/things?page=2", nil)
				req.Header.Set("Authorization", "DPoP "+tok)
				req.Header.Set("DPoP", proof)
				resp, err := rs.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("request %d with PROOF's proof: %d, want %d; problems %v", i+1, resp.StatusCode, want, problemsOf(rs))
				}
				if i == 0 {
					// A program learns the nonce from the 401; tokend
					// learns it when its proxy meets it. Here: through it.
					if code, _ := curlAs(t, 0, fmt.Sprintf("http://127.0.0.1:%d/warm", port)); code != "200" {
						t.Fatalf("through the proxy: %s; problems %v", code, problemsOf(rs))
					}
				}
			}
			// Through the proxy: a proof per request, each verified.
			before, _ := rs.counts()
			for range 3 {
				if code, body := curlAs(t, 0, "-X", "POST", "-d", "x=1", fmt.Sprintf("http://127.0.0.1:%d/v1/orders", port)); code != "200" || body != "ok POST /v1/orders" {
					_, problems := rs.counts()
					t.Errorf("through the proxy: %s %q; problems %v", code, body, problems)
				}
			}
			if after, _ := rs.counts(); after-before != 3 {
				t.Errorf("%d requests verified, want 3", after-before)
			}
			// tokenctl header --method --url: both lines, for curl -H @-.
			out, errs, code := d.Ctl("header", "--method", "GET", "--url", rs.URL+"/v1/report", "api")
			lines := strings.Split(out, "\n")
			if code != 0 || len(lines) != 2 || lines[0] != "Authorization: DPoP "+tok || !strings.HasPrefix(lines[1], "DPoP: ") {
				t.Fatalf("tokenctl header --method --url: exit %d %q %q", code, out, errs)
			}
			req, _ := http.NewRequest("GET", rs.URL+"/v1/report", nil)
			req.Header.Set("Authorization", strings.TrimPrefix(lines[0], "Authorization: "))
			req.Header.Set("DPoP", strings.TrimPrefix(lines[1], "DPoP: "))
			if resp, err := rs.Client().Do(req); err != nil || resp.StatusCode != 200 {
				t.Errorf("with tokenctl's headers: %v %v; problems %v", resp, err, problemsOf(rs))
			}
			// The Go client's Transport: token and proof on every request.
			hc := &http.Client{Transport: &socket.Transport{Client: socket.Client{Path: d.Sock}, Name: "api", Base: rs.Client().Transport}}
			for range 2 {
				resp, err := hc.Get(rs.URL + "/v1/go")
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("socket.Transport: %v %v; problems %v", resp, err, problemsOf(rs))
				} else {
					resp.Body.Close()
				}
			}
			// A bearer-style PROOF for a method in lower case is refused.
			if _, err := c.Do(t.Context(), "PROOF api get https://x/"); err == nil || !strings.Contains(err.Error(), "bad-request") {
				t.Errorf("PROOF with a bad method: %v", err)
			}
			for _, want := range []string{"DPoP key made", "the token endpoint asked for a DPoP nonce", "the upstream asked for a DPoP nonce"} {
				if !strings.Contains(d.Out.String(), want) {
					t.Errorf("the log lacks %q", want)
				}
			}
			d.NoLeaks(secret, tok)
		})
	}
}

// writeCert writes a test server's certificate, to be trusted as a CA.
func writeCert(t *testing.T, file string, s *httptest.Server) {
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Certificate-bound tokens (RFC 8705 §3) through the proxy: oidc-provider
// binds the token to the client certificate tokend presents
// (tls_client_auth, the certificate and key from files), and the proxy
// presents the same certificate to the resource server, which checks the
// token's cnf.x5t#S256 (by introspection) against it.
func TestE2EProxyCertificateBound(t *testing.T) {
	dir := t.TempDir()
	caFile, issue := testCA(t, dir, "mtls")
	serverCert, serverKey := issue("127.0.0.1")
	clientCert, clientKey := issue("tokend-client")
	os.Chmod(clientKey, 0o600)
	idp := daemontest.StartIdP(t, "CLIENT_ID=mtls-client", "AUTH_METHOD=tls_client_auth", "CLIENT_DN=CN=tokend-client", "TTL=600",
		"TLS_CERT="+serverCert, "TLS_KEY="+serverKey, "CLIENT_CA="+caFile, "CERT_BOUND=1")
	pair, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	var mu sync.Mutex
	var seen []string
	rs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Introspection over mutual TLS as the client itself.
		cert, _ := tls.LoadX509KeyPair(clientCert, clientKey)
		ic := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
		resp, err := ic.PostForm(idp.URL+"/token/introspection", url.Values{"token": {tok}, "client_id": {"mtls-client"}})
		info := map[string]any{}
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&info)
			resp.Body.Close()
		}
		cnf, _ := info["cnf"].(map[string]any)
		var presented string
		if len(r.TLS.PeerCertificates) > 0 {
			sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
			presented = base64.RawURLEncoding.EncodeToString(sum[:])
		}
		mu.Lock()
		seen = append(seen, fmt.Sprintf("active=%v cnf=%v presented=%s", info["active"], cnf, presented))
		mu.Unlock()
		if info["active"] != true || cnf == nil || cnf["x5t#S256"] != presented || presented == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "bound ok")
	}))
	rs.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert}
	rs.StartTLS()
	defer rs.Close()

	port := daemontest.FreePort(t)
	d := daemontest.StartTokend(t, daemontest.Config{
		Token: map[string]*daemontest.TokenConfig{"api": {TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope,
			ClientAuth: "tls_client_auth", ClientID: "mtls-client", TLSCertFile: clientCert, TLSKeyFile: clientKey, CAFile: caFile}},
		Proxy: map[string]*daemontest.ProxyConfig{"rs": {Listen: fmt.Sprintf("127.0.0.1:%d", port), Upstream: rs.URL}},
	})
	d.Token("api")
	if code, body := curlAs(t, 0, fmt.Sprintf("http://127.0.0.1:%d/v1/bound", port)); code != "200" || body != "bound ok" {
		mu.Lock()
		defer mu.Unlock()
		t.Errorf("through the proxy: %s %q; the resource server saw %v", code, body, seen)
	}
	key, _ := os.ReadFile(clientKey)
	d.NoLeaks(strings.Split(string(key), "\n")[1])
}

func problemsOf(rs *resourceServer) []string {
	_, p := rs.counts()
	return p
}
