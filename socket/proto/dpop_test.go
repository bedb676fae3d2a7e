package proto

import (
	"encoding/base64"
	"testing"
)

func TestProofBinds(t *testing.T) {
	claims := func(json string) string {
		return "e30." + base64.RawURLEncoding.EncodeToString([]byte(json)) + ".sig"
	}
	// RFC 9449 §7.1's example: the token and its ath.
	const tok = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
	if got := Ath(tok); got != "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo" {
		t.Errorf("Ath = %s", got)
	}
	for proof, want := range map[string]bool{
		claims(`{"ath":"` + Ath(tok) + `"}`):     true,
		claims(`{"ath":"` + Ath("other") + `"}`): false,
		claims(`{}`):                             false,
		"not a proof":                            false,
	} {
		if ProofBinds(proof, tok) != want {
			t.Errorf("ProofBinds(%q) != %v", proof, want)
		}
	}
}
