package oauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

// DPoP (RFC 9449): a key pair made at start, in memory only, whose
// proofs bind the tokens to it. A token request carries a proof for the
// token endpoint; every API request needs its own proof, with ath, the
// hash of the token. A restart makes a new key, so the token is fetched
// again.
type DPoP struct {
	key crypto.Signer
	alg string
	jwk map[string]string
	jkt string // the key's thumbprint (RFC 7638): the token's cnf.jkt

	mu     sync.Mutex
	nonces map[string]string // by origin: the latest DPoP-Nonce each server gave
}

// DPoPAlgs are the algorithms dpop_alg may name.
var DPoPAlgs = []string{"ES256", "EdDSA", "RS256"}

// NewDPoP makes a key pair for alg ("" is ES256).
func NewDPoP(alg string) (*DPoP, error) {
	d := &DPoP{alg: alg, nonces: map[string]string{}}
	b64 := base64.RawURLEncoding.EncodeToString
	var err error
	switch alg {
	case "", "ES256":
		d.alg = "ES256"
		var k *ecdsa.PrivateKey
		if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err == nil {
			x, y := make([]byte, 32), make([]byte, 32)
			k.X.FillBytes(x)
			k.Y.FillBytes(y)
			d.key, d.jwk = k, map[string]string{"crv": "P-256", "kty": "EC", "x": b64(x), "y": b64(y)}
		}
	case "EdDSA":
		var pub ed25519.PublicKey
		var k ed25519.PrivateKey
		if pub, k, err = ed25519.GenerateKey(rand.Reader); err == nil {
			d.key, d.jwk = k, map[string]string{"crv": "Ed25519", "kty": "OKP", "x": b64(pub)}
		}
	case "RS256":
		var k *rsa.PrivateKey
		if k, err = rsa.GenerateKey(rand.Reader, 2048); err == nil {
			d.key, d.jwk = k, map[string]string{"e": b64(big.NewInt(int64(k.E)).Bytes()), "kty": "RSA", "n": b64(k.N.Bytes())}
		}
	default:
		return nil, fmt.Errorf("dpop_alg %q: want ES256, EdDSA or RS256", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("making the DPoP key: %w", err)
	}
	d.jkt = jwkThumbprint(d.jwk)
	return d, nil
}

// jwkThumbprint is RFC 7638's: the SHA-256 of the required members, in
// lexicographic order, without spaces (json.Marshal sorts map keys, and
// jwk holds the required members only).
func jwkThumbprint(jwk map[string]string) string {
	canon, _ := json.Marshal(jwk)
	sum := sha256.Sum256(canon)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Thumbprint is the key's JWK thumbprint: a DPoP-bound token's cnf.jkt.
func (d *DPoP) Thumbprint() string { return d.jkt }

// Proof is a fresh proof for method and rawURL (its query and fragment
// left out of htu), with ath when accessToken is given, and the latest
// nonce the URL's origin gave, if any.
func (d *DPoP) Proof(method, rawURL, accessToken string, now time.Time) (string, error) {
	htu, origin, err := htuOf(rawURL)
	if err != nil {
		return "", err
	}
	if method == "" || strings.ContainsAny(method, " \t\r\n") || strings.ToUpper(method) != method {
		return "", fmt.Errorf("DPoP proof: method %q: want an HTTP method such as GET", method)
	}
	var jti [16]byte
	rand.Read(jti[:])
	claims := map[string]any{"htm": method, "htu": htu, "iat": now.Unix(), "jti": hex.EncodeToString(jti[:])}
	if accessToken != "" {
		claims["ath"] = proto.Ath(accessToken)
	}
	d.mu.Lock()
	if n := d.nonces[origin]; n != "" {
		claims["nonce"] = n
	}
	d.mu.Unlock()
	h, _ := json.Marshal(map[string]any{"alg": d.alg, "typ": "dpop+jwt", "jwk": d.jwk})
	c, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sig, err := jwsSign(d.key, d.alg, []byte(input))
	if err != nil {
		return "", fmt.Errorf("signing the DPoP proof: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// SetNonce keeps the nonce a server gave (a DPoP-Nonce header) for the
// next proofs to its origin.
func (d *DPoP) SetNonce(rawURL, nonce string) {
	if nonce == "" || len(nonce) > 1024 {
		return
	}
	if _, origin, err := htuOf(rawURL); err == nil {
		d.mu.Lock()
		d.nonces[origin] = nonce
		d.mu.Unlock()
	}
}

// Nonce is the latest nonce rawURL's origin gave, or "".
func (d *DPoP) Nonce(rawURL string) string {
	_, origin, err := htuOf(rawURL)
	if err != nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nonces[origin]
}

// htuOf is rawURL without query and fragment (RFC 9449 §4.2), and its
// origin.
func htuOf(rawURL string) (htu, origin string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return "", "", fmt.Errorf("DPoP proof: %q is not an http(s) URL", clipText(rawURL))
	}
	u.RawQuery, u.Fragment, u.RawFragment, u.ForceQuery = "", "", "", false
	u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	return u.String(), u.Scheme + "://" + u.Host, nil
}

func clipText(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
