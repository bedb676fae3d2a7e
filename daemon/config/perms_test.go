package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

// A file sink in a directory someone else owns is warned about: that user
// could swap the token file for their own.
func TestWarningsFileSinkDir(t *testing.T) {
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "chown a directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "theirs")
	os.Mkdir(dir, 0o755)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Listen: Listen{Socket: filepath.Join(t.TempDir(), "t.sock"), SocketMode: 0o660},
		Tokens: map[string]*TokenConfig{"a": {File: &FileSink{Path: filepath.Join(dir, "a.token")}}}}
	got := strings.Join(Warnings("", cfg, false), "\n")
	if !strings.Contains(got, `token.a.file: directory "`+dir+`" is owned by uid 65534`) {
		t.Errorf("warnings:\n%s", got)
	}
	os.Chown(dir, 0, 0)
	if got := strings.Join(Warnings("", cfg, false), "\n"); strings.Contains(got, "token.a.file") {
		t.Errorf("a root-owned directory warned about:\n%s", got)
	}
}

// A file the service user cannot read, or cannot reach, is a problem
// naming the key, the user and the fix; computed from the modes, so that
// root's `tokend check` speaks for the tokend user.
func TestFileProblemAsServiceUser(t *testing.T) {
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "files owned by root, judged for another user")
	}
	svc := &account{name: "svc", uid: 54321, gids: []uint32{54321}}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	secret := filepath.Join(dir, "secret-id")
	os.WriteFile(secret, []byte("s"), 0o600)
	if p := fileProblem(fileKey{key: "vault.secret_id_file", path: secret}, svc); !strings.Contains(p, `vault.secret_id_file: "`+secret+`" cannot be read by the service user svc (owner uid 0, group 0, mode 0600): chgrp svc`) {
		t.Errorf("root's 0600 file: %q", p)
	}
	os.Chown(secret, 0, 54321)
	os.Chmod(secret, 0o640)
	if p := fileProblem(fileKey{key: "vault.secret_id_file", path: secret}, svc); p != "" {
		t.Errorf("a file of the user's group, 0640: %q", p)
	}
	os.Chmod(dir, 0o700)
	if p := fileProblem(fileKey{key: "vault.secret_id_file", path: secret}, svc); !strings.Contains(p, "is in a directory the service user svc cannot enter") {
		t.Errorf("a file in a closed directory: %q", p)
	}
	// A credential is copied by systemd for the service: only whether it
	// exists and this process can read it counts.
	if p := fileProblem(fileKey{key: "vault.secret_id_file", path: secret, credential: true}, svc); p != "" {
		t.Errorf("a credential's source: %q", p)
	}
	if p := fileProblem(fileKey{key: "vault.secret_id_file", path: filepath.Join(dir, "none"), credential: true}, svc); !strings.Contains(p, "does not exist: LoadCredential=") {
		t.Errorf("a missing credential: %q", p)
	}
}

// A file sink's directory that a group other than tokend's may write is
// refused: a member replaced the token file in an adversarial review.
func TestFileSinkGroupWritableDir(t *testing.T) {
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "chgrp a directory to another group")
	}
	dir := filepath.Join(t.TempDir(), "sink")
	os.Mkdir(dir, 0o770)
	os.Chmod(dir, 0o770)
	base := "[vault]\naddress = \"http://127.0.0.1:8200\"\ntoken_file = \"/dev/null\"\n[token.a]\ntoken_url = \"https://x/oauth2/token\"\nkv_path = \"p\"\nfile = \"" + dir + "/a.token\"\n"
	os.Chown(dir, 0, 65534)
	if _, err := ParseConfig("g.toml", []byte(base)); err == nil || !strings.Contains(err.Error(), `token.a.file: its directory "`+dir+`" is writable by group 65534 (mode 0770)`) {
		t.Errorf("a directory group 65534 may write: %v", err)
	}
	os.Chown(dir, 0, os.Getegid())
	if _, err := ParseConfig("g.toml", []byte(base)); err != nil {
		t.Errorf("a directory tokend's own group may write: %v", err)
	}
	os.Chown(dir, 0, 65534)
	os.Chmod(dir, 0o750)
	if _, err := ParseConfig("g.toml", []byte(base)); err != nil {
		t.Errorf("a directory group 65534 may only read: %v", err)
	}
}
