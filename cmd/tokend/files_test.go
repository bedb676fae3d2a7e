package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// Client credentials from files, on a host without Vault: each client
// authentication against the real OAuth2 server (oidc-provider), with no
// [vault] table and no Vault anywhere; STATUS and the metrics say so.
func TestE2EFileCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("client_secret_basic", func(t *testing.T) {
		const secret = "file-s3cret+/="
		idp := daemontest.StartIdP(t, "CLIENT_ID=file-client", "CLIENT_SECRET="+secret, "AUTH_METHOD=client_secret_basic", "TTL=600")
		d := daemontest.StartTokend(t, daemontest.Config{Token: map[string]*daemontest.TokenConfig{"api": {
			TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope, ClientAuth: "basic",
			ClientIDFile: write("id", "file-client\n"), ClientSecretFile: write("secret", secret+"\n"),
		}}})
		tok := d.Token("api")
		if len(tok) < 20 {
			t.Fatalf("token %q", tok)
		}
		out, _, code := d.Ctl("status")
		if code != 0 || !strings.Contains(out, "file") {
			t.Errorf("tokenctl status does not say the credentials come from files: exit %d\n%s", code, out)
		}
		st, err := proto.Client{Path: d.Sock}.Do(t.Context(), "STATUS api")
		if err != nil || !strings.Contains(st, " source=file ") {
			t.Errorf("STATUS: %q, %v", st, err)
		}
		m, err := proto.Client{Path: d.Sock}.Metrics(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := daemontest.ParseMetrics(t, string(m)).Value("tokend_token_info", "token", "api", "source", "file"); !ok || v != 1 {
			t.Errorf("tokend_token_info{source=\"file\"}: %v %v", v, ok)
		}
		if strings.Contains(string(m), "tokend_vault_") {
			t.Errorf("Vault series on a host without Vault:\n%s", m)
		}
		if strings.Contains(d.Out.String(), "vault source") {
			t.Errorf("a Vault source was started:\n%s", d.Out)
		}
		d.NoLeaks(secret, tok)
	})
	t.Run("private_key_jwt", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		jwk := jwkOf(t, key.Public(), "file-key")
		jwks, _ := json.Marshal(map[string]any{"keys": []any{jwk}})
		idp := daemontest.StartIdP(t, "CLIENT_ID=jwt-client", "AUTH_METHOD=private_key_jwt", "JWKS="+string(jwks), "TTL=600")
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		d := daemontest.StartTokend(t, daemontest.Config{Token: map[string]*daemontest.TokenConfig{"api": {
			TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope, ClientAuth: "private_key_jwt",
			ClientID: "jwt-client", PrivateKeyFile: write("key.pem", keyPEM), AssertionKID: "file-key",
		}}})
		if tok := d.Token("api"); len(tok) < 20 {
			t.Fatalf("token %q", tok)
		}
		d.NoLeaks(strings.Split(keyPEM, "\n")[1])
	})
	t.Run("tls_client_auth", func(t *testing.T) {
		caFile, issue := testCA(t, dir, "files")
		serverCert, serverKey := issue("127.0.0.1")
		idp := daemontest.StartIdP(t, "CLIENT_ID=mtls-client", "AUTH_METHOD=tls_client_auth", "CLIENT_DN=CN=tokend-client", "TTL=600",
			"TLS_CERT="+serverCert, "TLS_KEY="+serverKey, "CLIENT_CA="+caFile)
		certFile, keyFile := issue("tokend-client")
		os.Chmod(keyFile, 0o600)
		d := daemontest.StartTokend(t, daemontest.Config{Token: map[string]*daemontest.TokenConfig{"api": {
			TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope, ClientAuth: "tls_client_auth", CAFile: caFile,
			ClientID: "mtls-client", TLSCertFile: certFile, TLSKeyFile: keyFile,
		}}})
		if tok := d.Token("api"); len(tok) < 20 {
			t.Fatalf("token %q", tok)
		}
		key, _ := os.ReadFile(keyFile)
		d.NoLeaks(strings.Split(string(key), "\n")[1])
	})
}

// A rotated secret file is used from the next request on; a secret the
// endpoint rejects, with the file unchanged, is an error naming the file;
// and a reload that adds a Vault token starts Vault and its series, and
// one that removes it stops them.
func TestE2EFileCredentialsRotateAndReload(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("old-secret\n"), 0o600)
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "old-secret")
	ep.SetTTL(3)
	cfg := daemontest.Config{LogLevel: "debug", Token: map[string]*daemontest.TokenConfig{"vibes": {
		TokenURL: ep.TokenURL(), Scope: daemontest.Scope, ClientID: "cid", ClientSecretFile: secretFile,
		MinRemaining: "1s", RetryMax: "1s", RequestTimeout: "500ms"}}}
	d := daemontest.StartTokend(t, cfg)
	d.Token("vibes")

	// The endpoint takes only the new secret; the file still holds the
	// old: the refreshes fail, and the log names the file.
	ep.SetCreds("cid", "new-secret")
	daemontest.WaitFor(t, "the log to name the file", 10*time.Second, func() bool {
		return strings.Contains(d.Out.String(), `"secret":"files `+secretFile+`"`)
	})
	// Rotated: the next request reads it, and succeeds.
	rejected := strings.Count(d.Out.String(), "client credentials rejected")
	os.WriteFile(secretFile, []byte("new-secret\n"), 0o600)
	issued := ep.IssuedCount()
	daemontest.WaitFor(t, "a token with the rotated secret", 10*time.Second, func() bool { return ep.IssuedCount() > issued })
	if tok := d.Token("vibes"); tok != ep.LastToken() {
		t.Errorf("after the rotation tokend serves %q, the endpoint issued %q", tok, ep.LastToken())
	}
	if n := strings.Count(d.Out.String(), "client credentials rejected"); n > rejected+1 {
		t.Errorf("%d rejections after the rotation: the rotated file was not read at once", n-rejected)
	}

	// A Vault token joins: the Vault source and its series come; then go.
	v := daemontest.StartVault(t)
	v.PutSecret("tokend/second", "cid2", "csecret2")
	tokenFile := filepath.Join(dir, "vault-token")
	os.WriteFile(tokenFile, []byte("root"), 0o600)
	ep2 := daemontest.NewEndpoint(t, "basic+body", "cid2", "csecret2")
	cfg2 := cfg.Clone()
	cfg2.Vault = daemontest.VaultConfig{Address: v.Addr, TokenFile: tokenFile}
	cfg2.DefaultToken = "vibes"
	cfg2.Token["second"] = &daemontest.TokenConfig{TokenURL: ep2.TokenURL(), Scope: daemontest.Scope, KVPath: "tokend/second"}
	vaultSeries := func() bool {
		m, err := proto.Client{Path: d.Sock}.Metrics(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(m), "tokend_vault_reads_total")
	}
	d.Write(cfg2)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the reload", 5*time.Second, func() bool { return strings.Contains(d.Out.String(), "configuration reloaded") })
	if got := d.Token("second"); got != ep2.LastToken() || !vaultSeries() {
		t.Errorf("after adding a Vault token: %q (endpoint issued %q), Vault series %v", got, ep2.LastToken(), vaultSeries())
	}
	d.Write(cfg)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the second reload", 5*time.Second, func() bool {
		return strings.Count(d.Out.String(), "configuration reloaded") == 2
	})
	if vaultSeries() || !strings.Contains(d.Out.String(), "vault source stopped") {
		t.Errorf("after removing the Vault token: Vault series still exported, or the source not stopped")
	}
	d.NoLeaks("old-secret", "new-secret", "csecret2")
}
