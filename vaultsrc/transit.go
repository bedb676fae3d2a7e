package vaultsrc

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
)

// TransitKeyType returns the type of a Transit key, e.g. "rsa-2048",
// "ecdsa-p256" or "ed25519".
func (s *Source) TransitKeyType(ctx context.Context, mount, key string) (string, error) {
	sec, err := s.call(ctx, mount+"/keys/"+key, func() (map[string]any, error) {
		sec, err := s.client.Logical().ReadWithContext(ctx, mount+"/keys/"+key)
		if sec == nil || err != nil {
			return nil, err
		}
		return sec.Data, nil
	})
	if err != nil {
		return "", fmt.Errorf("reading transit key %s/%s: %w", mount, key, compact(err))
	}
	t, _ := sec["type"].(string)
	if t == "" {
		return "", fmt.Errorf("transit key %s/%s: no type in Vault's answer", mount, key)
	}
	return t, nil
}

// TransitSign has Vault Transit sign input with key, for the JWS
// algorithm alg (RS256, PS256, ES256 or EdDSA), and returns the signature
// in JWS form. The private key never leaves Vault.
func (s *Source) TransitSign(ctx context.Context, mount, key, alg string, input []byte) ([]byte, error) {
	body := map[string]any{"input": base64.StdEncoding.EncodeToString(input)}
	path := mount + "/sign/" + key
	switch alg {
	case "RS256":
		path += "/sha2-256"
		body["signature_algorithm"] = "pkcs1v15"
	case "PS256":
		path += "/sha2-256"
		body["signature_algorithm"] = "pss"
		body["salt_length"] = "hash" // JWS PS256: the salt is as long as the hash
	case "ES256":
		path += "/sha2-256"
		body["marshaling_algorithm"] = "jws" // r||s, base64url
	case "EdDSA":
	default:
		return nil, fmt.Errorf("transit signing: unsupported alg %q", alg)
	}
	data, err := s.call(ctx, path, func() (map[string]any, error) {
		sec, err := s.client.Logical().WriteWithContext(ctx, path, body)
		if sec == nil || err != nil {
			return nil, err
		}
		return sec.Data, nil
	})
	if err != nil {
		return nil, fmt.Errorf("signing with transit key %s/%s: %w", mount, key, compact(err))
	}
	sig, _ := data["signature"].(string)
	// "vault:v<N>:<signature>"
	parts := strings.SplitN(sig, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" {
		return nil, fmt.Errorf("signing with transit key %s/%s: unexpected signature format", mount, key)
	}
	if alg == "ES256" {
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[2], "="))
	}
	return base64.StdEncoding.DecodeString(parts[2])
}
