package main

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
)

// approleConfig is one short-lived token (3s lifetimes at the stand-in,
// min_remaining 1s) whose credentials come from Vault through AppRole.
func approleConfig(v *daemontest.Vault, roleIDFile, secretIDFile string, ep *daemontest.Endpoint) daemontest.Config {
	ep.SetTTL(3)
	c := daemontest.OneToken(v.Addr, "", ep.TokenURL())
	c.LogLevel = "debug"
	c.Vault.Auth, c.Vault.RoleIDFile, c.Vault.SecretIDFile = "approle", roleIDFile, secretIDFile
	c.Vibes().MinRemaining = "1s"
	return c
}

// The main path: AppRole login to a real Vault, KV v2 secret, the strict
// stand-in for the documented recipe, every verb, connect-and-read, a
// rotated secret, and no secret in the logs.
func TestE2EVaultAppRoleRecipe(t *testing.T) {
	v := daemontest.StartVault(t)
	dir := t.TempDir()
	roleIDFile, secretIDFile, secretID := v.AppRole(dir, "tokend/vibes", "20m")
	const id, pw, pw2 = "rbm-client", "p+s/w:d=1%&first", "second/secret=="
	v.PutSecret("tokend/vibes", id, pw)
	ep := daemontest.NewEndpoint(t, "basic+body", id, pw)

	d := daemontest.StartTokend(t, approleConfig(v, roleIDFile, secretIDFile, ep))

	tok := d.Token()
	if !strings.HasPrefix(tok, "tok-") {
		t.Fatalf("token %q", tok)
	}
	if hdr, _, code := d.Ctl("header", "vibes"); code != 0 || !strings.HasPrefix(hdr, "Authorization: Bearer tok-") {
		t.Errorf("header: %q %d", hdr, code)
	}
	info, _, _ := d.Ctl("info")
	if !strings.HasPrefix(info, "name=vibes token_type=Bearer expires_in=") || !strings.HasSuffix(info, "scope=https://rbm.vibes.com/rbm.agents") || strings.Contains(info, "tok-") {
		t.Errorf("info: %q", info)
	}
	if list, _, _ := d.Ctl("list"); list != "vibes" {
		t.Errorf("list: %q", list)
	}
	// Connect-and-read, as socat and LoadCredential= do.
	c, err := net.Dial("unix", d.Sock)
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).CloseWrite()
	bare, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(bare), "tok-") || strings.ContainsAny(string(bare), " \n") {
		t.Errorf("connect-and-read: %q", bare)
	}
	// With a 3s lifetime the token is refreshed about every 1-2s.
	daemontest.WaitFor(t, "a refreshed token", 10*time.Second, func() bool { return d.Token() != tok })

	// Rotation: the endpoint now wants the new secret, Vault has it.
	ep.SetCreds(id, pw2)
	v.PutSecret("tokend/vibes", id, pw2)
	d.AwaitNewToken(ep, "a token obtained with the rotated secret", 15*time.Second)

	// Vault goes away later: refreshes go on with the credentials in memory.
	v.Proc.Stop(t, 10*time.Second)
	d.AwaitNewToken(ep, "a token obtained with vault down", 20*time.Second)
	if !strings.Contains(d.Out.String(), "using the credentials in memory") {
		t.Errorf("vault outage not logged")
	}

	d.NoLeaks(append([]string{pw, pw2, secretID, "hvs."}, ep.Issued()...)...)
	if exited := d.Stop(t, 5*time.Second); !exited || d.Err != nil {
		t.Errorf("SIGTERM: exited %v, err %v", exited, d.Err)
	}
	if _, err := os.Lstat(d.Sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// One test per client_auth mode against the real oidc-provider, with a
// secret that form-encoding changes; Vault token auth and KV v1.
func TestE2EOAuthServerModes(t *testing.T) {
	v := daemontest.StartVault(t)
	v.Call("POST", "sys/mounts/kv1", map[string]any{"type": "kv", "options": map[string]any{"version": "1"}})
	const id, pw, plain = "rbm-client", "p+s/w:d=1", "plainSecret123"
	v.Call("POST", "kv1/tokend", map[string]any{"id": id, "pw": pw})
	v.Call("POST", "kv1/tokend-plain", map[string]any{"id": id, "pw": plain})
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(tokenFile, []byte("root\n"), 0o600)

	for _, tc := range []struct{ mode, method, path, secret string }{
		{"basic", "client_secret_basic", "tokend", pw},
		{"body", "client_secret_post", "tokend", pw},
		// basic+body sends the Basic credentials without form-encoding, as
		// the API documents; a server that decodes them (RFC 6749) only
		// agrees for secrets that encoding leaves alone. And a strict server
		// refuses two mechanisms at once, so this one is lenient.
		{"basic+body", "client_secret_basic", "tokend-plain", plain},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			env := []string{"CLIENT_ID=" + id, "CLIENT_SECRET=" + tc.secret, "AUTH_METHOD=" + tc.method, "TTL=3"}
			if tc.mode == "basic+body" {
				env = append(env, "ACCEPT_BOTH=1")
			}
			idp := daemontest.StartIdP(t, env...)
			d := daemontest.StartTokend(t, daemontest.Config{
				Vault: daemontest.VaultConfig{Address: v.Addr, TokenFile: tokenFile},
				Token: map[string]*daemontest.TokenConfig{"api": {
					TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope, ClientAuth: tc.mode,
					KVMount: "kv1", KVVersion: 1, KVPath: tc.path, ClientIDField: "id", ClientSecretField: "pw",
					MinRemaining: "1s",
				}},
			})
			first := d.Token("api")
			if len(first) < 20 {
				t.Fatalf("token %q", first)
			}
			daemontest.WaitFor(t, "a refreshed token", 10*time.Second, func() bool { return d.Token() != first })
			d.NoLeaks(tc.secret, "root", first)
		})
	}
}

