package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
)

// A real Vault over https (-dev-tls): ca_file makes it trusted, and a
// wrong CA fails with a clear error; auth = "cert" logs in with a client
// certificate the test's CA issued; auth = "jwt" logs in with a JWT the
// test signs, and reads the JWT file again at the next login (the first
// JWT has expired by then).
func TestE2EVaultTLSAuth(t *testing.T) {
	v := daemontest.StartVaultTLS(t)
	v.PutSecret("tokend/vibes", "cid", "csecret")
	v.Call("POST", "sys/policies/acl/reader", map[string]any{"policy": `path "secret/data/tokend/*" { capabilities = ["read"] }`})
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	os.WriteFile(tokenFile, []byte("root"), 0o600)
	start := func(vc daemontest.VaultConfig) *daemontest.Tokend {
		vc.Address = v.Addr
		cfg := daemontest.OneToken(v.Addr, "", ep.TokenURL())
		cfg.LogLevel = "debug"
		cfg.Vault = vc
		return daemontest.StartTokend(t, cfg)
	}

	t.Run("ca_file", func(t *testing.T) {
		d := start(daemontest.VaultConfig{TokenFile: tokenFile, CAFile: v.CAFile})
		if got := d.Token(); got != ep.LastToken() {
			t.Errorf("token %q", got)
		}
		// Vault's own VAULT_CACERT still works, without ca_file.
		cfg := daemontest.OneToken(v.Addr, tokenFile, ep.TokenURL())
		de := daemontest.StartTokend(t, cfg, "VAULT_CACERT="+v.CAFile)
		if got := de.Token(); got != ep.LastToken() {
			t.Errorf("VAULT_CACERT: %q", got)
		}
		// tls_server_name is what the certificate is checked against.
		d3 := start(daemontest.VaultConfig{TokenFile: tokenFile, CAFile: v.CAFile, TLSServerName: "wrong.example"})
		if _, errs, code := d3.Ctl("get"); code != 1 || !strings.Contains(errs, "x509: certificate is valid for localhost") {
			t.Errorf("tls_server_name wrong.example: exit %d %q", code, errs)
		}
		d4 := start(daemontest.VaultConfig{TokenFile: tokenFile, CAFile: v.CAFile, TLSServerName: "localhost"})
		if got := d4.Token(); got != ep.LastToken() {
			t.Errorf("tls_server_name localhost: %q", got)
		}
		other, _ := testCA(t, dir, "other")
		d2 := start(daemontest.VaultConfig{TokenFile: tokenFile, CAFile: other})
		_, errs, code := d2.Ctl("get")
		if code != 1 || !strings.Contains(errs, "certificate signed by unknown authority") {
			t.Errorf("a wrong CA: exit %d %q", code, errs)
		}
	})

	t.Run("cert", func(t *testing.T) {
		caPEM, issue := testCA(t, dir, "hosts")
		certFile, keyFile := issue("host-1")
		ca, _ := os.ReadFile(caPEM)
		v.Call("POST", "sys/auth/cert", map[string]any{"type": "cert"})
		v.Call("POST", "auth/cert/certs/hosts", map[string]any{"certificate": string(ca), "token_policies": "reader"})
		d := start(daemontest.VaultConfig{Auth: "cert", CertFile: certFile, KeyFile: keyFile, CertRole: "hosts", CAFile: v.CAFile})
		d.Token()
		if !strings.Contains(d.Out.String(), `"method":"cert"`) {
			t.Errorf("no cert login logged")
		}
		key, _ := os.ReadFile(keyFile)
		d.NoLeaks(strings.Split(string(key), "\n")[1])
	})

	t.Run("jwt", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
		v.Call("POST", "sys/auth/jwt", map[string]any{"type": "jwt"})
		v.Call("POST", "auth/jwt/config", map[string]any{"jwt_validation_pubkeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))}})
		v.Call("POST", "auth/jwt/role/tokend", map[string]any{"role_type": "jwt", "bound_audiences": []string{"vault"}, "user_claim": "sub",
			"token_policies": []string{"reader"}, "token_ttl": "2s", "token_max_ttl": "3s"})
		jwtFile := filepath.Join(dir, "vault.jwt")
		first := signJWT(t, key, "host-1", 4*time.Second)
		os.WriteFile(jwtFile, []byte(first), 0o600)
		d := start(daemontest.VaultConfig{Auth: "jwt", JWTFile: jwtFile, Role: "tokend", CAFile: v.CAFile})
		d.Token()
		// The workload's JWT rotates; the first one expires in 4s, and the
		// Vault token's max TTL (3s) forces a new login after it.
		os.WriteFile(jwtFile, []byte(signJWT(t, key, "host-1", time.Hour)), 0o600)
		daemontest.WaitFor(t, "a second jwt login", 20*time.Second, func() bool {
			return strings.Count(d.Out.String(), `"method":"jwt"`) >= 2
		})
		time.Sleep(5 * time.Second) // past the first JWT's expiry: only the new one can log in
		n := strings.Count(d.Out.String(), `"method":"jwt"`)
		daemontest.WaitFor(t, "another jwt login, with the rotated JWT", 20*time.Second, func() bool {
			return strings.Count(d.Out.String(), `"method":"jwt"`) > n
		})
		d.NoLeaks(first)
	})
}

// testCA writes a CA to dir and returns its PEM file and a function that
// issues client certificates from it (a server certificate for 127.0.0.1
// when cn is "127.0.0.1").
func testCA(t *testing.T, dir, name string) (string, func(cn string) (certFile, keyFile string)) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(der)
	caFile := filepath.Join(dir, name+"-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return caFile, func(cn string) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if ip := net.ParseIP(cn); ip != nil {
			leaf.IPAddresses, leaf.ExtKeyUsage = []net.IP{ip}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		certFile, keyFile := filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
		return certFile, keyFile
	}
}

