package daemontest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

var (
	skippedMu sync.Mutex
	skipped   []string

	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Need skips (or, under TOKEND_E2E=1, fails) when a peer is missing.
func Need(t *testing.T, what, hint string) {
	t.Helper()
	if os.Getenv("TOKEND_E2E") == "1" {
		t.Fatalf("%s is missing (%s) and TOKEND_E2E=1 forbids skipping", what, hint)
	}
	skippedMu.Lock()
	skipped = append(skipped, t.Name()+": no "+what)
	skippedMu.Unlock()
	t.Skipf("SKIP: no %s (%s)", what, hint)
}

// Binaries builds tokend and tokenctl once per test run, with the race
// detector when the tests have it.
func Binaries(t *testing.T) (tokend, tokenctl string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tokend-bin-")
		if buildErr != nil {
			return
		}
		os.Chmod(binDir, 0o755) // tests run tokenctl as other users too
		args := []string{"build", "-o", binDir}
		if Race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, Root("cmd/tokend"), Root("cmd/tokenctl"))...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "tokend"), filepath.Join(binDir, "tokenctl")
}

// FreePort returns a loopback port that is free, and so is the next one
// (Vault's dev server also takes PORT+1).
func FreePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no free port pair")
	return 0
}

// Proc is a child process with its output captured.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *SyncBuf
	Done chan struct{}
	Err  error
}

type SyncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Reset empties the buffer.
func (s *SyncBuf) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func (s *SyncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func Start(t *testing.T, env []string, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(name, args...), Out: &SyncBuf{}, Done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.Err = p.Cmd.Wait(); close(p.Done) }()
	t.Cleanup(func() { p.Stop(t, 10*time.Second) })
	return p
}

// Stop sends SIGTERM and waits, then kills the process group.
func (p *Proc) Stop(t *testing.T, grace time.Duration) (exited bool) {
	select {
	case <-p.Done:
		return true
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done:
		return true
	case <-time.After(grace):
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.Done
		return false
	}
}

func (p *Proc) Exited() bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

func WaitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// VaultBin finds the Vault binary: $TOKEND_VAULT, else vault on PATH.
func VaultBin(t *testing.T) string {
	if p := os.Getenv("TOKEND_VAULT"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p
	}
	Need(t, "Vault binary", "set TOKEND_VAULT or put vault on PATH; .ci/build-vault.sh builds one")
	return ""
}

// Vault is a real Vault dev server with root token "root".
type Vault struct {
	t      *testing.T
	Addr   string
	Port   int
	Proc   *Proc
	CAFile string       // -dev-tls: the CA that signed Vault's certificate
	client *http.Client // trusts CAFile
}