// Faults: Vault down at start, token endpoint 503 then back, a broken and a
// good SIGHUP, a flood of connections, over-long lines, a denied peer, a
// second tokend on the same socket.
func TestE2EFaults(t *testing.T) {
	port := daemontest.FreePort(t)
	addr := fmt.Sprintf("http://127.0.0.1:%d", port)
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(tokenFile, []byte("root"), 0o600)
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.Push(daemontest.Fault{Status: 503, RetryAfter: "1", Body: `{"error":"temporarily_unavailable"}`}, daemontest.Fault{Status: 429, Body: "slow down"})
	cfg := daemontest.OneToken(addr, tokenFile, ep.TokenURL())
	cfg.SocketMode, cfg.MaxConnections = "0666", 64
	cfg.Vibes().AllowUIDs, cfg.Vibes().RetryMax = []int{4242}, "2s"
	d := daemontest.StartTokend(t, cfg)

	// Vault is down: the daemon runs and says why.
	_, errs, code := d.Ctl("get")
	if code != 1 || !strings.Contains(errs, "unavailable") {
		t.Fatalf("with vault down: exit %d %q", code, errs)
	}
	v := daemontest.StartVaultAt(t, port)
	v.PutSecret("tokend/vibes", "cid", "csecret")
	var tok string
	daemontest.WaitFor(t, "a token once vault is up (through 503 and 429)", 30*time.Second, func() bool {
		out, _, code := d.Ctl("get")
		tok = out
		return code == 0
	})

	// Denied peer: another uid, not on the allow list.
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "running tokenctl as another uid needs root")
	}
	_, errs, code = d.CtlAs(nobody, "get")
	if code != 1 || !strings.Contains(errs, "denied") || strings.Contains(errs, tok) {
		t.Errorf("denied peer: exit %d %q", code, errs)
	}
	if list, _, _ := d.CtlAs(nobody, "list"); list != "" {
		t.Errorf("denied peer lists %q", list)
	}
	if !strings.Contains(d.Out.String(), `"uid":65534`) {
		t.Errorf("denial not logged with the uid")
	}
	if _, _, code := d.CtlAs(&syscall.Credential{Uid: 4242, Gid: 4242}, "get"); code != 0 {
		t.Errorf("allowed uid 4242 refused: %d", code)
	}

	// A broken reload keeps the old configuration and token.
	d.Write(cfg, "bogus_key = 1")
	d.Cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the failed reload to be logged", 5*time.Second, func() bool { return strings.Contains(d.Out.String(), "reload failed") })
	if got := d.Token(); got != tok {
		t.Errorf("token changed after a broken reload")
	}
	// A good reload that changes only the allow lists keeps the token.
	cfg = cfg.Clone()
	cfg.Vibes().AllowUIDs = []int{65534}
	d.Write(cfg)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the reload", 5*time.Second, func() bool { return strings.Contains(d.Out.String(), "configuration reloaded") })
	if got, _, code := d.CtlAs(nobody, "get"); code != 0 || got != tok {
		t.Errorf("after reload: uid 65534 got exit %d; same token: %v", code, got == tok)
	}

	// Flood: many concurrent connections; each gets an answer, never a crash.
	var ok, busy, other atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 400; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("unix", d.Sock, 5*time.Second)
			if err != nil {
				other.Add(1)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprint(c, "TOKEN\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			switch {
			case line == "OK "+tok+"\n":
				ok.Add(1)
			case strings.HasPrefix(line, "ERR busy"):
				busy.Add(1)
			default:
				other.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("flood of 400: %d ok, %d busy, %d other", ok.Load(), busy.Load(), other.Load())
	if other.Load() != 0 || ok.Load() == 0 {
		t.Errorf("flood: %d ok, %d busy, %d other", ok.Load(), busy.Load(), other.Load())
	}

	// Over-long line.
	c, _ := net.Dial("unix", d.Sock)
	fmt.Fprint(c, strings.Repeat("x", 4096)+"\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(line, "ERR too-long") {
		t.Errorf("over-long line: %q", line)
	}

	// A second tokend on the same socket refuses to start.
	tokend, _ := daemontest.Binaries(t)
	out, err := exec.Command(tokend, "--config", d.Config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), d.Sock) {
		t.Errorf("second tokend: %v %s", err, out)
	}
	if got := d.Token(); got != tok {
		t.Errorf("first tokend disturbed by the second")
	}
	d.NoLeaks("csecret", tok)
}

