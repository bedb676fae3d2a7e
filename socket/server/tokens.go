package server

import (
	"context"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

// Token is what the server hands out: the protocol's token.
type Token = proto.Token

// Query says which token a request wants.
type Query struct {
	Name string        // "" for the default token
	Min  time.Duration // min=: at least this long left (0: min_remaining alone)
	Wait time.Duration // how long to wait for a first token that is on its way
	// Rejected is a token an API refused (the proxy, after a 401
	// invalid_token): another one is wanted, by a forced refresh if need
	// be (limited as min='s).
	Rejected string
}

// NamedError is a *proto.Error about the token called Name: what a query
// for the default token ("") resolved to, for the logs.
type NamedError struct {
	Name string
	Err  *proto.Error
}

func (e *NamedError) Error() string { return e.Err.Error() }
func (e *NamedError) Unwrap() error { return e.Err }

// Tokens is what the server needs from whoever keeps the tokens.
type Tokens interface {
	// Token returns the token q names if peer may read it. Errors should
	// be *proto.Error with code denied, unknown-token or unavailable;
	// anything else is answered as unavailable. It may wait while ctx and
	// q allow, e.g. for a first token that is on its way.
	Token(ctx context.Context, q Query, peer Peer) (Token, error)
	// Watch calls send with the token q names now and at every change,
	// and with an *proto.Error (unavailable) when it becomes unavailable,
	// until ctx ends (nil) or send fails (its error). It returns the
	// lookup's error when the token is gone or peer lost access to it (at
	// once, or after a reload).
	Watch(ctx context.Context, q Query, peer Peer, send func(Token, error) error) error
	// Proof is a fresh DPoP proof (RFC 9449) for method and url, bound
	// to the token q names (ath), if peer may read it; a token that is
	// not DPoP is a bad-request error.
	Proof(ctx context.Context, q Query, method, url string, peer Peer) (string, error)
	// Names lists the tokens peer may read.
	Names(peer Peer) []string
	// Status reports on the token called name ("" for the default) if
	// peer may read it; errors as for Token.
	Status(name string, peer Peer) (proto.Status, error)
	// Metrics is the Prometheus text exposition for peer: the tokens it
	// may read, and the daemon-wide series.
	Metrics(peer Peer) ([]byte, error)
}

// Meter counts answered requests. It is called on the read path, so it
// must not block and should not allocate.
type Meter interface {
	// Request counts one answer: code is "ok" or the protocol error code.
	Request(verb proto.Verb, code string)
}

// Verbs for Meter beyond the protocol's own.
const (
	VerbBare  proto.Verb = "BARE"  // connect-and-read (LoadCredential=, socat </dev/null)
	VerbOther proto.Verb = "OTHER" // no known verb was read: busy, too long, unknown verb
)
