// Package systemd holds tokend's unit files; its tests check them with
// systemd-analyze and run them under a real systemd.
package systemd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// unitRoot lays out the units and binaries under a root for systemd-analyze.
func unitRoot(t *testing.T) (root string, units []string) {
	tokend, tokenctl := daemontest.Binaries(t)
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
	files, _ := filepath.Glob("*.s*")
	ex, _ := filepath.Glob("examples/*")
	for _, f := range append(files, ex...) {
		data, _ := os.ReadFile(f)
		if strings.HasSuffix(f, ".conf") {
			// A drop-in for tokend.service: verified with it.
			os.MkdirAll(filepath.Join(root, "etc/systemd/system/tokend.service.d"), 0o755)
			os.WriteFile(filepath.Join(root, "etc/systemd/system/tokend.service.d", filepath.Base(f)), data, 0o644)
			continue
		}
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
		daemontest.Need(t, "systemd-analyze", "apt-get install systemd")
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
		daemontest.Need(t, "systemd-analyze", "apt-get install systemd")
	}
	out, _ := exec.Command(sa, "security", "--offline=true", "tokend.service").CombinedOutput()
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

// The project's units under a real systemd: socket activation, readiness,
// a consumer service, LoadCredential= from the socket, reload, kill -9
// with clients asking, and the STATUS= line in systemctl status.
func TestRealSystemd(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	read, tokendBin, tokenctlBin := daemontest.Shipped(t)
	cfg := daemontest.StandInConfig(t, ep)
	cfg.Socket = "/run/tokend/tokend.sock"
	tokenFile := cfg.Vault.TokenFile
	// The Vault token comes in through LoadCredential=, as an AppRole
	// secret_id would: tokend reads it from ${CREDENTIALS_DIRECTORY}.
	cfg.Vault.TokenFile = "${CREDENTIALS_DIRECTORY}/vault-token"
	vaultToken, _ := os.ReadFile(tokenFile)

	s := daemontest.BootSystemd(t, map[string]string{
		"tokend.service": read("tokend.service"),
		"tokend.socket":  read("tokend.socket"),
		// The installed unit, pointed at the test's binary and config.
		"tokend.service.d/test.conf": "[Service]\nExecStart=\nExecStart=/srv/tokend --config /srv/tokend.toml\nWatchdogSec=4s\n" +
			"LoadCredential=vault-token:/srv/vault-token\nStandardError=journal\n",
		// journald, as on a real host: tokend logs to it natively.
		"systemd-journald.socket":  read("/usr/lib/systemd/system/systemd-journald.socket"),
		"systemd-journald.service": read("/usr/lib/systemd/system/systemd-journald.service"),
		"consumer.service": `[Unit]
Requires=tokend.socket
After=tokend.service
[Service]
Type=oneshot
DynamicUser=yes
SupplementaryGroups=tokend-clients
ExecStart=/bin/sh -c 'echo "consumer-token=$(/srv/tokenctl --socket /run/tokend/tokend.sock get | tr -d "\\n" | sha256sum | cut -c1-16)"'
`,
		// The shipped example, with the test's paths.
		"tokend-metrics.service": strings.NewReplacer("/usr/bin/tokenctl", "/srv/tokenctl",
			"/var/lib/prometheus/node-exporter", "/srv/textfile").Replace(read("examples/tokend-metrics.service")),
		"api-call.service": `[Unit]
Requires=tokend.socket
After=tokend.service
[Service]
Type=oneshot
DynamicUser=yes
LoadCredential=api-token:/run/tokend/tokend.sock
ExecStart=/bin/sh -c 'echo "credential-token=$(sha256sum < "$CREDENTIALS_DIRECTORY/api-token" | cut -c1-16)"'
`,
	}, map[string][]byte{"tokend": tokendBin, "tokenctl": tokenctlBin, "tokend.toml": []byte(cfg.TOML()), "vault-token": vaultToken,
		"textfile/README": []byte("node_exporter's textfile directory\n")})

	s.Must("start", "systemd-journald.socket", "systemd-journald.service")
	s.Must("start", "tokend.socket")
	if st, _ := s.Ctl("is-active", "tokend.service"); st == "active" {
		t.Errorf("tokend.service started before anyone connected")
	}

	// (a) A consumer ordered after the socket reads a token with tokenctl.
	s.Must("start", "consumer.service")
	tok := ep.LastToken()
	if !s.ConsoleShows("consumer-token=" + daemontest.SHA(tok)) {
		t.Errorf("consumer did not print the token's hash %s", daemontest.SHA(tok))
	}
	if st := s.Must("show", "tokend.service", "-p", "Type,ActiveState,SubState", "--value"); st != "notify\nactive\nrunning" {
		t.Errorf("tokend.service: %q", st)
	}

	// (b) LoadCredential= straight from the socket.
	s.Must("start", "api-call.service")
	if !s.ConsoleShows("credential-token=" + daemontest.SHA(tok)) {
		t.Errorf("LoadCredential= did not deliver the token (hash %s)", daemontest.SHA(tok))
	}

	// (f) The textfile example: tokenctl metrics, written atomically.
	s.Must("start", "tokend-metrics.service")
	prom, err := os.ReadFile("/proc/" + s.PID + "/root/srv/textfile/tokend.prom")
	if err != nil {
		t.Fatalf("tokend-metrics.service wrote nothing: %v\n%s", err, s.Console())
	}
	m := daemontest.ParseMetrics(t, string(prom))
	if v, ok := m.Value("tokend_token_valid", "token", "vibes"); !ok || v != 1 {
		t.Errorf("textfile: tokend_token_valid{token=vibes} = %v (present %v)", v, ok)
	}
	if left, _ := filepath.Glob("/proc/" + s.PID + "/root/srv/textfile/.tokend.prom.*"); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// (e) The STATUS= line in systemctl status.
	status, _ := s.Ctl("status", "tokend.service")
	if !strings.Contains(status, "Status: \"serving 1 token; vibes valid until ") {
		t.Errorf("systemctl status lacks the STATUS= line:\n%s", status)
	}

	// (c) Reload keeps serving, with the same token.
	s.Must("reload", "tokend.service")
	c := proto.Client{Path: s.Sock(), Timeout: 20 * time.Second}
	if got, err := c.Do(context.Background(), "TOKEN"); err != nil || got != tok {
		t.Errorf("after reload: %v, same token %v", err, got == tok)
	}

	// (d) kill -9 while clients keep asking: none lost once systemd restarts it.
	ask := daemontest.StartAskers(c, 4, 20*time.Millisecond)
	daemontest.WaitFor(t, "clients answered", 10*time.Second, func() bool { return ask.OK.Load() > 10 })
	s.Must("kill", "-s", "KILL", "tokend.service")
	daemontest.WaitFor(t, "systemd to restart tokend", 20*time.Second, func() bool {
		out, _ := s.Ctl("show", "tokend.service", "-p", "NRestarts", "--value")
		return out == "1"
	})
	atRestart := ask.OK.Load()
	daemontest.WaitFor(t, "answers from the restarted tokend", 20*time.Second, func() bool { return ask.OK.Load() > atRestart+20 })
	// Outlive a few watchdog intervals: the watchdog is petted, no restart.
	time.Sleep(5 * time.Second)
	ask.Finish(t, "kill -9 and systemd's restart")
	if n, _ := s.Ctl("show", "tokend.service", "-p", "NRestarts", "--value"); n != "1" {
		t.Errorf("NRestarts = %s, want 1 (a watchdog timeout restarts it too)", n)
	}
	if con := s.Console(); strings.Contains(con, "csecret") || strings.Contains(con, tok) {
		t.Errorf("a secret or token reached the console")
	}

	// The journal has tokend's entries with priorities and fields.
	journal, err := exec.Command("nsenter", "-t", s.PID, "-m", "-p", "--", "journalctl", "--no-pager", "-o", "json",
		"_SYSTEMD_UNIT=tokend.service").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl: %v\n%s", err, journal)
	}
	j := string(journal)
	for _, want := range []string{`"MESSAGE":"token refreshed"`, `"TOKEN":"vibes"`, `"PRIORITY":"6"`, `"MESSAGE":"ready"`} {
		if !strings.Contains(j, want) {
			t.Errorf("journal lacks %s:\n%.3000s", want, j)
		}
	}
	if strings.Contains(j, "csecret") || strings.Contains(j, tok) {
		t.Errorf("a secret or token reached the journal")
	}
}

