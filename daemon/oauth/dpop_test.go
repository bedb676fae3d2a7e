package oauth

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
)

// RFC 7638 §3.1's example: the thumbprint of its RSA key.
func TestJWKThumbprint(t *testing.T) {
	jwk := map[string]string{"kty": "RSA", "e": "AQAB",
		"n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
	if got := jwkThumbprint(jwk); got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Errorf("thumbprint %s", got)
	}
}

// A proof of each algorithm verifies with the jwk in its header and
// holds what RFC 9449 §4.2 asks: typ, htm, htu without query and
// fragment, iat, a fresh jti, ath, and the origin's nonce.
func TestDPoPProof(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, alg := range DPoPAlgs {
		d, err := NewDPoP(alg)
		if err != nil {
			t.Fatal(err)
		}
		d.SetNonce("https://API.example.com:8443/other", "n-1")
		d.SetNonce("https://elsewhere.example/", "n-2")
		jtis := map[string]bool{}
		for range 3 {
			proof, err := d.Proof("POST", "https://api.example.com:8443/v1/x?secret=1#frag", "the-token", now)
			if err != nil {
				t.Fatal(err)
			}
			header, claims := verifyJWS(t, proof)
			sum := sha256.Sum256([]byte("the-token"))
			if header["typ"] != "dpop+jwt" || header["alg"] != alg || claims["htm"] != "POST" ||
				claims["htu"] != "https://api.example.com:8443/v1/x" || claims["iat"] != float64(now.Unix()) ||
				claims["ath"] != base64.RawURLEncoding.EncodeToString(sum[:]) || claims["nonce"] != "n-1" {
				t.Errorf("%s: header %v claims %v", alg, header, claims)
			}
			jti, _ := claims["jti"].(string)
			if jti == "" || jtis[jti] {
				t.Errorf("%s: jti %q repeated or missing", alg, jti)
			}
			jtis[jti] = true
			jwk := map[string]string{}
			for k, v := range header["jwk"].(map[string]any) {
				jwk[k] = v.(string)
			}
			if jwkThumbprint(jwk) != d.Thumbprint() || jwk["d"] != "" {
				t.Errorf("%s: the header's jwk is not the key's public part", alg)
			}
		}
		// The token request's proof has no ath.
		proof, _ := d.Proof("POST", "https://idp.example/oauth2/token", "", now)
		if _, claims := verifyJWS(t, proof); claims["ath"] != nil || claims["nonce"] != nil {
			t.Errorf("%s: token request proof %v", alg, claims)
		}
	}
	d, _ := NewDPoP("")
	for _, bad := range []struct{ method, url string }{{"get", "https://a/"}, {"GET", "ftp://a/"}, {"GET", "https://user:pw@a/"}, {"GET X", "https://a/"}} {
		if _, err := d.Proof(bad.method, bad.url, "t", now); err == nil {
			t.Errorf("%q %q: no error", bad.method, bad.url)
		}
	}
	if _, err := NewDPoP("HS256"); err == nil || !strings.Contains(err.Error(), "want ES256, EdDSA or RS256") {
		t.Errorf("HS256: %v", err)
	}
}

func verifyJWS(t *testing.T, jws string) (header, claims map[string]any) {
	t.Helper()
	header, claims, err := daemontest.VerifyDPoPProof(jws)
	if err != nil {
		t.Fatal(err)
	}
	return header, claims
}
