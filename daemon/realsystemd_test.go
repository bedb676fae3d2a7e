package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

var (
	staticOnce sync.Once
	staticDir  string
	staticErr  error
)

// StaticBinaries builds tokend and tokenctl as the packages do (static, no
// race detector), to run inside a hardened unit.
func StaticBinaries(t *testing.T) string {
	staticOnce.Do(func() {
		staticDir, staticErr = os.MkdirTemp("", "tokend-static-")
		if staticErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", staticDir, "../cmd/tokend", "../cmd/tokenctl")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if staticErr != nil {
		t.Fatal(staticErr)
	}
	return staticDir
}

// SystemdNS is a real systemd running as PID 1 in fresh namespaces.
type SystemdNS struct {
	t       *testing.T
	Dir, cg string
	PID     string
}

func (s *SystemdNS) Ctl(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"-t", s.PID, "-m", "-p", "--", "systemctl", "--no-pager"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (s *SystemdNS) Must(args ...string) string {
	s.t.Helper()
	out, err := s.Ctl(args...)
	if err != nil {
		s.t.Fatalf("systemctl %s: %v\n%s\nconsole:\n%s", strings.Join(args, " "), err, out, s.Console())
	}
	return out
}

func (s *SystemdNS) Console() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "console.log"))
	return string(b)
}

// Sock is tokend's socket inside the namespaces, as the host reaches it.
func (s *SystemdNS) Sock() string { return "/proc/" + s.PID + "/root/run/tokend/tokend.sock" }

func BootSystemd(t *testing.T, units map[string]string, srv map[string][]byte) *SystemdNS {
	t.Helper()
	if os.Getuid() != 0 {
		Need(t, "root", "booting systemd in namespaces needs root")
	}
	for _, tool := range []string{"/usr/lib/systemd/systemd", "unshare", "nsenter", "script", "systemd-sysusers"} {
		if _, err := exec.LookPath(tool); err != nil {
			Need(t, tool, "apt-get install systemd util-linux bsdutils")
		}
	}
	dir, err := os.MkdirTemp("", "tokend-sd-")
	if err != nil {
		t.Fatal(err)
	}
	s := &SystemdNS{t: t, Dir: dir}
	cgroot := "/sys/fs/cgroup"
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
		cgroot = "/sys/fs/cgroup/unified" // hybrid layout
	}
	s.cg = filepath.Join(cgroot, filepath.Base(dir))
	for _, d := range []string{"units", "srv", "empty"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	for _, f := range []string{"boot.sh", "start.sh", "stop.sh"} {
		data, err := os.ReadFile(filepath.Join("testdata/systemd-ns", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), data, 0o755)
	}
	for name, text := range units {
		p := filepath.Join(dir, "units", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(text), 0o644)
	}
	for name, data := range srv {
		mode := os.FileMode(0o644)
		if name == "tokend" || name == "tokenctl" {
			mode = 0o755
		}
		os.WriteFile(filepath.Join(dir, "srv", name), data, mode)
	}
	out, err := exec.Command(filepath.Join(dir, "start.sh"), dir, s.cg).CombinedOutput()
	if err != nil {
		t.Fatalf("booting systemd: %v\n%s", err, out)
	}
	s.PID = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console:\n%s", s.Console())
		}
		exec.Command(filepath.Join(dir, "stop.sh"), dir, s.cg).Run()
		os.RemoveAll(dir)
	})
	return s
}

// Shipped creates tokend's user and group as the packages do, and returns
// a reader for unit files and the static binaries' contents.
func Shipped(t *testing.T) (read func(path string) string, tokend, tokenctl []byte) {
	t.Helper()
	bin := StaticBinaries(t)
	sysusers, _ := filepath.Abs("../packaging/sysusers.d/tokend.conf")
	if out, err := exec.Command("systemd-sysusers", sysusers).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v %s", err, out)
	}
	read = func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tokend, _ = os.ReadFile(filepath.Join(bin, "tokend"))
	tokenctl, _ = os.ReadFile(filepath.Join(bin, "tokenctl"))
	return read, tokend, tokenctl
}

func SHA(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:16]
}

