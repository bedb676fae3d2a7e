package daemontest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
)

// VerifyDPoPProof checks a DPoP proof's signature (ES256, EdDSA or
// RS256) with the public jwk in its header, as a resource server does
// (RFC 9449 §4.3), independently of tokend's signing code; it returns
// the header and the claims for the caller's further checks.
func VerifyDPoPProof(proof string) (header, claims map[string]any, err error) {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("proof %q is not a JWS", proof)
	}
	dec := func(s string, v any) error {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, v)
	}
	if err := dec(parts[0], &header); err != nil {
		return nil, nil, err
	}
	if err := dec(parts[1], &claims); err != nil {
		return nil, nil, err
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	jwk, _ := header["jwk"].(map[string]any)
	if jwk == nil || jwk["d"] != nil {
		return nil, nil, fmt.Errorf("no public jwk in the header")
	}
	b := func(k string) []byte {
		s, _ := jwk[k].(string)
		v, _ := base64.RawURLEncoding.DecodeString(s)
		return v
	}
	input := []byte(parts[0] + "." + parts[1])
	h := sha256.Sum256(input)
	ok := false
	switch header["alg"] {
	case "ES256":
		pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b("x")), Y: new(big.Int).SetBytes(b("y"))}
		ok = len(sig) == 64 && ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	case "EdDSA":
		ok = ed25519.Verify(ed25519.PublicKey(b("x")), input, sig)
	case "RS256":
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(b("n")), E: int(new(big.Int).SetBytes(b("e")).Int64())}
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
	}
	if !ok {
		return nil, nil, fmt.Errorf("the signature (%v) does not verify with the header's jwk", header["alg"])
	}
	return header, claims, nil
}