func TestE2ECheck(t *testing.T) {
	tokend, _ := daemontest.Binaries(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("[vault]\naddress = \"http://127.0.0.1:1\"\ntoken_file = \"/dev/null\"\n[token.a]\ntoken_url = \"https://x/oauth2/token\"\nkv_path = \"p\"\n"), 0o600)
	if out, err := exec.Command(tokend, "check", "--config", good).CombinedOutput(); err != nil {
		t.Errorf("check good: %v %s", err, out)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("colour = 1\n[token.a]\ntoken_url = 5\n"), 0o600)
	out, err := exec.Command(tokend, "check", "--config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("check bad: %v", err)
	}
	for _, want := range []string{"line 1: colour: unknown key", "line 3: token.a.token_url: want a string", "token.a.kv_path: missing"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(tokend, "version").Output(); err != nil || !strings.HasPrefix(string(out), "tokend ") {
		t.Errorf("version: %v %q", err, out)
	}

	// Operator mistakes tokend can run with are warned about, like sshd's
	// StrictModes: a config others may write, a Vault token others may
	// read or another user owns, a socket directory anyone may write, a
	// socket_mode open to all.
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "chown to another user needs root")
	}
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	tok := filepath.Join(dir, "vault-token")
	os.WriteFile(tok, []byte("t"), 0o644)
	os.Chown(tok, 4242, 4242)
	// The service user (tokend, where it exists) must reach the file, or
	// check refuses it before warning about it.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	loose := filepath.Join(dir, "loose.toml")
	os.WriteFile(loose, []byte(fmt.Sprintf("socket = %q\nsocket_mode = \"0666\"\n[vault]\naddress = \"http://127.0.0.1:1\"\ntoken_file = %q\n[token.a]\ntoken_url = \"https://x/oauth2/token\"\nkv_path = \"p\"\n",
		filepath.Join(open, "t.sock"), tok)), 0o666)
	os.Chmod(loose, 0o666)
	cmd := exec.Command(tokend, "check", "--config", loose)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("check with warnings: %v", err)
	}
	for _, want := range []string{
		`warning: config "` + loose + `" is writable by group or others (mode 0666)`,
		`warning: vault.token_file "` + tok + `" is readable by others (mode 0644)`,
		`warning: vault.token_file "` + tok + `" is owned by uid 4242, not root or tokend`,
		`warning: socket directory "` + open + `" is writable by others (mode 0777)`,
		`warning: socket_mode 0666 lets every local user connect`,
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("check lacks %q:\n%s", want, stderr.String())
		}
	}
	// An integer socket_mode is refused: TOML reads 438 as decimal.
	os.WriteFile(loose, []byte("socket_mode = 438\n[vault]\naddress = \"http://127.0.0.1:1\"\ntoken_file = \"/dev/null\"\n[token.a]\ntoken_url = \"https://x/oauth2/token\"\nkv_path = \"p\"\n"), 0o600)
	out, _ = exec.Command(tokend, "check", "--config", loose).CombinedOutput()
	if !strings.Contains(string(out), `line 1: socket_mode: 438 is a decimal integer (mode 0666)`) {
		t.Errorf("integer socket_mode: %s", out)
	}
	// Plain http to a host that is not loopback is refused unless allowed.
	os.WriteFile(loose, []byte("[vault]\naddress = \"http://vault.example.com:8200\"\ntoken_file = \"/dev/null\"\n[token.a]\ntoken_url = \"http://api.example.com/oauth2/token\"\nkv_path = \"p\"\n"), 0o600)
	out, _ = exec.Command(tokend, "check", "--config", loose).CombinedOutput()
	for _, want := range []string{`line 2: vault.address: "http://vault.example.com:8200" is plain http`, `line 5: token.a.token_url: "http://api.example.com/oauth2/token" is plain http`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("plain http: lacks %q:\n%s", want, out)
		}
	}
}