// The project's units under a real systemd: socket activation, readiness,
// a consumer service, LoadCredential= from the socket, reload, kill -9
// with clients asking, and the STATUS= line in systemctl status.
func TestRealSystemd(t *testing.T) {
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	read, tokendBin, tokenctlBin := Shipped(t)
	cfg := strings.ReplaceAll(StandInConfig(t, ep, ""), "%SOCK%", "/run/tokend/tokend.sock")
	tokenFile := ConfigValue(cfg, "token_file")
	// The Vault token comes in through LoadCredential=, as an AppRole
	// secret_id would: tokend reads it from ${CREDENTIALS_DIRECTORY}.
	cfg = strings.ReplaceAll(cfg, tokenFile, "${CREDENTIALS_DIRECTORY}/vault-token")
	vaultToken, _ := os.ReadFile(tokenFile)

	s := BootSystemd(t, map[string]string{
		"tokend.service": read("../systemd/tokend.service"),
		"tokend.socket":  read("../systemd/tokend.socket"),
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
		"api-call.service": `[Unit]
Requires=tokend.socket
After=tokend.service
[Service]
Type=oneshot
DynamicUser=yes
LoadCredential=api-token:/run/tokend/tokend.sock
ExecStart=/bin/sh -c 'echo "credential-token=$(sha256sum < "$CREDENTIALS_DIRECTORY/api-token" | cut -c1-16)"'
`,
	}, map[string][]byte{"tokend": tokendBin, "tokenctl": tokenctlBin, "tokend.toml": []byte(cfg), "vault-token": vaultToken})

	s.Must("start", "systemd-journald.socket", "systemd-journald.service")
	s.Must("start", "tokend.socket")
	if st, _ := s.Ctl("is-active", "tokend.service"); st == "active" {
		t.Errorf("tokend.service started before anyone connected")
	}

	// (a) A consumer ordered after the socket reads a token with tokenctl.
	s.Must("start", "consumer.service")
	tok := ep.LastToken()
	if !strings.Contains(s.Console(), "consumer-token="+SHA(tok)) {
		t.Errorf("consumer did not print the token's hash %s", SHA(tok))
	}
	if st := s.Must("show", "tokend.service", "-p", "Type,ActiveState,SubState", "--value"); st != "notify\nactive\nrunning" {
		t.Errorf("tokend.service: %q", st)
	}

	// (b) LoadCredential= straight from the socket.
	s.Must("start", "api-call.service")
	if !strings.Contains(s.Console(), "credential-token="+SHA(tok)) {
		t.Errorf("LoadCredential= did not deliver the token (hash %s)", SHA(tok))
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
	ask := StartAskers(c, 4, 20*time.Millisecond)
	WaitFor(t, "clients answered", 10*time.Second, func() bool { return ask.OK.Load() > 10 })
	s.Must("kill", "-s", "KILL", "tokend.service")
	WaitFor(t, "systemd to restart tokend", 20*time.Second, func() bool {
		out, _ := s.Ctl("show", "tokend.service", "-p", "NRestarts", "--value")
		return out == "1"
	})
	atRestart := ask.OK.Load()
	WaitFor(t, "answers from the restarted tokend", 20*time.Second, func() bool { return ask.OK.Load() > atRestart+20 })
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
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	unit, tokendBin, tokenctlBin := Shipped(t)
	HostUsers(t)
	cfg := ClientsConfig(VaultStandIn(t, "cid", "csecret"), "/srv/vault-token", ep.TokenURL())
	s := BootSystemd(t, map[string]string{
		"tokend.service":             unit("../systemd/tokend.service"),
		"tokend.socket":              unit("../systemd/tokend.socket"),
		"tokend.service.d/test.conf": "[Service]\nExecStart=\nExecStart=/srv/tokend --config /srv/tokend.toml\n",
	}, map[string][]byte{"tokend": tokendBin, "tokenctl": tokenctlBin, "tokend.toml": []byte(cfg), "vault-token": []byte("test-token")})
	issued := func(tok string) bool { return ep.IssuedSince(0, tok) }
	s.Must("start", "tokend.service")
	s.CheckClients(t, "after start", "/srv/tokenctl", issued)
	s.Must("restart", "tokend.service")
	s.CheckClients(t, "after restart", "/srv/tokenctl", issued)
}
