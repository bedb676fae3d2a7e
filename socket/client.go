// Package socket is tokend's Go client: a Client for the daemon's Unix
// socket, and a TokenSource for golang.org/x/oauth2, so that a Go program
// gets an http.Client that sets Authorization with one line:
//
//	client := oauth2.NewClient(ctx, oauth2.ReuseTokenSource(nil, socket.TokenSource{}))
//
// It links neither the daemon, nor its logger, nor Vault's client: the
// server is package socket/server, and the wire protocol package
// socket/proto uses the standard library only.
package socket

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokend/tokend/socket/proto"
)

// DefaultPath is where tokend listens unless configured otherwise.
const DefaultPath = proto.DefaultPath

// Error is an error answered by tokend: Code is denied, unknown-token,
// unavailable, bad-request, too-long or busy.
//
//	var e *socket.Error
//	if errors.As(err, &e) && e.Code == "unavailable" { … }
type Error = proto.Error

// Token is a token as tokend hands it out.
type Token struct {
	AccessToken string
	TokenType   string // e.g. "Bearer"
	Scope       string
	Expiry      time.Time
}

// Client asks tokend. The zero value asks the socket at $TOKEND_SOCKET,
// else DefaultPath. Every call opens its own connection; a connection that
// drops before the answer (tokend restarting) is tried once more.
type Client struct {
	Path    string
	Timeout time.Duration // per call; default 30s (a min= refresh may take 10s)
}

func (c Client) proto() proto.Client {
	path := c.Path
	if path == "" {
		path = os.Getenv("TOKEND_SOCKET")
	}
	if path == "" {
		path = DefaultPath
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return proto.Client{Path: path, Timeout: timeout}
}

// Token asks for the token called name ("" for the default) with at least
// min left (0: the daemon's min_remaining). It is one JSON request: value,
// type and expiry together.
func (c Client) Token(ctx context.Context, name string, min time.Duration) (Token, error) {
	req := proto.Request{Verb: proto.VerbJSON, Name: name, Min: int((min + time.Second - 1) / time.Second)}
	out, err := c.proto().Do(ctx, req.String())
	if err != nil {
		return Token{}, err
	}
	var j proto.JSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		return Token{}, fmt.Errorf("tokend's JSON answer: %w", err)
	}
	exp, err := time.Parse(time.RFC3339, j.ExpiresAt)
	if err != nil || j.AccessToken == "" {
		return Token{}, fmt.Errorf("tokend's JSON answer lacks a token or its expiry (expires_at %q)", j.ExpiresAt)
	}
	return Token{AccessToken: j.AccessToken, TokenType: j.TokenType, Scope: j.Scope, Expiry: exp}, nil
}

// Watch calls each with the token called name now and every time it
// changes, and with a zero Token (AccessToken "") when it becomes
// unavailable, until ctx ends (nil) or tokend ends the watch (the token or
// the caller's access to it is gone: an *Error). It reconnects when
// tokend restarts.
func (c Client) Watch(ctx context.Context, name string, each func(Token)) error {
	pc := c.proto()
	return pc.Watch(ctx, name, func(value string, err error) error {
		if err != nil {
			each(Token{})
			return nil
		}
		// WATCH sends the value; the rest comes with it from JSON.
		t, jerr := c.Token(ctx, name, 0)
		if jerr != nil || t.AccessToken != value {
			t = Token{AccessToken: value, TokenType: "Bearer"}
		}
		each(t)
		return nil
	})
}

// TokenSource implements golang.org/x/oauth2.TokenSource by asking tokend.
// Wrap it in oauth2.ReuseTokenSource so that a token is asked for only
// when the last one is about to expire.
type TokenSource struct {
	Path string        // "" → $TOKEND_SOCKET, else DefaultPath
	Name string        // "" → the default token
	Min  time.Duration // 0 → the daemon's min_remaining
}

// Token implements oauth2.TokenSource.
func (s TokenSource) Token() (*oauth2.Token, error) {
	t, err := Client{Path: s.Path}.Token(context.Background(), s.Name, s.Min)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.Expiry}, nil
}