// Short Vault token TTLs: the LifetimeWatcher renews, and at the max TTL
// tokend logs in again; token refreshes never notice.
func TestE2EVaultRenewalAndRelogin(t *testing.T) {
	v := daemontest.StartVault(t)
	dir := t.TempDir()
	roleIDFile, secretIDFile, _ := v.AppRole(dir, "tokend/vibes", "2s")
	v.Call("POST", "auth/approle/role/tokend", map[string]any{"token_policies": []string{"tokend"}, "token_ttl": "2s", "token_max_ttl": "4s"})
	v.PutSecret("tokend/vibes", "cid", "csecret")
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	d := daemontest.StartTokend(t, approleConfig(v, roleIDFile, secretIDFile, ep))
	daemontest.WaitFor(t, "three approle logins", 30*time.Second, func() bool {
		return strings.Count(d.Out.String(), `"method":"approle"`) >= 3
	})
	logs := d.Out.String()
	if !strings.Contains(logs, "vault token renewed") {
		t.Errorf("no renewal logged")
	}
	if strings.Contains(logs, "using the credentials in memory") || strings.Contains(logs, "token refresh failed") {
		t.Errorf("vault reads failed around re-logins:\n%s", logs)
	}
	d.Token()
}

// A renewable Vault token in token_file, as an operator or Vault Agent
// leaves it: the LifetimeWatcher renews it past its TTL, and at its max TTL
// tokend reads token_file again and goes on with the token it finds there.
func TestE2EVaultTokenFileRenewal(t *testing.T) {
	v := daemontest.StartVault(t)
	v.Call("PUT", "sys/policies/acl/tokend", map[string]any{"policy": `path "secret/data/tokend/vibes" { capabilities = ["read"] }`})
	newToken := func(ttl, maxTTL string) string {
		r := v.Call("POST", "auth/token/create", map[string]any{"policies": []string{"tokend"}, "ttl": ttl, "explicit_max_ttl": maxTTL, "renewable": true})
		return r["auth"].(map[string]any)["client_token"].(string)
	}
	expired := func(tok string) bool {
		req, _ := http.NewRequest("GET", v.Addr+"/v1/auth/token/lookup-self", nil)
		req.Header.Set("X-Vault-Token", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusForbidden
	}
	first := newToken("2s", "6s")
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(tokenFile, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.PutSecret("tokend/vibes", "cid", "csecret")
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.SetTTL(3)
	cfg := daemontest.OneToken(v.Addr, tokenFile, ep.TokenURL())
	cfg.LogLevel, cfg.Vibes().MinRemaining = "debug", "1s"
	d := daemontest.StartTokend(t, cfg)

	daemontest.WaitFor(t, "two renewals of the file's token", 15*time.Second, func() bool {
		return strings.Count(d.Out.String(), "vault token renewed") >= 2
	})
	// The next token is in the file before the first reaches its max TTL
	// (its TTL outlives the wait: nobody renews it until tokend reads it).
	second := newToken("30s", "1h")
	if err := os.WriteFile(tokenFile, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	daemontest.WaitFor(t, "the first token to expire", 15*time.Second, func() bool { return expired(first) })

	// Reads now succeed only through the second token: a rotated secret
	// reaches the token endpoint.
	ep.SetCreds("cid", "rotated")
	v.PutSecret("tokend/vibes", "cid", "rotated")
	d.AwaitNewToken(ep, "a token obtained with the rotated secret", 15*time.Second)
	if !strings.Contains(d.Out.String(), "vault token reached its max TTL") && !strings.Contains(d.Out.String(), "vault token renewal failed") {
		t.Errorf("the end of the first token's life was not noticed:\n%s", d.Out)
	}
	d.NoLeaks(first, second, "csecret", "rotated")
}

// A sealed Vault, for real: refreshes go on with the credentials in memory
// and say why; once Vault is unsealed, a rotated secret is picked up.
func TestE2EVaultSealed(t *testing.T) {
	v := daemontest.StartVault(t)
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(tokenFile, []byte("root"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.PutSecret("tokend/vibes", "cid", "csecret")
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.SetTTL(3)
	cfg := daemontest.OneToken(v.Addr, tokenFile, ep.TokenURL())
	cfg.Vibes().MinRemaining = "1s"
	d := daemontest.StartTokend(t, cfg)
	d.Token()
	m := regexp.MustCompile(`Unseal Key: (\S+)`).FindStringSubmatch(v.Proc.Out.String())
	if m == nil {
		t.Fatalf("no unseal key in vault's output:\n%s", v.Proc.Out)
	}

	v.Call("PUT", "sys/seal", nil)
	d.AwaitNewToken(ep, "a token obtained while vault is sealed", 15*time.Second)
	if !regexp.MustCompile(`Vault is sealed.*"message":"vault read failed; using the credentials in memory"`).MatchString(d.Out.String()) {
		t.Errorf("no log says the refresh went on because vault is sealed:\n%s", d.Out)
	}

	v.Call("PUT", "sys/unseal", map[string]any{"key": m[1]})
	ep.SetCreds("cid", "rotated")
	v.PutSecret("tokend/vibes", "cid", "rotated")
	d.AwaitNewToken(ep, "a token obtained with the secret rotated after unsealing", 20*time.Second)
	d.NoLeaks("csecret", "rotated", m[1])
}

// The consumer examples (README, docs/consumers.md), run for real: tokenctl header | curl -H @-, the
// socat one-liners, and tokenctl's exit codes.
func TestE2EDocumentedUsage(t *testing.T) {
	for _, tool := range []string{"curl", "socat", "sh", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			daemontest.Need(t, tool, "apt-get install "+tool)
		}
	}
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	d := daemontest.StartTokend(t, daemontest.StandInConfig(t, ep))
	tok := d.Token()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+tok {
			w.WriteHeader(401)
			return
		}
		io.WriteString(w, "hello")
	}))
	defer api.Close()
	sh := func(script string) string {
		t.Helper()
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = append(os.Environ(), "TOKEND_SOCKET="+d.Sock, "PATH="+filepath.Dir(d.Tokenctl)+":"+os.Getenv("PATH"), "API="+api.URL)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	if got := sh(`tokenctl header | curl -fsS -H @- "$API"`); got != "hello" {
		t.Errorf("tokenctl header | curl -H @-: %q", got)
	}
	if got := sh(`curl -fsS -H "Authorization: Bearer $(socat UNIX-CONNECT:$TOKEND_SOCKET - </dev/null)" "$API"`); got != "hello" {
		t.Errorf("socat connect-and-read with curl: %q", got)
	}
	got := sh(`printf 'INFO\nLIST\nping\n' | socat - UNIX-CONNECT:$TOKEND_SOCKET`)
	if lines := strings.Split(got, "\n"); len(lines) != 4 || !strings.HasPrefix(lines[0], "OK name=vibes ") || lines[1] != "OK vibes" || lines[2] != "OK PONG" {
		t.Errorf("pipelined socat: %q", got)
	}
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"get", "nope"}, 1, "tokenctl: unknown-token: "},
		{[]string{"get", "bad/name"}, 2, "malformed token name"},
		{[]string{"frobnicate"}, 2, "usage:"},
		{[]string{"list", "x"}, 2, "too many arguments"},
	} {
		if _, errs, code := d.Ctl(tc.args...); code != tc.code || !strings.Contains(errs, tc.err) {
			t.Errorf("tokenctl %v: exit %d %q", tc.args, code, errs)
		}
	}
	cmd := exec.Command(d.Tokenctl, "--socket", "/nonexistent/tokend.sock", "ping")
	if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 3 || !strings.Contains(string(out), "/nonexistent/tokend.sock") {
		t.Errorf("unreachable: %v %s", err, out)
	}
	// docs/consumers.md's Python snippet.
	script := `
import socket, sys
def tokend(request="HEADER", path="/run/tokend/tokend.sock"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(request.encode() + b"\n")
        line = s.makefile().readline().rstrip("\n")
    status, _, rest = line.partition(" ")
    if status != "OK":
        raise RuntimeError(rest)
    return rest
print(tokend(path=sys.argv[1]))
`
	out, err := exec.Command("python3", "-c", script, d.Sock).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "Bearer "+tok {
		t.Errorf("python snippet: %v %q", err, out)
	}
}

