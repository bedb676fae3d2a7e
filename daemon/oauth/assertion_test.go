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
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/config"
)

// KeyPEMs are test keys of every supported kind, in every PEM form.
func keyPEMs(t *testing.T) map[string]struct {
	pem string
	pub crypto.PublicKey
} {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k any) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	out := map[string]struct {
		pem string
		pub crypto.PublicKey
	}{
		"rsa-pkcs8": {pkcs8(rsaKey), &rsaKey.PublicKey},
		"rsa-pkcs1": {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})), &rsaKey.PublicKey},
		"ec-pkcs8":  {pkcs8(ecKey), &ecKey.PublicKey},
		"ec-sec1":   {string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), &ecKey.PublicKey},
		"ed25519":   {pkcs8(edKey), edKey.Public()},
	}
	return out
}

// Every key kind gives a JWT that verifies with its public key, with the
// claims RFC 7523 asks for; each assertion has its own jti.
func TestClientAssertion(t *testing.T) {
	now := time.Now()
	seen := map[string]bool{}
	for name, k := range keyPEMs(t) {
		for _, alg := range []string{"", "PS256"} {
			tc := &config.Fetch{AssertionAlg: alg}
			jwt, err := ClientAssertion(tc, "https://idp.example/token", "client-1", k.pem, "kid-1", now)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			parts := strings.Split(jwt, ".")
			if len(parts) != 3 {
				t.Fatalf("%s: %q", name, jwt)
			}
			var header map[string]string
			var claims map[string]any
			decode := func(s string, v any) {
				b, err := base64.RawURLEncoding.DecodeString(s)
				if err != nil || json.Unmarshal(b, v) != nil {
					t.Fatalf("%s: bad part %q", name, s)
				}
			}
			decode(parts[0], &header)
			decode(parts[1], &claims)
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
			var ok bool
			switch pub := k.pub.(type) {
			case *rsa.PublicKey:
				want := "RS256"
				if alg == "PS256" {
					want = "PS256"
					ok = rsa.VerifyPSS(pub, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
				} else {
					ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
				}
				ok = ok && header["alg"] == want
			case *ecdsa.PublicKey:
				ok = len(sig) == 64 && header["alg"] == "ES256" &&
					ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
			case ed25519.PublicKey:
				ok = header["alg"] == "EdDSA" && ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig)
			}
			if !ok {
				t.Errorf("%s %s: signature does not verify (header %v)", name, alg, header)
			}
			iat, exp := claims["iat"].(float64), claims["exp"].(float64)
			if claims["iss"] != "client-1" || claims["sub"] != "client-1" || claims["aud"] != "https://idp.example/token" ||
				header["kid"] != "kid-1" || header["typ"] != "JWT" || exp-iat > 300 || exp <= iat || int64(iat) != now.Unix() {
				t.Errorf("%s: header %v claims %v", name, header, claims)
			}
			jti, _ := claims["jti"].(string)
			if len(jti) < 16 || seen[jti] {
				t.Errorf("%s: jti %q empty or repeated", name, jti)
			}
			seen[jti] = true
		}
	}
	if _, err := ClientAssertion(&config.Fetch{}, "https://x/t", "c", "not a key", "", now); err == nil || strings.Contains(err.Error(), "not a key") {
		t.Errorf("a bad key: %v (and the error must not quote it)", err)
	}
	if _, err := ClientAssertion(&config.Fetch{AssertionAudience: "https://aud"}, "https://x/t", "c", keyPEMs(t)["ed25519"].pem, "", now); err != nil {
		t.Error(err)
	}
}
