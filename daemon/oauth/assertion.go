package oauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/tokend/tokend/daemon/config"
)

// assertionType is RFC 7523 §2.2's client_assertion_type.
const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLife is how long a client assertion is valid: well under the
// five minutes servers accept, enough for a slow request.
const assertionLife = 2 * time.Minute

// ClientAssertion builds a private_key_jwt client assertion (RFC 7523
// §3, OIDC Core §9) signed with keyPEM: iss = sub = the client id, aud =
// the token endpoint (or assertion_audience), a fresh jti, iat and exp.
func ClientAssertion(tc *config.Fetch, endpoint, clientID, keyPEM, kid string, now time.Time) (string, error) {
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return "", err
	}
	alg, err := jwsAlg(key, tc.AssertionAlg)
	if err != nil {
		return "", err
	}
	return SignedAssertion(tc, endpoint, clientID, kid, alg, now, func(input []byte) ([]byte, error) {
		return jwsSign(key, alg, input)
	})
}

// SignedAssertion builds the assertion and has sign sign it (in JWS form).
func SignedAssertion(tc *config.Fetch, endpoint, clientID, kid, alg string, now time.Time, sign func([]byte) ([]byte, error)) (string, error) {
	aud := tc.AssertionAudience
	if aud == "" {
		aud = endpoint
	}
	input, err := signingInput(alg, kid, clientID, aud, now)
	if err != nil {
		return "", err
	}
	sig, err := sign([]byte(input))
	if err != nil {
		return "", fmt.Errorf("signing the client assertion: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// TransitAlg is the JWS algorithm for a Vault Transit key type.
func TransitAlg(keyType, want string) (string, error) {
	switch {
	case strings.HasPrefix(keyType, "rsa-"):
		if want == "PS256" {
			return "PS256", nil
		}
		return "RS256", nil
	case keyType == "ecdsa-p256":
		return "ES256", nil
	case keyType == "ed25519":
		return "EdDSA", nil
	}
	return "", fmt.Errorf("transit key type %q cannot sign a client assertion: use rsa-*, ecdsa-p256 or ed25519", keyType)
}

// signingInput is the JWT's header and claims, encoded and joined.
func signingInput(alg, kid, clientID, aud string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	header := map[string]string{"alg": alg, "typ": "JWT"}
	if kid != "" {
		header["kid"] = kid
	}
	claims := map[string]any{
		"iss": clientID, "sub": clientID, "aud": aud, "jti": hex.EncodeToString(jti[:]),
		"iat": now.Unix(), "exp": now.Add(assertionLife).Unix(),
	}
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c), nil
}

// parsePrivateKey reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1
// (EC). Errors never quote the key.
func parsePrivateKey(keyPEM string) (crypto.Signer, error) {
	block, _ := pem.Decode([]byte(keyPEM))
	if block == nil {
		return nil, errors.New("the private key field holds no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("the private key (PEM %q) does not parse: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return signer, nil
}

// jwsAlg is the JWS algorithm for key: RS256 for RSA (PS256 when asked),
// ES256 for P-256, EdDSA for Ed25519.
func jwsAlg(key crypto.Signer, want string) (string, error) {
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		if want == "PS256" {
			return "PS256", nil
		}
		return "RS256", nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC key on %s: only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		return "ES256", nil
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("unsupported key type %T", key.Public())
}

func jwsSign(key crypto.Signer, alg string, input []byte) ([]byte, error) {
	switch alg {
	case "EdDSA":
		return key.Sign(rand.Reader, input, crypto.Hash(0))
	case "PS256":
		h := sha256.Sum256(input)
		return key.Sign(rand.Reader, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	case "ES256":
		h := sha256.Sum256(input)
		der, err := key.Sign(rand.Reader, h[:], crypto.SHA256)
		if err != nil {
			return nil, err
		}
		return ecdsaJWS(der)
	}
	h := sha256.Sum256(input)
	return key.Sign(rand.Reader, h[:], crypto.SHA256)
}

// ecdsaJWS turns an ASN.1 ECDSA signature into JWS's fixed r||s form.
func ecdsaJWS(der []byte) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}