// The shipped units under a real systemd, with the clients a host really
// has: non-root members of tokend-clients on and off the allow lists, and a
// user outside the group, after `systemctl start tokend.service` and again
// after a restart (each start of the service used to re-own the socket,
// and PrivateUsers= made every client uid 65534).
func TestRealSystemdClients(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	unit, tokendBin, tokenctlBin := daemontest.Shipped(t)
	daemontest.HostUsers(t)
	cfg := daemontest.ClientsConfig(daemontest.VaultStandIn(t, "cid", "csecret"), "/srv/vault-token", ep.TokenURL())
	s := daemontest.BootSystemd(t, map[string]string{
		"tokend.service":             unit("tokend.service"),
		"tokend.socket":              unit("tokend.socket"),
		"tokend.service.d/test.conf": "[Service]\nExecStart=\nExecStart=/srv/tokend --config /srv/tokend.toml\n",
	}, map[string][]byte{"tokend": tokendBin, "tokenctl": tokenctlBin, "tokend.toml": []byte(cfg.TOML()), "vault-token": []byte("test-token")})
	issued := func(tok string) bool { return ep.IssuedSince(0, tok) }
	s.Must("start", "tokend.service")
	s.CheckClients(t, "after start", "/srv/tokenctl", issued)
	s.Must("restart", "tokend.service")
	s.CheckClients(t, "after restart", "/srv/tokenctl", issued)
}