// StartVaultTLS is a real Vault dev server over https (-dev-tls), with a
// CA of its own in CAFile.
func StartVaultTLS(t *testing.T) *Vault {
	t.Helper()
	bin := VaultBin(t)
	port := FreePort(t)
	dir := t.TempDir()
	v := &Vault{t: t, Port: port, Addr: fmt.Sprintf("https://127.0.0.1:%d", port), CAFile: filepath.Join(dir, "vault-ca.pem")}
	v.Proc = Start(t, []string{"VAULT_ADDR=", "VAULT_TOKEN="}, bin, "server", "-dev", "-dev-tls", "-dev-tls-cert-dir="+dir,
		"-dev-root-token-id=root", fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-dev-no-store-token")
	WaitFor(t, "vault (tls) to start", 30*time.Second, func() bool {
		if v.Proc.Exited() {
			t.Fatalf("vault exited: %s", v.Proc.Out)
		}
		pem, err := os.ReadFile(v.CAFile)
		if err != nil {
			return false
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		v.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := v.client.Get(v.Addr + "/v1/sys/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return v
}

func StartVault(t *testing.T) *Vault {
	return StartVaultAt(t, FreePort(t))
}

func StartVaultAt(t *testing.T, port int) *Vault {
	t.Helper()
	bin := VaultBin(t)
	v := &Vault{t: t, Port: port, Addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	v.Proc = Start(t, []string{"VAULT_ADDR=", "VAULT_TOKEN="}, bin, "server", "-dev", "-dev-root-token-id=root",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-dev-no-store-token")
	WaitFor(t, "vault to start", 30*time.Second, func() bool {
		if v.Proc.Exited() {
			t.Fatalf("vault exited: %s", v.Proc.Out)
		}
		resp, err := http.Get(v.Addr + "/v1/sys/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return v
}

// Call makes a Vault API Call with the root token and decodes the answer.
func (v *Vault) Call(method, path string, body any) map[string]any {
	v.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, v.Addr+"/v1/"+path, rd)
	req.Header.Set("X-Vault-Token", "root")
	hc := http.DefaultClient
	if v.client != nil {
		hc = v.client
	}
	resp, err := hc.Do(req)
	if err != nil {
		v.t.Fatalf("vault %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		v.t.Fatalf("vault %s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	out := map[string]any{}
	json.Unmarshal(raw, &out)
	return out
}

// PutSecret writes a KV v2 secret under the dev server's "secret/" mount.
func (v *Vault) PutSecret(path, id, secret string) {
	v.Call("POST", "secret/data/"+path, map[string]any{"data": map[string]any{"client_id": id, "client_secret": secret}})
}

// AppRole sets up AppRole with read access to secret/<path> and writes the
// role_id and a fresh secret_id to files in dir.
func (v *Vault) AppRole(dir, path string, tokenTTL string) (roleIDFile, secretIDFile, secretID string) {
	v.Call("POST", "sys/auth/approle", map[string]any{"type": "approle"})
	v.Call("PUT", "sys/policies/acl/tokend", map[string]any{"policy": fmt.Sprintf(`path "secret/data/%s" { capabilities = ["read"] }`, path)})
	v.Call("POST", "auth/approle/role/tokend", map[string]any{"token_policies": []string{"tokend"}, "token_ttl": tokenTTL, "token_max_ttl": "1h"})
	roleID := v.Call("GET", "auth/approle/role/tokend/role-id", nil)["data"].(map[string]any)["role_id"].(string)
	secretID = v.Call("POST", "auth/approle/role/tokend/secret-id", nil)["data"].(map[string]any)["secret_id"].(string)
	roleIDFile, secretIDFile = filepath.Join(dir, "role-id"), filepath.Join(dir, "secret-id")
	os.WriteFile(roleIDFile, []byte(roleID+"\n"), 0o600)
	os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600)
	return roleIDFile, secretIDFile, secretID
}

// IdP is the real, independent OAuth2 server in testdata/IdP.
type IdP struct {
	URL  string
	proc *Proc
}

func StartIdP(t *testing.T, env ...string) *IdP {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		Need(t, "node", "install Node.js")
	}
	if _, err := os.Stat(Root("daemon/testdata/idp/node_modules/oidc-provider")); err != nil {
		Need(t, "oidc-provider", "run npm ci in daemon/testdata/idp")
	}
	port := FreePort(t)
	scheme := "http"
	for _, e := range env {
		if strings.HasPrefix(e, "TLS_CERT=") {
			scheme = "https"
		}
	}
	i := &IdP{URL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)}
	i.proc = Start(t, append(env, fmt.Sprintf("PORT=%d", port)), node, Root("daemon/testdata/idp/server.mjs"))
	WaitFor(t, "oidc-provider to listen", 20*time.Second, func() bool {
		if i.proc.Exited() {
			t.Fatalf("oidc-provider exited: %s", i.proc.Out)
		}
		return strings.Contains(i.proc.Out.String(), "listening")
	})
	return i
}

// Askers are clients that keep asking for a token until stopped, counting
// answers and failures: what must survive a daemon's death and restart.
type Askers struct {
	OK, Failed atomic.Int32
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func StartAskers(c proto.Client, n int, pause time.Duration) *Askers {
	a := &Askers{stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for {
				select {
				case <-a.stop:
					return
				default:
				}
				if _, err := c.Do(context.Background(), "TOKEN"); err != nil {
					a.Failed.Add(1)
					a.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					a.OK.Add(1)
				}
				time.Sleep(pause)
			}
		}()
	}
	return a
}

// Finish stops the askers and fails the test if any request was lost.
func (a *Askers) Finish(t *testing.T, what string) {
	t.Helper()
	close(a.stop)
	a.wg.Wait()
	t.Logf("%d answered, %d failed across %s", a.OK.Load(), a.Failed.Load(), what)
	if a.Failed.Load() != 0 {
		t.Errorf("%d requests lost; first: %v", a.Failed.Load(), a.firstErr.Load())
	}
}

// Main runs the tests of a package that uses these helpers, then lists the
// end-to-end tests that skipped for want of a peer, and removes the
// binaries built for them. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if len(skipped) > 0 {
		fmt.Fprintf(os.Stderr, "\n!!! SKIPPED %d end-to-end test(s) for want of a peer:\n", len(skipped))
		for _, s := range skipped {
			fmt.Fprintf(os.Stderr, "!!!   %s\n", s)
		}
		fmt.Fprintf(os.Stderr, "!!! run .ci/test to provide Vault and the OAuth2 server (CI fails instead of skipping)\n\n")
	}
	for _, d := range []string{binDir, staticDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}