// signJWT is an ES256 JWT for Vault's jwt auth: sub, aud "vault", exp.
func signJWT(t *testing.T, key *ecdsa.PrivateKey, sub string, life time.Duration) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	now := time.Now()
	input := enc(map[string]string{"alg": "ES256", "typ": "JWT"}) + "." +
		enc(map[string]any{"sub": sub, "aud": "vault", "iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(life).Unix()})
	h := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// tls_client_auth (RFC 8705) against the real OAuth2 server over https: the
// client certificate and key come from a real Vault's KV; the server
// authenticates the client by the certificate's subject alone. A rotated
// certificate in Vault is presented at the next request.
func TestE2EOAuthServerTLSClientAuth(t *testing.T) {
	v := daemontest.StartVault(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	os.WriteFile(tokenFile, []byte("root"), 0o600)
	caFile, issue := testCA(t, dir, "mtls")
	serverCert, serverKey := issue("127.0.0.1")
	idp := daemontest.StartIdP(t, "CLIENT_ID=mtls-client", "AUTH_METHOD=tls_client_auth", "CLIENT_DN=CN=tokend-client", "TTL=600",
		"TLS_CERT="+serverCert, "TLS_KEY="+serverKey, "CLIENT_CA="+caFile)
	put := func(cn string) {
		certFile, keyFile := issue(cn)
		cert, _ := os.ReadFile(certFile)
		key, _ := os.ReadFile(keyFile)
		v.Call("POST", "secret/data/tokend/mtls", map[string]any{"data": map[string]any{
			"client_id": "mtls-client", "tls_cert": string(cert), "tls_key": string(key)}})
	}
	put("tokend-client")
	d := daemontest.StartTokend(t, daemontest.Config{
		LogLevel: "trace",
		Vault:    daemontest.VaultConfig{Address: v.Addr, TokenFile: tokenFile},
		Token: map[string]*daemontest.TokenConfig{"api": {
			TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope, KVPath: "tokend/mtls",
			ClientAuth: "tls_client_auth", CAFile: caFile, MinRemaining: "1s",
		}},
	})
	if tok := d.Token("api"); len(tok) < 20 {
		t.Fatalf("token %q", tok)
	}
	if !strings.Contains(d.Out.String(), `"subject":"CN=tokend-client"`) {
		t.Errorf("the client certificate's loading is not logged")
	}
	// A certificate with another subject: the server refuses it, which
	// proves the one from Vault is the one presented.
	put("someone-else")
	time.Sleep(2 * time.Second) // the token now has less than 599s left: min=599 refreshes
	_, errs, code := d.Ctl("get", "--min", "599", "api")
	if code != 1 || !strings.Contains(errs, "invalid_client") {
		t.Errorf("with the wrong certificate: exit %d %q", code, errs)
	}
	key, _ := os.ReadFile(filepath.Join(dir, "tokend-client-key.pem"))
	d.NoLeaks(strings.Split(string(key), "\n")[1])
}
