package proto

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// Ath is RFC 9449's hash of an access token: the ath claim of a DPoP
// proof made for a request that carries the token.
func Ath(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ProofBinds reports whether a DPoP proof (a PROOF answer) is bound to
// token: a client that asked for both in two requests checks that the
// token did not change in between.
func ProofBinds(proof, token string) bool {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var c struct {
		Ath string `json:"ath"`
	}
	return json.Unmarshal(b, &c) == nil && c.Ath != "" && c.Ath == Ath(token)
}
