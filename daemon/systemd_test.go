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

// StandInConfig is a one-token config against the stand-ins.
func StandInConfig(t *testing.T, ep *Endpoint, extra string) string {
	dir := t.TempDir()
	tok := filepath.Join(dir, "vault-token")
	os.WriteFile(tok, []byte("test-token"), 0o644)
	return OneTokenConfig(VaultStandIn(t, "cid", "csecret"), tok, ep.TokenURL(), extra, `retry_max = "1s"`)
}

// Notes are sd_notify messages as they arrive, from a NOTIFY_SOCKET or
// in-process.
type Notes struct {
	mu   sync.Mutex
	msgs []string
}

func (n *Notes) Send(state string) error {
	n.mu.Lock()
	n.msgs = append(n.msgs, state)
	n.mu.Unlock()
	return nil
}

// All returns every message, copied.
func (n *Notes) All() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

// Index returns the position of the first message containing s, or -1.
func (n *Notes) Index(s string) int {
	return slices.IndexFunc(n.All(), func(m string) bool { return strings.Contains(m, s) })
}

func (n *Notes) Count(s string) int {
	c := 0
	for _, m := range n.All() {
		if strings.Contains(m, s) {
			c++
		}
	}
	return c
}

func (n *Notes) String() string { return strings.Join(n.All(), " | ") }

// NotifySocket is a real unixgram NOTIFY_SOCKET collecting messages.
type NotifySocket struct {
	Notes
	Path string
}

func ListenNotify(t *testing.T) *NotifySocket {
	n := &NotifySocket{Path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
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
			n.Send(string(buf[:k]))
		}
	}()
	return n
}

// READY=1 only once the token exists (the endpoint is down first), STATUS
// lines that say why, WATCHDOG=1 at half the interval, RELOADING=1 and
// READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
func TestSdNotify(t *testing.T) {
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	for i := 0; i < 4; i++ {
		ep.Push(Fault{Status: 503, Body: `{"error":"temporarily_unavailable"}`})
	}
	n := ListenNotify(t)
	d := StartTokend(t, StandInConfig(t, ep, ""), "NOTIFY_SOCKET="+n.Path, "WATCHDOG_USEC=600000")

	WaitFor(t, "READY=1", 20*time.Second, func() bool { return n.Index("READY=1") >= 0 })
	waiting, ready := n.Index("STATUS=waiting: vibes: token endpoint answered 503"), n.Index("READY=1")
	if waiting < 0 || waiting > ready {
		t.Errorf("no waiting STATUS before READY (waiting at %d, ready at %d): %s", waiting, ready, n)
	}
	if !regexp.MustCompile(`READY=1\nSTATUS=serving 1 token; vibes valid until \d\d:\d\d:\d\dZ`).MatchString(n.String()) {
		t.Errorf("READY without a serving STATUS: %s", n)
	}
	if got := d.Token(); got != ep.LastToken() {
		t.Errorf("token %q after READY", got)
	}

	before := n.Count("WATCHDOG=1")
	time.Sleep(3 * time.Second)
	// 600ms interval, pinged every 300ms: about 10 in 3s.
	if pets := n.Count("WATCHDOG=1") - before; pets < 3 || pets > 30 {
		t.Errorf("%d WATCHDOG=1 in 3s with WATCHDOG_USEC=600000", pets)
	}

	d.Cmd.Process.Signal(syscall.SIGHUP)
	WaitFor(t, "RELOADING=1", 5*time.Second, func() bool { return n.Index("RELOADING=1") >= 0 })
	WaitFor(t, "READY=1 after the reload", 5*time.Second, func() bool { return n.Count("READY=1") >= 2 })
	if !regexp.MustCompile(`RELOADING=1\nMONOTONIC_USEC=\d+`).MatchString(n.String()) {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %s", n)
	}

	d.Cmd.Process.Signal(syscall.SIGTERM)
	<-d.Done
	if n.Index("STOPPING=1") < 0 {
		t.Errorf("no STOPPING=1: %s", n)
	}
}

// The real systemd-socket-activate: tokend serves on the inherited socket
// and neither creates its configured socket nor removes the inherited one.
func TestSocketActivate(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		Need(t, "systemd-socket-activate", "apt-get install systemd")
	}
	tokend, tokenctl := Binaries(t)
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "tokend.toml"), filepath.Join(dir, "act.sock")
	unused := filepath.Join(dir, "configured.sock")
	os.WriteFile(cfgPath, []byte(strings.ReplaceAll(StandInConfig(t, ep, ""), "%SOCK%", unused)), 0o600)
	p := Start(t, nil, activate, "-l", sock, "--fdname=tokend", tokend, "--config", cfgPath)
	WaitFor(t, "the activation socket", 5*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })

	out, err := exec.Command(tokenctl, "--socket", sock, "get").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != ep.LastToken() {
		t.Fatalf("first request through activation: %v %s\n%s", err, out, p.Out)
	}
	if _, err := os.Stat(unused); !os.IsNotExist(err) {
		t.Errorf("tokend created its configured socket too: %v", err)
	}
	p.Stop(t, 5*time.Second)
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("tokend removed the socket it did not create: %v", err)
	}
	if !strings.Contains(p.Out.String(), "serving on the socket passed by systemd") {
		t.Errorf("activation not logged:\n%s", p.Out)
	}
}

// activated runs tokend the way systemd does: the test holds the listening
// socket, and each tokend process inherits it as fd 3 with LISTEN_PID set
// to its own pid (sh's $$ survives the exec).
func activated(t *testing.T, cfgPath string, files ...*os.File) *Proc {
	tokend, _ := Binaries(t)
	p := &Proc{Cmd: exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" --config "$1"`, tokend, cfgPath),
		Out: &SyncBuf{}, Done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES=tokend", "VAULT_ADDR=", "VAULT_TOKEN=")
	p.Cmd.ExtraFiles = files
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.Err = p.Cmd.Wait(); close(p.Done) }()
	t.Cleanup(func() { p.Stop(t, 5*time.Second) })
	return p
}

