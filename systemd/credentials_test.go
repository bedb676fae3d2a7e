package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

// A host without Vault: the client secret is a systemd credential,
// encrypted with the host key (systemd-creds setup, then encrypt, as the
// README says), handed to tokend by the shipped drop-in
// (examples/credentials.conf) with LoadCredentialEncrypted=, under a
// real systemd; non-root clients on and off the allow lists read the
// token. The plaintext is gone from disk before tokend starts.
func TestRealSystemdEncryptedCredential(t *testing.T) {
	if _, err := exec.LookPath("systemd-creds"); err != nil {
		daemontest.Need(t, "systemd-creds", "apt-get install systemd")
	}
	const secret = "creds-s3cret+/="
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", secret)
	read, tokendBin, tokenctlBin := daemontest.Shipped(t)
	daemontest.HostUsers(t)
	cfg := daemontest.ClientsConfig("", "", ep.TokenURL())
	cfg.Vault = daemontest.VaultConfig{}
	for _, tc := range cfg.Token {
		tc.KVPath = ""
		tc.ClientID, tc.ClientSecretFile = "cid", "${CREDENTIALS_DIRECTORY}/vibes-secret"
	}
	dropIn := strings.ReplaceAll(read("examples/credentials.conf"), "/etc/credstore.encrypted/", "/srv/credstore.encrypted/")
	if !strings.Contains(dropIn, "\nLoadCredentialEncrypted=vibes-secret:/srv/credstore.encrypted/vibes-secret\n") {
		t.Fatalf("the shipped drop-in changed:\n%s", dropIn)
	}
	s := daemontest.BootSystemd(t, map[string]string{
		"tokend.service":                    read("tokend.service"),
		"tokend.socket":                     read("tokend.socket"),
		"tokend.service.d/credentials.conf": dropIn,
		"tokend.service.d/test.conf":        "[Service]\nExecStart=\nExecStart=/srv/tokend --config /srv/tokend.toml\n",
	}, map[string][]byte{"tokend": tokendBin, "tokenctl": tokenctlBin, "tokend.toml": []byte(cfg.TOML()), "secret.txt": []byte(secret + "\n")})

	// The host key lives in the namespaces' own /var/lib/systemd (a
	// tmpfs there), never the host's.
	in := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("nsenter", append([]string{"-t", s.PID, "-m", "-p", "--"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	in("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/var/lib/systemd")
	in("systemd-creds", "setup")
	in("install", "-d", "-m", "0700", "/srv/credstore.encrypted")
	in("systemd-creds", "encrypt", "--with-key=host", "--name=vibes-secret", "/srv/secret.txt", "/srv/credstore.encrypted/vibes-secret")
	in("shred", "-u", "/srv/secret.txt")
	enc, err := os.ReadFile(filepath.Join(s.Dir, "srv/credstore.encrypted/vibes-secret"))
	if err != nil || len(enc) == 0 || strings.Contains(string(enc), secret) {
		t.Fatalf("the encrypted credential: %d bytes, %v, plaintext inside: %v", len(enc), err, strings.Contains(string(enc), secret))
	}

	issued := func(tok string) bool { return ep.IssuedSince(0, tok) }
	s.Must("start", "tokend.service")
	s.CheckClients(t, "with an encrypted credential", "/srv/tokenctl", issued)
	if out, code := s.CtlAs(daemontest.UserListed(), "/srv/tokenctl", "status", "vibes"); code != 0 || !strings.Contains(out, "file") {
		t.Errorf("tokenctl status: exit %d\n%s", code, out)
	}
	// Nothing of the secret outside the service: not in the units' files,
	// not on the console (tokend's log).
	if con := s.Console(); strings.Contains(con, secret) {
		t.Errorf("the secret reached the console")
	}
	if strings.Contains(s.Console(), "client_secret_file") {
		t.Errorf("tokend warns about the credential systemd made:\n%s", s.Console())
	}
}
