package vaultsrc_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/vaultsrc"
)

// ReadEntry and WriteEntry against a real Vault: KV v2 check-and-set, as
// the shared token's lease relies on it.
func TestEntryCheckAndSet(t *testing.T) {
	v := daemontest.StartVault(t)
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("root"), 0o600)
	src, err := vaultsrc.New(vaultsrc.Config{Address: v.Addr, TokenFile: file}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	fields, version, err := src.ReadEntry(ctx, "secret", "tokend/shared/x")
	if err != nil || version != 0 || len(fields) != 0 {
		t.Fatalf("an entry that does not exist: %v, version %d, %v", fields, version, err)
	}
	if version, err = src.WriteEntry(ctx, "secret", "tokend/shared/x", map[string]string{"lease_holder": "a"}, 0); err != nil || version != 1 {
		t.Fatalf("first write: version %d, %v", version, err)
	}
	// A second writer that read version 0 loses.
	if _, err := src.WriteEntry(ctx, "secret", "tokend/shared/x", map[string]string{"lease_holder": "b"}, 0); !errors.Is(err, vaultsrc.ErrConflict) {
		t.Fatalf("stale cas: %v, want ErrConflict", err)
	}
	fields, version, err = src.ReadEntry(ctx, "secret", "tokend/shared/x")
	if err != nil || version != 1 || fields["lease_holder"] != "a" {
		t.Fatalf("after the race: %v, version %d, %v", fields, version, err)
	}
	if version, err = src.WriteEntry(ctx, "secret", "tokend/shared/x", map[string]string{"access_token": "t"}, 1); err != nil || version != 2 {
		t.Fatalf("write at the version read: %d, %v", version, err)
	}
	// A deleted entry reads as empty, at its version: a cas write replaces it.
	v.Call("DELETE", "secret/data/tokend/shared/x", nil)
	fields, version, err = src.ReadEntry(ctx, "secret", "tokend/shared/x")
	if err != nil || version != 2 || len(fields) != 0 {
		t.Fatalf("deleted: %v, version %d, %v", fields, version, err)
	}
	if _, err := src.WriteEntry(ctx, "secret", "tokend/shared/x", map[string]string{"access_token": "u"}, 2); err != nil {
		t.Fatalf("replacing a deleted entry: %v", err)
	}
	// Other failures are not conflicts.
	if _, err := src.WriteEntry(ctx, "nomount", "x", map[string]string{}, 0); err == nil || errors.Is(err, vaultsrc.ErrConflict) {
		t.Fatalf("write to a missing mount: %v", err)
	}
}
