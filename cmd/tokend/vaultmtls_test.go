package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
)

// A production-like Vault (not -dev: in-memory storage, initialised and
// unsealed here) whose TLS listener requires a client certificate on
// every connection (tls_require_and_verify_client_cert): tokend reaches
// it with VAULT_CLIENT_CERT/VAULT_CLIENT_KEY, and with auth = "cert" and
// the [vault] keys, and without a certificate fails with an error that
// says so.
func TestE2EVaultRequiresClientCert(t *testing.T) {
	dir := t.TempDir()
	caFile, issue := testCA(t, dir, "vault")
	serverCert, serverKey := issue("127.0.0.1")
	clientCert, clientKey := issue("host-1")
	port := daemontest.FreePort(t)
	addr := fmt.Sprintf("https://127.0.0.1:%d", port)
	hcl := filepath.Join(dir, "vault.hcl")
	os.WriteFile(hcl, []byte(fmt.Sprintf(`
storage "inmem" {}
listener "tcp" {
  address = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_cert_file = %q
  tls_key_file = %q
  tls_client_ca_file = %q
  tls_require_and_verify_client_cert = true
}
disable_mlock = true
api_addr = %q
`, port, port+1, serverCert, serverKey, caFile, addr)), 0o600)
	daemontest.Start(t, []string{"VAULT_ADDR=", "VAULT_TOKEN="}, daemontest.VaultBin(t), "server", "-config", hcl)

	// The test's own client presents the certificate too.
	pair, _ := tls.LoadX509KeyPair(clientCert, clientKey)
	ca, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	var root string
	call := func(method, path string, body any) (map[string]any, error) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, addr+"/v1/"+path, bytes.NewReader(b))
		if root != "" {
			req.Header.Set("X-Vault-Token", root)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
		out := map[string]any{}
		json.Unmarshal(raw, &out)
		return out, nil
	}
	must := func(method, path string, body any) map[string]any {
		t.Helper()
		out, err := call(method, path, body)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	var init map[string]any
	daemontest.WaitFor(t, "vault to answer", 30*time.Second, func() bool {
		var err error
		init, err = call("PUT", "sys/init", map[string]any{"secret_shares": 1, "secret_threshold": 1})
		return err == nil
	})
	root = init["root_token"].(string)
	must("PUT", "sys/unseal", map[string]any{"key": init["keys"].([]any)[0]})
	daemontest.WaitFor(t, "vault to be active", 30*time.Second, func() bool {
		_, err := call("GET", "sys/mounts", nil)
		return err == nil
	})
	must("POST", "sys/mounts/secret", map[string]any{"type": "kv", "options": map[string]any{"version": "2"}})
	must("POST", "secret/data/tokend/vibes", map[string]any{"data": map[string]any{"client_id": "cid", "client_secret": "csecret"}})
	must("POST", "sys/policies/acl/reader", map[string]any{"policy": `path "secret/data/tokend/*" { capabilities = ["read"] }`})
	must("POST", "sys/auth/cert", map[string]any{"type": "cert"})
	must("POST", "auth/cert/certs/hosts", map[string]any{"certificate": string(ca), "token_policies": "reader"})

	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	tokenFile := filepath.Join(dir, "vault-token")
	os.WriteFile(tokenFile, []byte(root), 0o600)
	cfg := daemontest.OneToken(addr, tokenFile, ep.TokenURL())
	cfg.Vault.CAFile = caFile

	t.Run("VAULT_CLIENT_CERT", func(t *testing.T) {
		d := daemontest.StartTokend(t, cfg.Clone(), "VAULT_CLIENT_CERT="+clientCert, "VAULT_CLIENT_KEY="+clientKey)
		if got := d.Token(); got != ep.LastToken() {
			t.Errorf("token %q, the endpoint issued %q", got, ep.LastToken())
		}
		d.NoLeaks("csecret", root)
	})
	t.Run("auth cert", func(t *testing.T) {
		c := cfg.Clone()
		c.Vault = daemontest.VaultConfig{Address: addr, CAFile: caFile, Auth: "cert", CertFile: clientCert, KeyFile: clientKey, CertRole: "hosts"}
		d := daemontest.StartTokend(t, c)
		if got := d.Token(); got != ep.LastToken() {
			t.Errorf("token %q, the endpoint issued %q", got, ep.LastToken())
		}
		key, _ := os.ReadFile(clientKey)
		d.NoLeaks("csecret", strings.Split(string(key), "\n")[1])
	})
	t.Run("no certificate", func(t *testing.T) {
		d := daemontest.StartTokend(t, cfg.Clone())
		_, errs, code := d.Ctl("get")
		if code != 1 || !strings.Contains(errs, "requires a client certificate: set VAULT_CLIENT_CERT and VAULT_CLIENT_KEY") {
			t.Errorf("without a client certificate: exit %d %q", code, errs)
		}
	})
}
