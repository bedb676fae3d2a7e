package daemon

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

// vaultStandIn is a small httptest Vault: token lookup-self and one KV v2
// secret. The real server is used elsewhere; here it keeps systemd-focused
// tests fast and independent of the 17-minute Vault build.
func vaultStandIn(t *testing.T, id, secret string) string {
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

// standInConfig is a one-token config against the stand-ins.
func standInConfig(t *testing.T, ep *endpoint, extra string) string {
	dir := t.TempDir()
	tok := filepath.Join(dir, "vault-token")
	os.WriteFile(tok, []byte("test-token"), 0o644)
	return oneTokenConfig(vaultStandIn(t, "cid", "csecret"), tok, ep.tokenURL(), extra, `retry_max = "1s"`)
}

// notes are sd_notify messages as they arrive, from a NOTIFY_SOCKET or
// in-process.
type notes struct {
	mu   sync.Mutex
	msgs []string
}

func (n *notes) send(state string) error {
	n.mu.Lock()
	n.msgs = append(n.msgs, state)
	n.mu.Unlock()
	return nil
}

// all returns every message, copied.
func (n *notes) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

// index returns the position of the first message containing s, or -1.
func (n *notes) index(s string) int {
	return slices.IndexFunc(n.all(), func(m string) bool { return strings.Contains(m, s) })
}

func (n *notes) count(s string) int {
	c := 0
	for _, m := range n.all() {
		if strings.Contains(m, s) {
			c++
		}
	}
	return c
}

func (n *notes) String() string { return strings.Join(n.all(), " | ") }

// notifySocket is a real unixgram NOTIFY_SOCKET collecting messages.
type notifySocket struct {
	notes
	path string
}

func listenNotify(t *testing.T) *notifySocket {
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.send(string(buf[:k]))
		}
	}()
	return n
}

// READY=1 only once the token exists (the endpoint is down first), STATUS
// lines that say why, WATCHDOG=1 at half the interval, RELOADING=1 and
// READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
func TestSdNotify(t *testing.T) {
	ep := newEndpoint(t, "basic+body", "cid", "csecret")
	for i := 0; i < 4; i++ {
		ep.push(fault{status: 503, body: `{"error":"temporarily_unavailable"}`})
	}
	n := listenNotify(t)
	d := startTokend(t, standInConfig(t, ep, ""), "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=600000")

	waitFor(t, "READY=1", 20*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waiting, ready := n.index("STATUS=waiting: vibes: token endpoint answered 503"), n.index("READY=1")
	if waiting < 0 || waiting > ready {
		t.Errorf("no waiting STATUS before READY (waiting at %d, ready at %d): %s", waiting, ready, n)
	}
	if !regexp.MustCompile(`READY=1\nSTATUS=serving 1 token; vibes valid until \d\d:\d\d:\d\dZ`).MatchString(n.String()) {
		t.Errorf("READY without a serving STATUS: %s", n)
	}
	if got := d.token(); got != ep.lastToken() {
		t.Errorf("token %q after READY", got)
	}

	before := n.count("WATCHDOG=1")
	time.Sleep(3 * time.Second)
	// 600ms interval, pinged every 300ms: about 10 in 3s.
	if pets := n.count("WATCHDOG=1") - before; pets < 3 || pets > 30 {
		t.Errorf("%d WATCHDOG=1 in 3s with WATCHDOG_USEC=600000", pets)
	}

	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "RELOADING=1", 5*time.Second, func() bool { return n.index("RELOADING=1") >= 0 })
	waitFor(t, "READY=1 after the reload", 5*time.Second, func() bool { return n.count("READY=1") >= 2 })
	if !regexp.MustCompile(`RELOADING=1\nMONOTONIC_USEC=\d+`).MatchString(n.String()) {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %s", n)
	}

	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
	if n.index("STOPPING=1") < 0 {
		t.Errorf("no STOPPING=1: %s", n)
	}
}

// The real systemd-socket-activate: tokend serves on the inherited socket
// and neither creates its configured socket nor removes the inherited one.
func TestSocketActivate(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		need(t, "systemd-socket-activate", "apt-get install systemd")
	}
	tokend, tokenctl := binaries(t)
	ep := newEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "tokend.toml"), filepath.Join(dir, "act.sock")
	unused := filepath.Join(dir, "configured.sock")
	os.WriteFile(cfgPath, []byte(strings.ReplaceAll(standInConfig(t, ep, ""), "%SOCK%", unused)), 0o600)
	p := start(t, nil, activate, "-l", sock, "--fdname=tokend", tokend, "--config", cfgPath)
	waitFor(t, "the activation socket", 5*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })

	out, err := exec.Command(tokenctl, "--socket", sock, "get").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != ep.lastToken() {
		t.Fatalf("first request through activation: %v %s\n%s", err, out, p.out)
	}
	if _, err := os.Stat(unused); !os.IsNotExist(err) {
		t.Errorf("tokend created its configured socket too: %v", err)
	}
	p.stop(t, 5*time.Second)
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("tokend removed the socket it did not create: %v", err)
	}
	if !strings.Contains(p.out.String(), "serving on the socket passed by systemd") {
		t.Errorf("activation not logged:\n%s", p.out)
	}
}

