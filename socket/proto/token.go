package proto

import (
	"encoding/json"
	"fmt"
	"time"
)

// Token is a token as tokend hands it out. The server never logs Value.
type Token struct {
	Name      string
	Type      string // e.g. "Bearer"
	Value     string
	Scope     string
	ExpiresAt time.Time // carries a monotonic reading when set from time.Now
	FetchedAt time.Time
}

// JSON is the JSON answer's shape: the token endpoint's own (RFC 6749
// §5.1), so code that reads OAuth2 token responses reads it unchanged,
// plus expires_at. expires_in counts from the answer.
type JSON struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
	Scope       string `json:"scope,omitempty"`
}

// JSON renders t as the JSON answer at now, on one line.
func (t Token) JSON(now time.Time) []byte {
	b, _ := json.Marshal(JSON{t.Value, t.Type, int64(t.ExpiresAt.Sub(now) / time.Second), t.ExpiresAt.UTC().Format(time.RFC3339), t.Scope})
	return b
}

// Info renders t's metadata as the INFO answer at now: never the value;
// scope last, as it may hold spaces.
func (t Token) Info(now time.Time) string {
	return fmt.Sprintf("name=%s token_type=%s expires_in=%d expires_at=%s fetched_at=%s scope=%s",
		t.Name, t.Type, int64(t.ExpiresAt.Sub(now)/time.Second),
		t.ExpiresAt.UTC().Format(time.RFC3339), t.FetchedAt.UTC().Format(time.RFC3339), t.Scope)
}
