package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
)

const injected = "\nREADY=1\nWATCHDOG=trigger"

// tlsEndpointNamed is an https token endpoint whose certificate is valid
// only for name, and a CA file that trusts it (for SSL_CERT_FILE): a
// client that reaches it as "localhost" fails with an error that quotes
// the name.
func tlsEndpointNamed(t *testing.T, name string) (tokenURL, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the token endpoint with a wrong name was reached")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // each refused handshake
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return "https://localhost:" + port + "/oauth2/token", caFile
}

// vaultFailingAt is a Vault stand-in that answers path's reads with a 500
// whose error text holds line breaks, a NUL and a terminal escape.
func vaultFailingAt(t *testing.T, path string) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/auth/token/lookup-self":
			fmt.Fprint(w, `{"data":{"ttl":0,"renewable":false}}`)
		case r.URL.Path == "/v1/secret/data/"+path:
			w.WriteHeader(500)
			b, _ := json.Marshal(map[string]any{"errors": []string{"backend down" + injected + "\r\n\x00\x1b[31mred"}})
			w.Write(b)
		case strings.HasPrefix(r.URL.Path, "/v1/secret/data/"):
			fmt.Fprint(w, `{"data":{"data":{"client_id":"cid","client_secret":"csecret"},"metadata":{"version":1}}}`)
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// No upstream text reaches a client, systemd or the log raw: a token
// endpoint whose certificate names "\nREADY=1\nWATCHDOG=trigger" and a
// Vault whose error holds the same. Every answer is one line, pipelined
// answers keep their order, the NOTIFY_SOCKET datagrams hold only
// tokend's own assignments, READY=1 never comes (no token exists, a
// reload included), and every log line is one JSON object.
func TestUpstreamTextCleaned(t *testing.T) {
	tlsURL, caFile := tlsEndpointNamed(t, "x"+injected)
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	tok := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(tok, []byte("test-token"), 0o600)
	cfg := daemontest.Config{
		DefaultToken: "tls",
		Vault:        daemontest.VaultConfig{Address: vaultFailingAt(t, "tokend/vaulty"), TokenFile: tok},
		Token: map[string]*daemontest.TokenConfig{
			"tls":    {TokenURL: tlsURL, KVPath: "tokend/tls", RetryMax: "1s"},
			"vaulty": {TokenURL: ep.TokenURL(), KVPath: "tokend/vaulty", RetryMax: "1s"},
		},
	}
	n := daemontest.ListenNotify(t)
	d := daemontest.StartTokend(t, cfg, "NOTIFY_SOCKET="+n.Path, "WATCHDOG_USEC=1000000", "SSL_CERT_FILE="+caFile)

	daemontest.WaitFor(t, "both failures in STATUS=", 20*time.Second, func() bool {
		return n.Index("certificate is valid for x") >= 0 && n.Index("backend down") >= 0
	})

	// Pipelined requests: one line each, in order.
	c, err := net.Dial("unix", d.Sock)
	if err != nil {
		t.Fatal(err)
	}
	// Each token request waits a few seconds for a first token: four.
	io.WriteString(c, "TOKEN tls\nPING\nHEADER vaulty\nLIST\n")
	c.(*net.UnixConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	all, _ := io.ReadAll(c)
	c.Close()
	lines := strings.Split(strings.TrimSuffix(string(all), "\n"), "\n")
	want := []string{"ERR unavailable no token yet: token endpoint unreachable: ", "OK PONG",
		"ERR unavailable no token yet: no client credentials yet: reading secret/tokend/vaulty", "OK tls vaulty"}
	if len(lines) != len(want) {
		t.Fatalf("%d answer lines to %d requests:\n%s", len(lines), len(want), all)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("answer %d: %q, want %q…", i, lines[i], w)
		}
		if strings.ContainsAny(lines[i], "\r\x00\x1b") {
			t.Errorf("answer %d holds control bytes: %q", i, lines[i])
		}
	}
	if !strings.Contains(string(all), `x\x0aREADY=1\x0aWATCHDOG=trigger`) || !strings.Contains(string(all), `backend down\x0aREADY=1`) {
		t.Errorf("the upstream text is not there, escaped:\n%s", all)
	}

	// A reload before the first token: still no READY=1.
	d.Cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the reload", 10*time.Second, func() bool { return strings.Contains(d.Out.String(), "configuration reloaded") })
	time.Sleep(1500 * time.Millisecond) // a few more STATUS= and WATCHDOG=1
	d.Cmd.Process.Signal(syscall.SIGTERM)
	<-d.Done

	own := regexp.MustCompile(`^(STATUS=[ -~]*|WATCHDOG=1|RELOADING=1|MONOTONIC_USEC=\d+|STOPPING=1)$`)
	for _, m := range n.All() {
		for _, l := range strings.Split(m, "\n") {
			if !own.MatchString(l) {
				t.Errorf("sd_notify datagram with a line of its own %q in %q", l, m)
			}
		}
	}
	if n.Index("READY=1\n") >= 0 || n.Count("WATCHDOG=1") == 0 {
		t.Errorf("READY=1 sent, or the watchdog never petted: %s", n)
	}

	// The log: one JSON object per line, no raw control bytes.
	sc := bufio.NewScanner(strings.NewReader(d.Out.String()))
	for sc.Scan() {
		var v map[string]any
		if json.Unmarshal(sc.Bytes(), &v) != nil {
			t.Errorf("log line is not one JSON object: %q", sc.Text())
		}
		if s := string(sc.Bytes()); strings.Contains(s, `\n`) || strings.Contains(s, `\u0000`) || strings.Contains(s, `\u001b`) {
			t.Errorf("log line repeats upstream control bytes: %s", s)
		}
	}
	if !strings.Contains(d.Out.String(), `x\\x0aREADY=1`) {
		t.Errorf("the TLS failure is not logged")
	}
}