// activated runs tokend the way systemd does: the test holds the listening
// socket, and each tokend process inherits it as fd 3 with LISTEN_PID set
// to its own pid (sh's $$ survives the exec).
func activated(t *testing.T, cfgPath string, files ...*os.File) *proc {
	tokend, _ := binaries(t)
	p := &proc{cmd: exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" --config "$1"`, tokend, cfgPath),
		out: &syncBuf{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES=tokend", "VAULT_ADDR=", "VAULT_TOKEN=")
	p.cmd.ExtraFiles = files
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t, 5*time.Second) })
	return p
}

// Clients that connect while the daemon is dead are queued by the kernel
// and answered once it is back: kill -9 under activation loses nothing.
func TestSocketActivationKillWhileAsking(t *testing.T) {
	ep := newEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "tokend.toml"), filepath.Join(dir, "a.sock")
	os.WriteFile(cfgPath, []byte(strings.ReplaceAll(standInConfig(t, ep, ""), "%SOCK%", filepath.Join(dir, "unused.sock"))), 0o600)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.File()
	defer f.Close()

	first := activated(t, cfgPath, f)
	ask := startAskers(proto.Client{Path: sock, Timeout: 20 * time.Second}, 4, 10*time.Millisecond)
	waitFor(t, "answers from the first daemon", 10*time.Second, func() bool { return ask.ok.Load() > 10 })
	first.cmd.Process.Signal(syscall.SIGKILL)
	<-first.done
	atDeath := ask.ok.Load()
	time.Sleep(time.Second) // clients keep connecting to a socket nobody accepts on
	activated(t, cfgPath, f)
	waitFor(t, "answers from the second daemon", 15*time.Second, func() bool { return ask.ok.Load() > atDeath+20 })
	ask.finish(t, "a kill -9 and a 1s outage")
}

// Anything but exactly one Unix stream listener is refused, clearly.
func TestSocketActivationWrongListeners(t *testing.T) {
	ep := newEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tokend.toml")
	os.WriteFile(cfgPath, []byte(strings.ReplaceAll(standInConfig(t, ep, ""), "%SOCK%", filepath.Join(dir, "unused.sock"))), 0o600)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tf, _ := tcp.(*net.TCPListener).File()
	u1, _ := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "1.sock"), Net: "unix"})
	defer u1.Close()
	uf, _ := u1.File()
	for name, tc := range map[string]struct {
		files []*os.File
		want  string
	}{
		"two":  {[]*os.File{uf, uf}, "want exactly 1 listening socket, got 2"},
		"tcp":  {[]*os.File{tf}, "want a Unix stream socket"},
		"none": {nil, "want exactly 1 listening socket, got 0"},
	} {
		t.Run(name, func(t *testing.T) {
			p := activated(t, cfgPath, tc.files...)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Fatal("tokend kept running")
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.out.String(), tc.want) {
				t.Errorf("exit %d, output:\n%s", code, p.out)
			}
		})
	}
}

