package daemon

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
