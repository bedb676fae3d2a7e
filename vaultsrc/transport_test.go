package vaultsrc

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
)

// A Vault (or something in its place) that redirects a read elsewhere
// never gets the Vault token sent there: the catcher, on another port,
// receives nothing.
func TestNoRedirectToAnotherHost(t *testing.T) {
	var caught atomic.Int32
	catcher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caught.Add(1)
		w.WriteHeader(500)
	}))
	defer catcher.Close()
	for _, status := range []int{301, 302, 307, 308} {
		vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, catcher.URL+r.URL.Path, status)
		}))
		tok := filepath.Join(t.TempDir(), "token")
		os.WriteFile(tok, []byte("hvs.secret-vault-token"), 0o600)
		src, err := New(Config{Address: vault.URL, Auth: "token", TokenFile: tok}, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Read(context.Background(), Secret{Mount: "secret", Path: "app", Version: 2, IDField: "client_id", SecretField: "client_secret"})
		vault.Close()
		if err == nil {
			t.Errorf("%d: read succeeded", status)
		} else if strings.Contains(err.Error(), "hvs.secret") {
			t.Errorf("%d: error holds the token: %v", status, err)
		}
		if status != 308 && !strings.Contains(err.Error(), "tokend sends its Vault token to no other host") {
			t.Errorf("%d: %v", status, err)
		}
	}
	if n := caught.Load(); n != 0 {
		t.Errorf("the catcher received %d requests", n)
	}
}

// An error page of any size is read only up to the cap, and the error is
// one line.
func TestVaultErrorBounded(t *testing.T) {
	var sent atomic.Int64
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(502)
		chunk := []byte(strings.Repeat("<html>bad gateway\n", 1000))
		for i := 0; i < 1000; i++ { // 18 MB on offer
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer vault.Close()
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t"), 0o600)
	src, _ := New(Config{Address: vault.URL, Auth: "token", TokenFile: tok}, zerolog.Nop(), nil)
	_, err := src.Read(context.Background(), Secret{Mount: "secret", Path: "app", Version: 2, IDField: "a", SecretField: "b"})
	if err == nil || !strings.HasPrefix(err.Error(), "reading secret/app (kv v2): vault answered 502 to GET /v1/secret/data/app: not a Vault answer: <html>") {
		t.Fatalf("error: %.200v", err)
	}
	if len(err.Error()) > maxBody+200 {
		t.Errorf("error of %d bytes", len(err.Error()))
	}
}

// A proxy (or a server) that echoes the request's X-Vault-Token in its
// error page does not put the token into tokend's errors, which go to
// STATUS and the logs.
func TestVaultErrorHidesEchoedToken(t *testing.T) {
	for _, raw := range []bool{true, false} {
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/auth/token/lookup-self" {
				w.WriteHeader(200)
				io.WriteString(w, `{"data":{"ttl":3600,"renewable":false}}`)
				return
			}
			w.WriteHeader(502)
			if raw {
				io.WriteString(w, "<html>bad gateway; your request had X-Vault-Token: "+r.Header.Get("X-Vault-Token")+"</html>")
			} else {
				io.WriteString(w, `{"errors":["upstream failed for token `+r.Header.Get("X-Vault-Token")+`"]}`)
			}
		}))
		tok := filepath.Join(t.TempDir(), "token")
		os.WriteFile(tok, []byte("hvs.echoed-vault-token"), 0o600)
		src, err := New(Config{Address: proxy.URL, Auth: "token", TokenFile: tok}, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Read(context.Background(), Secret{Mount: "secret", Path: "app", Version: 2, IDField: "client_id", SecretField: "client_secret"})
		proxy.Close()
		if err == nil || strings.Contains(err.Error(), "hvs.echoed") || !strings.Contains(err.Error(), "[vault token]") {
			t.Errorf("raw %v: %v", raw, err)
		}
	}
}
