package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

// TestCheckBrokenConfigs runs `tokend check` on every configuration in
// testdata/check: mistakes operators make, each with the first line
// "# exit N: TEXT", the exit status and a text the output must hold
// (which names the key). The same files show what serve would say.
func TestCheckBrokenConfigs(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	files, _ := filepath.Glob("testdata/check/*.toml")
	if len(files) < 50 {
		t.Fatalf("testdata/check holds %d configurations, want the 50 or more it had", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".toml"), func(t *testing.T) {
			text, _ := os.ReadFile(f)
			head, _, _ := strings.Cut(string(text), "\n")
			code, want, ok := strings.Cut(strings.TrimPrefix(head, "# "), ": ")
			if !ok || (code != "exit 0" && code != "exit 2") {
				t.Fatalf("first line %q: want \"# exit N: TEXT\"", head)
			}
			var out, errOut bytes.Buffer
			got := run([]string{"check", "--config", f}, &out, &errOut)
			all := out.String() + errOut.String()
			if "exit "+string(rune('0'+got)) != code || !strings.Contains(all, want) {
				t.Errorf("tokend check: exit %d, want %s with %q:\n%s", got, code, want, all)
			}
			for _, never := range []string{"map[", "interface {}", "[]any", "%!"} {
				if strings.Contains(all, never) {
					t.Errorf("output shows Go's internals (%q):\n%s", never, all)
				}
			}
			if code == "exit 2" && !strings.Contains(errOut.String(), "problem(s) in "+f) {
				t.Errorf("problems not on stderr:\n%s", all)
			}
		})
	}
}

// `tokend check` accepts the README's ${CREDENTIALS_DIRECTORY} setup from
// a shell, and checks its files with --credentials-dir.
func TestCheckCredentialsDir(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	cfg := "testdata/check/credentials-directory.toml"
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "--config", cfg, "--credentials-dir", dir}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), `vault.secret_id_file: "`+dir+`/vault-secret-id" does not exist: LoadCredential=`) {
		t.Errorf("--credentials-dir without the file: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	os.WriteFile(filepath.Join(dir, "vault-secret-id"), []byte("s"), 0o600)
	out.Reset()
	errOut.Reset()
	if code := run([]string{"check", "--config", cfg, "--credentials-dir", dir}, &out, &errOut); code != 0 || strings.Contains(errOut.String(), "not checked") {
		t.Errorf("--credentials-dir with the file: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"serve", "--config", cfg, "--credentials-dir", dir}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--credentials-dir is for tokend check") {
		t.Errorf("serve --credentials-dir: exit %d\n%s", code, errOut.String())
	}
}

// `tokend check` runs serve's id-map check: in a user namespace that does
// not map ids one to one (as under PrivateUsers=), allow lists are refused
// by both.
func TestCheckIDMaps(t *testing.T) {
	tokend, _ := daemontest.Binaries(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		daemontest.Need(t, "unshare", "apt-get install util-linux")
	}
	cfg := filepath.Join(t.TempDir(), "t.toml")
	os.WriteFile(cfg, []byte(`[vault]
address = "http://127.0.0.1:8200"
token_file = "/dev/null"
[token.vibes]
token_url = "https://api.example.com/oauth2/token"
kv_path = "tokend/vibes"
allow_uids = [1000]
`), 0o644)
	out, err := exec.Command("unshare", "--user", "--map-root-user", tokend, "check", "--config", cfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "the allow lists of token vibes need peer ids as the host sees them") {
		t.Errorf("check in a user namespace: %v\n%s", err, out)
	}
	serve, err := exec.Command("unshare", "--user", "--map-root-user", tokend, "--config", cfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(serve), "the allow lists of token vibes need peer ids") {
		t.Errorf("serve in a user namespace: %v\n%s", err, serve)
	}
}

// A metrics address that is taken is the configuration's doing: exit 2,
// which systemd does not restart, not 1 and a restart every 2 s.
func TestServeMetricsAddressInUse(t *testing.T) {
	tokend, _ := daemontest.Binaries(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "t.toml")
	os.WriteFile(cfg, []byte(`socket = "`+dir+`/t.sock"
metrics_listen = "`+ln.Addr().String()+`"
[vault]
address = "http://127.0.0.1:1"
token_file = "/dev/null"
[token.vibes]
token_url = "https://127.0.0.1:1/oauth2/token"
kv_path = "tokend/vibes"
`), 0o644)
	out, err := exec.Command(tokend, "--config", cfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "metrics_listen: \""+ln.Addr().String()+"\"") ||
		!strings.Contains(string(out), "address already in use") {
		t.Errorf("serve with metrics_listen in use: %v\n%s", err, out)
	}
}

// Every configuration the README shows passes `tokend check`, with the
// credentials directory given (a shell has none).
func TestCheckREADMEConfigs(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 3 {
		t.Fatalf("the README shows %d TOML blocks, want the 3 or more it has", len(blocks))
	}
	creds := t.TempDir()
	for _, f := range []string{"vault-token", "vault-secret-id", "vibes-secret"} {
		os.WriteFile(filepath.Join(creds, f), []byte("x\n"), 0o600)
	}
	os.WriteFile(filepath.Join(creds, "vault-role-id"), []byte("x\n"), 0o600)
	for i, b := range blocks {
		// The README's paths under /etc/tokend are the host's; here they
		// are in the test's directory.
		text := strings.ReplaceAll(b[1], "/etc/tokend/", creds+"/")
		if !strings.Contains(text, "[token.") {
			// A fragment (a [proxy.NAME]): checked beside the README's
			// token from a systemd credential.
			text = "[token.vibes]\ntoken_url = \"https://api.example.com/oauth2/token\"\nclient_id = \"my-client\"\nclient_secret_file = \"${CREDENTIALS_DIRECTORY}/vibes-secret\"\n" + text
		}
		file := filepath.Join(t.TempDir(), "tokend.toml")
		os.WriteFile(file, []byte(text), 0o600)
		var out, errOut bytes.Buffer
		if code := run([]string{"check", "--config", file, "--credentials-dir", creds, "--user", "root"}, &out, &errOut); code != 0 {
			t.Errorf("README block %d: tokend check exit %d:\n%s\n%s%s", i+1, code, text, out.String(), errOut.String())
		}
	}
}
