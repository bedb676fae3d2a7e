package vaultsrc

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// standIn is a small Vault: AppRole login, KV v1/v2 reads, a revocable token.
type standIn struct {
	mu      sync.Mutex
	valid   map[string]bool
	logins  int
	deleted bool
	data    map[string]any
}

func (v *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r.URL.Path == "/v1/auth/approle/login" {
		var body map[string]string
		json.NewDecoder(r.Body).Decode(&body)
		if body["role_id"] != "role" || body["secret_id"] != "sid" {
			w.WriteHeader(400)
			io.WriteString(w, `{"errors":["invalid role or secret ID"]}`)
			return
		}
		v.logins++
		tok := "hvs.token" + strings.Repeat("x", v.logins)
		v.valid[tok] = true
		json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{"client_token": tok, "lease_duration": 1200, "renewable": true}})
		return
	}
	if !v.valid[r.Header.Get("X-Vault-Token")] {
		w.WriteHeader(403)
		io.WriteString(w, `{"errors":["permission denied"]}`)
		return
	}
	switch r.URL.Path {
	case "/v1/secret/data/app":
		if v.deleted {
			w.WriteHeader(404)
			io.WriteString(w, `{"data":{"data":null,"metadata":{"version":3,"deletion_time":"2026-01-01T00:00:00Z","destroyed":false}}}`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"data": v.data, "metadata": map[string]any{"version": 2}}})
	case "/v1/kv1/app":
		json.NewEncoder(w).Encode(map[string]any{"data": v.data})
	default:
		w.WriteHeader(404)
		io.WriteString(w, `{"errors":[]}`)
	}
}

func setup(t *testing.T) (*standIn, *Source) {
	v := &standIn{valid: map[string]bool{}, data: map[string]any{"client_id": "cid", "client_secret": "top-secret"}}
	srv := httptest.NewServer(v)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "role"), []byte("role\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "sid"), []byte("sid"), 0o600)
	src, err := New(Config{Address: srv.URL, Auth: "approle", RoleIDFile: filepath.Join(dir, "role"), SecretIDFile: filepath.Join(dir, "sid")}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return v, src
}

var v2 = Secret{Mount: "secret", Path: "app", Version: 2, IDField: "client_id", SecretField: "client_secret"}

func TestReadKV(t *testing.T) {
	_, src := setup(t)
	c, err := src.Read(context.Background(), v2)
	if err != nil || c.ID != "cid" || c.Secret != "top-secret" {
		t.Fatalf("v2: %v %v", c, err)
	}
	c, err = src.Read(context.Background(), Secret{Mount: "kv1", Path: "app", Version: 1, IDField: "client_id", SecretField: "client_secret"})
	if err != nil || c.Secret != "top-secret" {
		t.Fatalf("v1: %v %v", c, err)
	}
	if s := c.String(); strings.Contains(s, "top-secret") {
		t.Errorf("String leaks the secret: %s", s)
	}
}

func TestReadErrors(t *testing.T) {
	v, src := setup(t)
	v.data = map[string]any{"client_id": "cid", "other": 5}
	_, err := src.Read(context.Background(), v2)
	if err == nil || !strings.Contains(err.Error(), `no field "client_secret"`) || !strings.Contains(err.Error(), "secret/app") {
		t.Errorf("missing field: %v", err)
	}
	v.data = map[string]any{"client_id": "cid", "client_secret": 42}
	if _, err = src.Read(context.Background(), v2); err == nil || !strings.Contains(err.Error(), "want a string") {
		t.Errorf("wrong type: %v", err)
	}
	v.deleted = true
	if _, err = src.Read(context.Background(), v2); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("deleted version: %v", err)
	}
	if _, err = src.Read(context.Background(), Secret{Mount: "secret", Path: "nope", Version: 2, IDField: "a", SecretField: "b"}); err == nil || !strings.Contains(err.Error(), "secret/nope") {
		t.Errorf("missing secret: %v", err)
	}
}

// A revoked token (403) means a new login, then the read succeeds.
func TestReloginOn403(t *testing.T) {
	v, src := setup(t)
	if _, err := src.Read(context.Background(), v2); err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	v.valid = map[string]bool{}
	v.mu.Unlock()
	if _, err := src.Read(context.Background(), v2); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if v.logins != 2 {
		t.Errorf("logins = %d, want 2", v.logins)
	}
}

func TestBadAppRole(t *testing.T) {
	_, src := setup(t)
	os.WriteFile(src.cfg.SecretIDFile, []byte("wrong"), 0o600)
	_, err := src.Read(context.Background(), v2)
	if err == nil || !strings.Contains(err.Error(), "approle login") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("bad secret_id: %v", err)
	}
}
