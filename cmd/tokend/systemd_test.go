package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// READY=1 only once the token exists (the endpoint is down first), STATUS
// lines that say why, WATCHDOG=1 at half the interval, RELOADING=1 and
// READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
func TestSdNotify(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	for i := 0; i < 4; i++ {
		ep.Push(daemontest.Fault{Status: 503, Body: `{"error":"temporarily_unavailable"}`})
	}
	n := daemontest.ListenNotify(t)
	d := daemontest.StartTokend(t, daemontest.StandInConfig(t, ep), "NOTIFY_SOCKET="+n.Path, "WATCHDOG_USEC=600000")

	daemontest.WaitFor(t, "READY=1", 20*time.Second, func() bool { return n.Index("READY=1") >= 0 })
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
	daemontest.WaitFor(t, "RELOADING=1", 5*time.Second, func() bool { return n.Index("RELOADING=1") >= 0 })
	daemontest.WaitFor(t, "READY=1 after the reload", 5*time.Second, func() bool { return n.Count("READY=1") >= 2 })
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
		daemontest.Need(t, "systemd-socket-activate", "apt-get install systemd")
	}
	tokend, tokenctl := daemontest.Binaries(t)
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "tokend.toml"), filepath.Join(dir, "act.sock")
	unused := filepath.Join(dir, "configured.sock")
	cfg := daemontest.StandInConfig(t, ep)
	cfg.Socket = unused
	cfg.WriteFile(t, cfgPath)
	p := daemontest.Start(t, nil, activate, "-l", sock, "--fdname=tokend", tokend, "--config", cfgPath)
	daemontest.WaitFor(t, "the activation socket", 5*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })

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
func activated(t *testing.T, cfgPath string, files ...*os.File) *daemontest.Proc {
	tokend, _ := daemontest.Binaries(t)
	p := &daemontest.Proc{Cmd: exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" --config "$1"`, tokend, cfgPath),
		Out: &daemontest.SyncBuf{}, Done: make(chan struct{})}
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
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "tokend.toml"), filepath.Join(dir, "a.sock")
	cfg := daemontest.StandInConfig(t, ep)
	cfg.Socket = filepath.Join(dir, "unused.sock")
	cfg.WriteFile(t, cfgPath)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.File()
	defer f.Close()

	first := activated(t, cfgPath, f)
	ask := daemontest.StartAskers(proto.Client{Path: sock, Timeout: 20 * time.Second}, 4, 10*time.Millisecond)
	daemontest.WaitFor(t, "answers from the first daemon", 10*time.Second, func() bool { return ask.OK.Load() > 10 })
	first.Cmd.Process.Signal(syscall.SIGKILL)
	<-first.Done
	atDeath := ask.OK.Load()
	time.Sleep(time.Second) // clients keep connecting to a socket nobody accepts on
	activated(t, cfgPath, f)
	daemontest.WaitFor(t, "answers from the second daemon", 15*time.Second, func() bool { return ask.OK.Load() > atDeath+20 })
	ask.Finish(t, "a kill -9 and a 1s outage")
}

// Anything but exactly one Unix stream listener is refused, clearly.
func TestSocketActivationWrongListeners(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tokend.toml")
	cfg := daemontest.StandInConfig(t, ep)
	cfg.Socket = filepath.Join(dir, "unused.sock")
	cfg.WriteFile(t, cfgPath)
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
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	d := daemontest.StartTokend(t, daemontest.StandInConfig(t, ep))
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

// Reload: a new Vault address and a new token take effect; the token whose
// fetch settings did not change keeps its token; a removed token is gone.
func TestReloadVaultAndTokens(t *testing.T) {
	ep1 := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep2 := daemontest.NewEndpoint(t, "body", "cid2", "csecret2")
	cfg := daemontest.StandInConfig(t, ep1)
	d := daemontest.StartTokend(t, cfg)
	tokA := d.Token("vibes")

	cfg2 := cfg.Clone()
	cfg2.Vault.Address = daemontest.VaultStandIn(t, "cid2", "csecret2")
	cfg2.DefaultToken = "vibes"
	cfg2.Token["second"] = &daemontest.TokenConfig{TokenURL: ep2.TokenURL(), ClientAuth: "body",
		Scope: daemontest.Scope, KVPath: "tokend/second"}
	d.Write(cfg2)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the reload", 5*time.Second, func() bool { return strings.Contains(d.Out.String(), "configuration reloaded") })
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
	cfg3 := cfg2.Clone()
	cfg3.DefaultToken = ""
	delete(cfg3.Token, "vibes")
	d.Write(cfg3)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	daemontest.WaitFor(t, "the second reload", 5*time.Second, func() bool {
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

// The real binary in a real user namespace that maps only root (as
// PrivateUsers= maps root and the service user) refuses allow lists, with
// exit 2 and the reason.
func TestUserNamespaceRefused(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		daemontest.Need(t, "unshare", "apt-get install util-linux")
	}
	tokend, _ := daemontest.Binaries(t)
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tokend.toml")
	plain := daemontest.StandInConfig(t, ep)
	plain.Socket = filepath.Join(dir, "t.sock")
	listed := plain.Clone()
	listed.Vibes().AllowUIDs = []int{1001}
	listed.WriteFile(t, cfg)
	cmd := exec.Command(unshare, "--user", "--map-root-user", tokend, "--config", cfg)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "allow lists of token vibes need peer ids as the host sees them, but /proc/self/uid_map is") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	// Without allow lists it runs, and warns.
	plain.WriteFile(t, cfg)
	p := daemontest.Start(t, nil, unshare, "--user", "--map-root-user", tokend, "--config", cfg)
	daemontest.WaitFor(t, "the warning", 10*time.Second, func() bool { return strings.Contains(p.Out.String(), "peer ids are not the host's") })
}