// One uid holding its max_connections_per_uid of idle connections cannot
// starve the others: another uid, root and a LoadCredential= client (root)
// still get tokens, and the capped uid's own connect-and-read gets nothing
// rather than an ERR text that would become a credential.
func TestE2EPerUIDCap(t *testing.T) {
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "running clients as other uids needs root")
	}
	// The system's python: other uids cannot run one under /root (pyenv).
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		daemontest.Need(t, python, "apt-get install python3")
	}
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	cfg := daemontest.StandInConfig(t, ep)
	cfg.SocketMode, cfg.MaxConnectionsPerUID = "0666", 4
	d := daemontest.StartTokend(t, cfg)
	tok := d.Token()
	const holder = `
import socket, sys, time
held = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"PING\n")
    assert s.recv(100) == b"OK PONG\n"
    held.append(s)
print("holding", len(held), flush=True)
time.sleep(120)
`
	hog := &syscall.Credential{Uid: 4242, Gid: 4242}
	h := &daemontest.Proc{Cmd: exec.Command(python, "-c", holder, d.Sock, "4"), Out: &daemontest.SyncBuf{}, Done: make(chan struct{})}
	h.Cmd.Stdout, h.Cmd.Stderr = h.Out, h.Out
	h.Cmd.SysProcAttr = &syscall.SysProcAttr{Credential: hog, Setpgid: true}
	if err := h.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.Err = h.Cmd.Wait(); close(h.Done) }()
	t.Cleanup(func() { h.Stop(t, time.Second) })
	daemontest.WaitFor(t, "uid 4242 to hold its 4 connections", 10*time.Second, func() bool {
		if h.Exited() {
			t.Fatalf("holder exited: %s", h.Out)
		}
		return strings.Contains(h.Out.String(), "holding 4")
	})

	if _, errs, code := d.CtlAs(hog, "get"); code != 1 || !strings.Contains(errs, "busy: too many connections from this uid") {
		t.Errorf("uid 4242 over its cap: exit %d %q", code, errs)
	}
	if got, errs, code := d.CtlAs(&syscall.Credential{Uid: 4343, Gid: 4343}, "get"); code != 0 || got != tok {
		t.Errorf("uid 4343: exit %d %q", code, errs)
	}
	if got := d.Token(); got != tok {
		t.Errorf("root: %q", got)
	}
	// LoadCredential= connects as root from an address naming the unit.
	local := &net.UnixAddr{Name: fmt.Sprintf("@%x/unit/api-call.service/vibes", time.Now().UnixNano()), Net: "unix"}
	c, err := net.DialUnix("unix", local, &net.UnixAddr{Name: d.Sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != tok {
		t.Errorf("LoadCredential= as root: %q", got)
	}
	// The capped uid's connect-and-read: nothing at all.
	read := exec.Command(python, "-c", `
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.shutdown(socket.SHUT_WR)
data = s.recv(4096)
sys.stdout.write(repr(data))
`, d.Sock)
	read.SysProcAttr = &syscall.SysProcAttr{Credential: hog}
	if out, err := read.CombinedOutput(); err != nil || string(out) != "b''" {
		t.Errorf("capped uid's connect-and-read: %v %s", err, out)
	}
	if !strings.Contains(d.Out.String(), `"message":"connections refused: too many connections from this uid"`) {
		t.Errorf("refusal not logged")
	}
	d.NoLeaks("csecret", tok)
}

// Reach, against the real OAuth2 server: tokend finds the token endpoint
// from issuer (OIDC discovery), and with a resource indicator the issued
// token's audience is that resource (the server's own introspection says).
func TestE2EOAuthServerDiscoveryAndResource(t *testing.T) {
	const id, pw, resource = "rbm-client", "rbm-secret", "https://api.vibes.example/"
	idp := daemontest.StartIdP(t, "CLIENT_ID="+id, "CLIENT_SECRET="+pw, "AUTH_METHOD=client_secret_basic", "RESOURCE="+resource, "TTL=600",
		// Without resource= the server would pick this one, and refuse it.
		"DEFAULT_RESOURCE=https://not-this.example/")
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(tokenFile, []byte("test-token"), 0o600)
	cfg := daemontest.Config{
		Vault: daemontest.VaultConfig{Address: daemontest.VaultStandIn(t, id, pw), TokenFile: tokenFile},
		Token: map[string]*daemontest.TokenConfig{"api": {
			Issuer: idp.URL, ClientAuth: "basic", Scope: daemontest.Scope, KVPath: "tokend/api",
			Resource: []string{resource},
		}},
	}
	d := daemontest.StartTokend(t, cfg)
	tok := d.Token("api")
	if !strings.Contains(d.Out.String(), `"token_endpoint":"`+idp.URL+`/oauth2/token"`) {
		t.Errorf("the discovered endpoint is not logged")
	}
	// Introspection, authenticated as the client, as a resource server would.
	req, _ := http.NewRequest("POST", idp.URL+"/token/introspection", strings.NewReader("token="+tok))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var in struct {
		Active bool   `json:"active"`
		Aud    any    `json:"aud"`
		Scope  string `json:"scope"`
	}
	json.NewDecoder(resp.Body).Decode(&in)
	if !in.Active || fmt.Sprint(in.Aud) != resource || in.Scope != daemontest.Scope {
		t.Errorf("introspection: %+v, want active, aud %q", in, resource)
	}
	d.NoLeaks(pw, tok)
}

// private_key_jwt against the real OAuth2 server, which knows only the
// client's public key: tokend signs a fresh assertion with the private key
// it reads from a real Vault's KV (RSA and P-256, with a kid), and never
// logs the key.
func TestE2EOAuthServerPrivateKeyJWT(t *testing.T) {
	v := daemontest.StartVault(t)
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(tokenFile, []byte("root"), 0o600)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name string
		key  crypto.Signer
	}{{"rsa", rsaKey}, {"p256", ecKey}} {
		t.Run(c.name, func(t *testing.T) {
			jwk := jwkOf(t, c.key.Public(), "key-"+c.name)
			jwks, _ := json.Marshal(map[string]any{"keys": []any{jwk}})
			idp := daemontest.StartIdP(t, "CLIENT_ID=jwt-client", "AUTH_METHOD=private_key_jwt", "JWKS="+string(jwks), "TTL=600")
			der, _ := x509.MarshalPKCS8PrivateKey(c.key)
			keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
			v.Call("POST", "secret/data/tokend/jwt-"+c.name, map[string]any{"data": map[string]any{
				"client_id": "jwt-client", "private_key": keyPEM, "kid": jwk["kid"]}})
			d := daemontest.StartTokend(t, daemontest.Config{
				LogLevel: "trace",
				Vault:    daemontest.VaultConfig{Address: v.Addr, TokenFile: tokenFile},
				Token: map[string]*daemontest.TokenConfig{"api": {
					TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope, KVPath: "tokend/jwt-" + c.name,
					ClientAuth: "private_key_jwt", KeyIDField: "kid",
				}},
			})
			tok := d.Token("api")
			if len(tok) < 20 {
				t.Fatalf("token %q", tok)
			}
			// The key's body, line by line, must appear nowhere in the logs.
			for _, line := range strings.Split(keyPEM, "\n") {
				if len(line) > 20 && strings.Contains(d.Out.String(), line) {
					t.Fatalf("a line of the private key is in the logs")
				}
			}
			d.NoLeaks(tok)
		})
	}
}

