package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIDMaps(t *testing.T) {
	maps := func(uid, gid string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if strings.HasSuffix(p, "uid_map") {
				return []byte(uid), nil
			}
			return []byte(gid), nil
		}
	}
	host := "         0          0 4294967295\n"
	private := "         0          0          1\n       998        998          1\n" // systemd's PrivateUsers=
	listed := &Config{Tokens: map[string]*TokenConfig{"open": {}, "vibes": {Access: Access{UIDs: []uint32{1001}}}}}
	open := &Config{Tokens: map[string]*TokenConfig{"open": {}}}
	for _, tc := range []struct {
		name     string
		uid, gid string
		cfg      *Config
		want     string // "" = accepted
	}{
		{"host namespace", host, host, listed, ""},
		{"private users", private, private, listed, `allow lists of token vibes need peer ids as the host sees them, but /proc/self/uid_map is "0 0 1 998 998 1"`},
		{"gid map only", host, private, listed, "/proc/self/gid_map"},
		{"no allow lists", private, private, open, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkIDMaps(tc.cfg, idMapProblem(maps(tc.uid, tc.gid)))
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	if p := idMapProblem(func(string) ([]byte, error) { return nil, os.ErrNotExist }); p != "" {
		t.Errorf("a kernel without user namespaces: %q", p)
	}
}

// The real binary in a real user namespace that maps only root (as
// PrivateUsers= maps root and the service user) refuses allow lists, with
// exit 2 and the reason.
func TestUserNamespaceRefused(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		Need(t, "unshare", "apt-get install util-linux")
	}
	tokend, _ := Binaries(t)
	ep := NewEndpoint(t, "basic+body", "cid", "csecret")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tokend.toml")
	text := strings.ReplaceAll(StandInConfig(t, ep, ""), "%SOCK%", filepath.Join(dir, "t.sock"))
	os.WriteFile(cfg, []byte(strings.Replace(text, `retry_max = "1s"`, "retry_max = \"1s\"\nallow_uids = [1001]", 1)), 0o600)
	cmd := exec.Command(unshare, "--user", "--map-root-user", tokend, "--config", cfg)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "allow lists of token vibes need peer ids as the host sees them, but /proc/self/uid_map is") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	// Without allow lists it runs, and warns.
	os.WriteFile(cfg, []byte(text), 0o600)
	p := Start(t, nil, unshare, "--user", "--map-root-user", tokend, "--config", cfg)
	WaitFor(t, "the warning", 10*time.Second, func() bool { return strings.Contains(p.Out.String(), "peer ids are not the host's") })
}
