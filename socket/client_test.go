package socket_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/tokend/tokend/socket"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
)

// tokens is a Tokens with one token, "api", whose value the test sets.
type tokens struct {
	mu      sync.Mutex
	value   string
	changed chan struct{}
	asked   []server.Query
}

func (f *tokens) current(q server.Query) (server.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, q)
	switch {
	case q.Name != "" && q.Name != "api":
		return server.Token{}, &proto.Error{Code: proto.CodeUnknown, Msg: "no token " + q.Name}
	case f.value == "":
		return server.Token{}, &proto.Error{Code: proto.CodeUnavailable, Msg: "none now"}
	}
	return server.Token{Name: "api", Type: "Bearer", Value: f.value, Scope: "s", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (f *tokens) set(v string) {
	f.mu.Lock()
	f.value = v
	f.mu.Unlock()
	f.changed <- struct{}{}
}

func (f *tokens) Token(_ context.Context, q server.Query, _ server.Peer) (server.Token, error) {
	return f.current(q)
}
func (f *tokens) Names(server.Peer) []string { return []string{"api"} }

func (f *tokens) Proof(context.Context, server.Query, string, string, server.Peer) (string, error) {
	return "", &proto.Error{Code: proto.CodeBadRequest, Msg: "not a DPoP token"}
}
func (f *tokens) Status(string, server.Peer) (proto.Status, error) {
	return proto.Status{}, errors.New("unused")
}
func (f *tokens) Metrics(server.Peer) ([]byte, error) { return nil, errors.New("unused") }
func (f *tokens) Watch(ctx context.Context, q server.Query, _ server.Peer, send func(server.Token, error) error) error {
	for {
		t, err := f.current(q)
		var perr *proto.Error
		if errors.As(err, &perr) && perr.Code != proto.CodeUnavailable {
			return err
		}
		if err := send(t, err); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.changed:
		}
	}
}

func serve(t *testing.T, f *tokens) string {
	path := filepath.Join(t.TempDir(), "t.sock")
	ln, err := server.Listen(path, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); (&server.Server{Tokens: f, Log: zerolog.Nop()}).Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// oauth2.NewClient with TokenSource sets the header; min= goes on the
// wire; errors carry the protocol code.
func TestTokenSource(t *testing.T) {
	f := &tokens{value: "tok-1", changed: make(chan struct{}, 10)}
	path := serve(t, f)
	var got []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
	}))
	defer api.Close()

	hc := oauth2.NewClient(context.Background(), oauth2.ReuseTokenSource(nil, socket.TokenSource{Path: path, Min: 90 * time.Second}))
	for i := 0; i < 3; i++ {
		resp, err := hc.Get(api.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(got) != 3 || got[0] != "Bearer tok-1" || got[2] != "Bearer tok-1" {
		t.Errorf("Authorization headers: %q", got)
	}
	f.mu.Lock()
	asked := f.asked
	f.mu.Unlock()
	if len(asked) != 1 || asked[0].Min != 90*time.Second {
		t.Errorf("asked %+v: want one JSON request with min=90 (ReuseTokenSource keeps the token)", asked)
	}

	_, err := socket.TokenSource{Path: path, Name: "nope"}.Token()
	var e *socket.Error
	if !errors.As(err, &e) || e.Code != "unknown-token" {
		t.Errorf("unknown token: %v", err)
	}
	t.Setenv("TOKEND_SOCKET", path)
	if tok, err := (socket.TokenSource{}).Token(); err != nil || tok.AccessToken != "tok-1" || tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 50*time.Minute {
		t.Errorf("$TOKEND_SOCKET: %+v %v", tok, err)
	}
}

// Watch gets the token, each change, and a zero Token while none.
func TestClientWatch(t *testing.T) {
	f := &tokens{value: "tok-1", changed: make(chan struct{}, 10)}
	path := serve(t, f)
	seen := make(chan socket.Token, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- socket.Client{Path: path}.Watch(ctx, "api", func(t socket.Token) { seen <- t }) }()
	next := func() socket.Token {
		select {
		case t := <-seen:
			return t
		case <-time.After(5 * time.Second):
			t.Fatal("no token from Watch")
			return socket.Token{}
		}
	}
	if tok := next(); tok.AccessToken != "tok-1" || tok.Scope != "s" {
		t.Errorf("first: %+v", tok)
	}
	f.set("")
	if tok := next(); tok.AccessToken != "" {
		t.Errorf("while unavailable: %+v", tok)
	}
	f.set("tok-2")
	if tok := next(); tok.AccessToken != "tok-2" {
		t.Errorf("after the change: %+v", tok)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch: %v", err)
	}
}

// A program importing package socket links neither the server, nor its
// logger, nor Vault's client.
func TestClientDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, bad := range []string{"rs/zerolog", "hashicorp/vault", "prometheus", "tokend/socket/server", "tokend/daemon"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("package socket depends on %s", bad)
		}
	}
}