// private_key_jwt with the key in Vault Transit (RSA and P-256): tokend
// builds the assertion and Vault signs it; the private key never leaves
// Vault, and the real OAuth2 server verifies the signature with the public
// key Vault gives out.
func TestE2EOAuthServerTransitJWT(t *testing.T) {
	v := daemontest.StartVault(t)
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(tokenFile, []byte("root"), 0o600)
	v.Call("POST", "sys/mounts/transit", map[string]any{"type": "transit"})
	v.PutSecret("tokend/transit", "jwt-client", "unused")
	for _, c := range []struct{ keyType, alg string }{{"rsa-2048", ""}, {"rsa-2048", "PS256"}, {"ecdsa-p256", ""}, {"ed25519", ""}} {
		keyType := c.keyType
		t.Run(keyType+c.alg, func(t *testing.T) {
			v.Call("POST", "transit/keys/tokend-"+keyType, map[string]any{"type": keyType})
			keys := v.Call("GET", "transit/keys/tokend-"+keyType, nil)["data"].(map[string]any)["keys"].(map[string]any)
			public := keys["1"].(map[string]any)["public_key"].(string)
			var pub any
			if keyType == "ed25519" { // Vault gives the raw key, base64
				raw, _ := base64.StdEncoding.DecodeString(public)
				pub = ed25519.PublicKey(raw)
			} else {
				block, _ := pem.Decode([]byte(public))
				if block == nil {
					t.Fatalf("no public key from Vault: %v", keys)
				}
				var err error
				if pub, err = x509.ParsePKIXPublicKey(block.Bytes); err != nil {
					t.Fatal(err)
				}
			}
			jwk := jwkOf(t, pub, "transit-"+keyType)
			jwks, _ := json.Marshal(map[string]any{"keys": []any{jwk}})
			idp := daemontest.StartIdP(t, "CLIENT_ID=jwt-client", "AUTH_METHOD=private_key_jwt", "JWKS="+string(jwks), "TTL=600")
			d := daemontest.StartTokend(t, daemontest.Config{
				LogLevel: "trace",
				Vault:    daemontest.VaultConfig{Address: v.Addr, TokenFile: tokenFile},
				Token: map[string]*daemontest.TokenConfig{"api": {
					TokenURL: idp.URL + "/oauth2/token", Scope: daemontest.Scope, KVPath: "tokend/transit",
					ClientAuth: "private_key_jwt", TransitKey: "tokend-" + keyType, AssertionKID: jwk["kid"], AssertionAlg: c.alg,
				}},
			})
			if tok := d.Token("api"); len(tok) < 20 {
				t.Fatalf("token %q", tok)
			}
		})
	}
}

// jwkOf is a public key as a JWK (RFC 7517), for the OAuth2 server's
// client registration.
func jwkOf(t *testing.T, pub crypto.PublicKey, kid string) map[string]string {
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]string{"kid": kid, "kty": "RSA", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		b, err := k.Bytes() // 0x04 || X || Y
		if err != nil || len(b) != 65 {
			t.Fatalf("P-256 key: %v", err)
		}
		return map[string]string{"kid": kid, "kty": "EC", "crv": "P-256", "x": b64(b[1:33]), "y": b64(b[33:])}
	case ed25519.PublicKey:
		return map[string]string{"kid": kid, "kty": "OKP", "crv": "Ed25519", "x": b64(k)}
	}
	t.Fatalf("no JWK for a %T", pub)
	return nil
}
