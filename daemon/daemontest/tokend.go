package daemontest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

// Tokend is a running tokend binary.
type Tokend struct {
	*Proc
	t        *testing.T
	Sock     string
	Config   string
	Tokenctl string
}

// StartTokend writes cfg (on the test's own socket unless it names one)
// and runs tokend on it until it answers PING.
func StartTokend(t *testing.T, cfg Config, env ...string) *Tokend {
	t.Helper()
	tokend, tokenctl := Binaries(t)
	// Not t.TempDir(): its parent is 0700, and other uids must reach the
	// socket so that its own mode and the allow lists decide.
	dir, err := os.MkdirTemp("", "tokend-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &Tokend{t: t, Sock: filepath.Join(dir, "tokend.sock"), Config: filepath.Join(dir, "tokend.toml"), Tokenctl: tokenctl}
	d.Write(cfg)
	d.Proc = Start(t, append([]string{"VAULT_ADDR=", "VAULT_TOKEN="}, env...), tokend, "--config", d.Config)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tokend logs:\n%s", d.Out)
		}
	})
	WaitFor(t, "tokend to listen", 10*time.Second, func() bool {
		if d.Exited() {
			t.Fatalf("tokend exited: %v\n%s", d.Err, d.Out)
		}
		_, err := proto.Client{Path: d.Sock, Timeout: time.Second}.Do(context.Background(), "PING")
		return err == nil
	})
	return d
}

// Write replaces the config file (tokend reads it again on SIGHUP) with
// cfg, on d's socket unless cfg names one, and then the extra lines: what a
// Config cannot say, such as an unknown key (in the last table).
func (d *Tokend) Write(cfg Config, extra ...string) {
	if cfg.Socket == "" {
		cfg.Socket = d.Sock
	}
	text := cfg.TOML() + strings.Join(extra, "\n")
	if err := os.WriteFile(d.Config, []byte(text), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

// Ctl runs tokenctl and returns stdout, stderr and the exit code.
func (d *Tokend) Ctl(args ...string) (string, string, int) {
	return d.CtlAs(nil, args...)
}

func (d *Tokend) CtlAs(cred *syscall.Credential, args ...string) (string, string, int) {
	d.t.Helper()
	cmd := exec.Command(d.Tokenctl, append([]string{"--socket", d.Sock}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	return strings.TrimSuffix(out.String(), "\n"), errb.String(), code
}

// Token reads the default (or named) Token, failing the test on error.
func (d *Tokend) Token(name ...string) string {
	d.t.Helper()
	out, errs, code := d.Ctl(append([]string{"get"}, name...)...)
	if code != 0 {
		d.t.Fatalf("tokenctl get %v: exit %d: %s\nlogs:\n%s", name, code, errs, d.Out)
	}
	return out
}

// AwaitNewToken waits until tokend serves a token that ep issued after the
// call, i.e. one obtained under whatever the test just changed.
func (d *Tokend) AwaitNewToken(ep *Endpoint, what string, within time.Duration) {
	d.t.Helper()
	before := ep.IssuedCount()
	WaitFor(d.t, what, within, func() bool { return ep.IssuedSince(before, d.Token()) })
}

// NoLeaks fails if any secret appears in the daemon's logs.
func (d *Tokend) NoLeaks(secrets ...string) {
	d.t.Helper()
	logs := d.Out.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			d.t.Errorf("secret %.6s… found in tokend's logs", s)
		}
	}
}
