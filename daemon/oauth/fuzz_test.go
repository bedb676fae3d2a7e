package oauth

import (
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/vaultsrc"
)

// The token endpoint's answer parser never panics, never accepts a token
// that would break a protocol line or a lifetime that is not finite and
// positive, and never lets the secret or a control byte into its errors.
func FuzzParseGrant(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"a","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"a","expires_in":"NaN"}`,
		`{"access_token":"a","expires_in":"1e400"}`,
		`{"access_token":"a b"}`,
		`{"access_token":"a","token_type":"s3cr3t\n"}`,
		`{"access_token":"a","expires_in":"czNjcjN0"}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	creds := vaultsrc.Credentials{ID: "id", Secret: "s3cr3t"}
	f.Fuzz(func(t *testing.T, body []byte) {
		g, err := parseGrant(200, body, creds)
		if err != nil {
			msg := err.Error()
			if strings.Contains(strings.ToLower(msg), "s3cr3t") {
				t.Fatalf("secret in %q", msg)
			}
			for i := 0; i < len(msg); i++ {
				if msg[i] < ' ' || msg[i] > '~' {
					t.Fatalf("byte 0x%02x in %q", msg[i], msg)
				}
			}
			return
		}
		if !isTokenText(g.AccessToken) || !isTokenText(g.TokenType) {
			t.Fatalf("grant %q %q", g.AccessToken, g.TokenType)
		}
		if g.Lifetime <= 0 || g.Lifetime > 10*365*24*time.Hour+time.Second {
			t.Fatalf("lifetime %v", g.Lifetime)
		}
	})
}