// Clients that connect while the daemon is dead are queued by the kernel
// and answered once it is back: kill -9 under activation loses nothing.
func TestSocketActivationKillWhileAsking(t *testing.T) {
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "tokend.toml"), filepath.Join(dir, "a.sock")
	os.WriteFile(cfgPath, []byte(strings.ReplaceAll(StandInConfig(t, ep, ""), "%SOCK%", filepath.Join(dir, "unused.sock"))), 0o600)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.File()
	defer f.Close()

	first := activated(t, cfgPath, f)
	ask := StartAskers(proto.Client{Path: sock, Timeout: 20 * time.Second}, 4, 10*time.Millisecond)
	WaitFor(t, "answers from the first daemon", 10*time.Second, func() bool { return ask.OK.Load() > 10 })
	first.Cmd.Process.Signal(syscall.SIGKILL)
	<-first.Done
	atDeath := ask.OK.Load()
	time.Sleep(time.Second) // clients keep connecting to a socket nobody accepts on
	activated(t, cfgPath, f)
	WaitFor(t, "answers from the second daemon", 15*time.Second, func() bool { return ask.OK.Load() > atDeath+20 })
	ask.Finish(t, "a kill -9 and a 1s outage")
}

// Anything but exactly one Unix stream listener is refused, clearly.
func TestSocketActivationWrongListeners(t *testing.T) {
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tokend.toml")
	os.WriteFile(cfgPath, []byte(strings.ReplaceAll(StandInConfig(t, ep, ""), "%SOCK%", filepath.Join(dir, "unused.sock"))), 0o600)
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
			case <-p.Done:
			case <-time.After(10 * time.Second):
				t.Fatal("tokend kept running")
			}
			if code := p.Cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.Out.String(), tc.want) {
				t.Errorf("exit %d, output:\n%s", code, p.Out)
			}
		})
	}
}

// LoadCredential=: systemd connects from "@<hex>/unit/<unit>/<id>" and
// half-closes; the token named like the id is served, bare.
func TestLoadCredentialPeer(t *testing.T) {
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	d := StartTokend(t, StandInConfig(t, ep, ""))
	for _, id := range []string{"vibes", "api-token"} { // by name; else the default
		local := &net.UnixAddr{Name: fmt.Sprintf("@%x/unit/api-call.service/%s", time.Now().UnixNano(), id), Net: "unix"}
		c, err := net.DialUnix("unix", local, &net.UnixAddr{Name: d.Sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, _ := bufio.NewReader(c).ReadString(0)
		c.Close()
		if got != ep.LastToken() {
			t.Errorf("credential %s: %q", id, got)
		}
	}
	if !strings.Contains(d.Out.String(), `"claimed_unit":"api-call.service"`) {
		t.Errorf("unit not logged")
	}
	d.NoLeaks("csecret", ep.LastToken())
}

// unitRoot lays out the units and binaries under a root for systemd-analyze.
func unitRoot(t *testing.T) (root string, units []string) {
	tokend, tokenctl := Binaries(t)
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
		Need(t, "systemd-analyze", "apt-get install systemd")
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
		Need(t, "systemd-analyze", "apt-get install systemd")
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
	ep1 := NewEndpoint(t, "basic+body", "cid", "csecret")
	ep2 := NewEndpoint(t, "body", "cid2", "csecret2")
	cfg := StandInConfig(t, ep1, "")
	d := StartTokend(t, cfg)
	tokA := d.Token("vibes")

	vault2 := VaultStandIn(t, "cid2", "csecret2")
	vault1 := regexp.MustCompile(`address = "([^"]+)"`).FindStringSubmatch(cfg)[1]
	cfg2 := strings.Replace(cfg, vault1, vault2, 1) + fmt.Sprintf(`
[token.second]
token_url = %q
client_auth = "body"
scope = "https://rbm.vibes.com/rbm.agents"
kv_path = "tokend/second"
`, ep2.TokenURL())
	cfg2 = strings.Replace(cfg2, "%SOCK%\"\n", "%SOCK%\"\ndefault_token = \"vibes\"\n", 1)
	d.Write(cfg2)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	WaitFor(t, "the reload", 5*time.Second, func() bool { return strings.Contains(d.Out.String(), "configuration reloaded") })
	if got := d.Token("second"); got != ep2.LastToken() {
		t.Errorf("new token not served from the new vault: %q", got)
	}
	if got := d.Token("vibes"); got != tokA {
		t.Errorf("unchanged token was refetched")
	}
	if list, _, _ := d.Ctl("list"); list != "second vibes" {
		t.Errorf("list: %q", list)
	}

	// Remove vibes (and its default); second stays.
	cfg3 := strings.Replace(cfg2, "default_token = \"vibes\"\n", "", 1)
	cfg3 = cfg3[:strings.Index(cfg3, "[token.vibes]")] + cfg3[strings.Index(cfg3, "[token.second]"):]
	d.Write(cfg3)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	WaitFor(t, "the second reload", 5*time.Second, func() bool {
		return strings.Count(d.Out.String(), "configuration reloaded") == 2
	})
	if _, errs, code := d.Ctl("get", "vibes"); code != 1 || !strings.Contains(errs, "unknown-token") {
		t.Errorf("removed token: %d %q", code, errs)
	}
	if got := d.Token(); got != ep2.LastToken() {
		t.Errorf("default after removal: %q", got)
	}
	d.NoLeaks("csecret", "csecret2", tokA)
}
