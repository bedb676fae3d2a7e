package daemon

// Helpers for the end-to-end tests: the real tokend and tokenctl binaries,
// a real Vault dev server and a real OAuth2 server (oidc-provider).
//
// Without a peer binary the tests that need it skip, loudly, and TestMain
// lists them at the end; with TOKEND_E2E=1 (set by .ci/test) a missing peer
// fails the test instead.

import (
	"bytes"
	"context"
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

func TestMain(m *testing.M) {
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

// need skips (or, under TOKEND_E2E=1, fails) when a peer is missing.
func need(t *testing.T, what, hint string) {
	t.Helper()
	if os.Getenv("TOKEND_E2E") == "1" {
		t.Fatalf("%s is missing (%s) and TOKEND_E2E=1 forbids skipping", what, hint)
	}
	skippedMu.Lock()
	skipped = append(skipped, t.Name()+": no "+what)
	skippedMu.Unlock()
	t.Skipf("SKIP: no %s (%s)", what, hint)
}

// binaries builds tokend and tokenctl once per test run, with the race
// detector when the tests have it.
func binaries(t *testing.T) (tokend, tokenctl string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tokend-bin-")
		if buildErr != nil {
			return
		}
		os.Chmod(binDir, 0o755) // tests run tokenctl as other users too
		args := []string{"build", "-o", binDir}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "../cmd/tokend", "../cmd/tokenctl")...)
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

// freePort returns a loopback port that is free, and so is the next one
// (Vault's dev server also takes PORT+1).
func freePort(t *testing.T) int {
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

// proc is a child process with its output captured.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuf
	done chan struct{}
	err  error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), out: &syncBuf{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t, 10*time.Second) })
	return p
}

// stop sends SIGTERM and waits, then kills the process group.
func (p *proc) stop(t *testing.T, grace time.Duration) (exited bool) {
	select {
	case <-p.done:
		return true
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return false
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// oneTokenConfig is a config with Vault token auth and one token "vibes";
// top and token are extra lines for the top level and the token table.
func oneTokenConfig(vaultAddr, tokenFile, tokenURL, top, token string) string {
	return fmt.Sprintf(`
socket = "%%SOCK%%"
%s
[vault]
address = %q
token_file = %q
[token.vibes]
token_url = %q
scope = "https://rbm.vibes.com/rbm.agents"
kv_path = "tokend/vibes"
%s
`, top, vaultAddr, tokenFile, tokenURL, token)
}

// vaultBin finds the Vault binary: $TOKEND_VAULT, else vault on PATH.
func vaultBin(t *testing.T) string {
	if p := os.Getenv("TOKEND_VAULT"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p
	}
	need(t, "Vault binary", "set TOKEND_VAULT or put vault on PATH; .ci/build-vault.sh builds one")
	return ""
}

// vault is a real Vault dev server with root token "root".
type vault struct {
	t    *testing.T
	addr string
	port int
	proc *proc
}

func startVault(t *testing.T) *vault {
	return startVaultAt(t, freePort(t))
}

func startVaultAt(t *testing.T, port int) *vault {
	t.Helper()
	bin := vaultBin(t)
	v := &vault{t: t, port: port, addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	v.proc = start(t, []string{"VAULT_ADDR=", "VAULT_TOKEN="}, bin, "server", "-dev", "-dev-root-token-id=root",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-dev-no-store-token")
	waitFor(t, "vault to start", 30*time.Second, func() bool {
		if v.proc.exited() {
			t.Fatalf("vault exited: %s", v.proc.out)
		}
		resp, err := http.Get(v.addr + "/v1/sys/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return v
}

// call makes a Vault API call with the root token and decodes the answer.
func (v *vault) call(method, path string, body any) map[string]any {
	v.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, v.addr+"/v1/"+path, rd)
	req.Header.Set("X-Vault-Token", "root")
	resp, err := http.DefaultClient.Do(req)
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

// putSecret writes a KV v2 secret under the dev server's "secret/" mount.
func (v *vault) putSecret(path, id, secret string) {
	v.call("POST", "secret/data/"+path, map[string]any{"data": map[string]any{"client_id": id, "client_secret": secret}})
}

// approle sets up AppRole with read access to secret/<path> and writes the
// role_id and a fresh secret_id to files in dir.
func (v *vault) approle(dir, path string, tokenTTL string) (roleIDFile, secretIDFile, secretID string) {
	v.call("POST", "sys/auth/approle", map[string]any{"type": "approle"})
	v.call("PUT", "sys/policies/acl/tokend", map[string]any{"policy": fmt.Sprintf(`path "secret/data/%s" { capabilities = ["read"] }`, path)})
	v.call("POST", "auth/approle/role/tokend", map[string]any{"token_policies": []string{"tokend"}, "token_ttl": tokenTTL, "token_max_ttl": "1h"})
	roleID := v.call("GET", "auth/approle/role/tokend/role-id", nil)["data"].(map[string]any)["role_id"].(string)
	secretID = v.call("POST", "auth/approle/role/tokend/secret-id", nil)["data"].(map[string]any)["secret_id"].(string)
	roleIDFile, secretIDFile = filepath.Join(dir, "role-id"), filepath.Join(dir, "secret-id")
	os.WriteFile(roleIDFile, []byte(roleID+"\n"), 0o600)
	os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600)
	return roleIDFile, secretIDFile, secretID
}

// idp is the real, independent OAuth2 server in testdata/idp.
type idp struct {
	url  string
	proc *proc
}

func startIdP(t *testing.T, env ...string) *idp {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		need(t, "node", "install Node.js")
	}
	if _, err := os.Stat("testdata/idp/node_modules/oidc-provider"); err != nil {
		need(t, "oidc-provider", "run npm ci in daemon/testdata/idp")
	}
	port := freePort(t)
	i := &idp{url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	i.proc = start(t, append(env, fmt.Sprintf("PORT=%d", port)), node, "testdata/idp/server.mjs")
	waitFor(t, "oidc-provider to listen", 20*time.Second, func() bool {
		if i.proc.exited() {
			t.Fatalf("oidc-provider exited: %s", i.proc.out)
		}
		return strings.Contains(i.proc.out.String(), "listening")
	})
	return i
}

// askers are clients that keep asking for a token until stopped, counting
// answers and failures: what must survive a daemon's death and restart.
type askers struct {
	ok, failed atomic.Int32
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startAskers(c proto.Client, n int, pause time.Duration) *askers {
	a := &askers{stop: make(chan struct{})}
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
					a.failed.Add(1)
					a.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					a.ok.Add(1)
				}
				time.Sleep(pause)
			}
		}()
	}
	return a
}

// finish stops the askers and fails the test if any request was lost.
func (a *askers) finish(t *testing.T, what string) {
	t.Helper()
	close(a.stop)
	a.wg.Wait()
	t.Logf("%d answered, %d failed across %s", a.ok.Load(), a.failed.Load(), what)
	if a.failed.Load() != 0 {
		t.Errorf("%d requests lost; first: %v", a.failed.Load(), a.firstErr.Load())
	}
}
