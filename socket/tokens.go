package socket

import (
	"context"
	"time"
)

// Token is what the server hands out. The server never logs Value.
type Token struct {
	Name      string
	Type      string // e.g. "Bearer"
	Value     string
	Scope     string
	ExpiresAt time.Time // carries a monotonic reading when set from time.Now
	FetchedAt time.Time
}

// Tokens is what the server needs from whoever keeps the tokens.
type Tokens interface {
	// Token returns the token called name ("" for the default) if peer may
	// read it. Errors should be *proto.Error with code denied, unknown-token or
	// unavailable; anything else is answered as unavailable. It may wait
	// while ctx allows, e.g. for a first token that is on its way.
	Token(ctx context.Context, name string, peer Peer) (Token, error)
	// Names lists the tokens peer may read.
	Names(peer Peer) []string
}