// LoadCredential=: systemd connects from "@<hex>/unit/<unit>/<id>" and
// half-closes; the token named like the id is served, bare.
func TestLoadCredentialPeer(t *testing.T) {
	ep := newEndpoint(t, "basic+body", "cid", "csecret")
	d := startTokend(t, standInConfig(t, ep, ""))
	for _, id := range []string{"vibes", "api-token"} { // by name; else the default
		local := &net.UnixAddr{Name: fmt.Sprintf("@%x/unit/api-call.service/%s", time.Now().UnixNano(), id), Net: "unix"}
		c, err := net.DialUnix("unix", local, &net.UnixAddr{Name: d.sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, _ := bufio.NewReader(c).ReadString(0)
		c.Close()
		if got != ep.lastToken() {
			t.Errorf("credential %s: %q", id, got)
		}
	}
	if !strings.Contains(d.out.String(), `"claimed_unit":"api-call.service"`) {
		t.Errorf("unit not logged")
	}
	d.noLeaks("csecret", ep.lastToken())
}

// unitRoot lays out the units and binaries under a root for systemd-analyze.
func unitRoot(t *testing.T) (root string, units []string) {
	tokend, tokenctl := binaries(t)
	root = t.TempDir()
	for _, d := range []string{"usr/bin", "bin", "etc/systemd/system", "usr/lib/systemd/system"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, b := range []struct{ src, dst string }{{tokend, "usr/bin/tokend"}, {tokenctl, "usr/bin/tokenctl"}} {
		data, _ := os.ReadFile(b.src)
		os.WriteFile(filepath.Join(root, b.dst), data, 0o755)
	}
	for _, stub := range []string{"bin/sh", "bin/kill"} {
		os.WriteFile(filepath.Join(root, stub), []byte("#!/bin/true\n"), 0o755)
	}
	for _, target := range []string{"sysinit.target", "basic.target", "sockets.target", "shutdown.target", "network-online.target", "multi-user.target", "timers.target"} {
		os.WriteFile(filepath.Join(root, "usr/lib/systemd/system", target), []byte("[Unit]\nDescription=x\n"), 0o644)
	}
	files, _ := filepath.Glob("../systemd/*.s*")
	ex, _ := filepath.Glob("../systemd/examples/*")
	for _, f := range append(files, ex...) {
		data, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(root, "etc/systemd/system", filepath.Base(f)), data, 0o644)
		units = append(units, filepath.Base(f))
	}
	if len(units) < 5 {
		t.Fatalf("units: %v", units)
	}
	return root, units
}

func TestUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		need(t, "systemd-analyze", "apt-get install systemd")
	}
	root, units := unitRoot(t)
	for _, u := range units {
		// The exit code is unreliable (ignored settings still exit 0): stderr must be empty.
		cmd := exec.Command(sa, "verify", "--man=no", "--root="+root, "/etc/systemd/system/"+u)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, stderr.String())
		}
	}
}

func TestUnitExposure(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		need(t, "systemd-analyze", "apt-get install systemd")
	}
	out, _ := exec.Command(sa, "security", "--offline=true", "../systemd/tokend.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for tokend.service: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure level %.1f", level)
	if level > 1.5 {
		t.Errorf("exposure %.1f, want at most 1.5:\n%s", level, out)
	}
}

// Reload: a new Vault address and a new token take effect; the token whose
// fetch settings did not change keeps its token; a removed token is gone.
func TestReloadVaultAndTokens(t *testing.T) {
	ep1 := newEndpoint(t, "basic+body", "cid", "csecret")
	ep2 := newEndpoint(t, "body", "cid2", "csecret2")
	cfg := standInConfig(t, ep1, "")
	d := startTokend(t, cfg)
	tokA := d.token("vibes")

	vault2 := vaultStandIn(t, "cid2", "csecret2")
	vault1 := regexp.MustCompile(`address = "([^"]+)"`).FindStringSubmatch(cfg)[1]
	cfg2 := strings.Replace(cfg, vault1, vault2, 1) + fmt.Sprintf(`
[token.second]
token_url = %q
client_auth = "body"
scope = "https://rbm.vibes.com/rbm.agents"
kv_path = "tokend/second"
`, ep2.tokenURL())
	cfg2 = strings.Replace(cfg2, "%SOCK%\"\n", "%SOCK%\"\ndefault_token = \"vibes\"\n", 1)
	d.write(cfg2)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reload", 5*time.Second, func() bool { return strings.Contains(d.out.String(), "configuration reloaded") })
	if got := d.token("second"); got != ep2.lastToken() {
		t.Errorf("new token not served from the new vault: %q", got)
	}
	if got := d.token("vibes"); got != tokA {
		t.Errorf("unchanged token was refetched")
	}
	if list, _, _ := d.ctl("list"); list != "second vibes" {
		t.Errorf("list: %q", list)
	}

	// Remove vibes (and its default); second stays.
	cfg3 := strings.Replace(cfg2, "default_token = \"vibes\"\n", "", 1)
	cfg3 = cfg3[:strings.Index(cfg3, "[token.vibes]")] + cfg3[strings.Index(cfg3, "[token.second]"):]
	d.write(cfg3)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the second reload", 5*time.Second, func() bool {
		return strings.Count(d.out.String(), "configuration reloaded") == 2
	})
	if _, errs, code := d.ctl("get", "vibes"); code != 1 || !strings.Contains(errs, "unknown-token") {
		t.Errorf("removed token: %d %q", code, errs)
	}
	if got := d.token(); got != ep2.lastToken() {
		t.Errorf("default after removal: %q", got)
	}
	d.noLeaks("csecret", "csecret2", tokA)
}
