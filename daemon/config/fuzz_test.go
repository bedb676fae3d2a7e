package config

import (
	"errors"
	"strings"
	"testing"
)

// The config parser never panics; it either returns a configuration that
// holds together or problems that each say something.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("socket_mode = 438\n[token.a]\ntoken_url = \"http://x\"\n"))
	f.Add([]byte("[token.\"a b\"]\nallow_users = [1]\nmin_remaining = \"-1s\"\n"))
	f.Add([]byte("[vault]\naddress = \"http://user:pw@h\"\n[[token]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("f.toml", data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("not a ConfigError with problems: %v", err)
			}
			for _, p := range ce.Problems {
				if strings.TrimSpace(p) == "" {
					t.Fatal("an empty problem")
				}
			}
			return
		}
		if c.Tokens[c.DefaultToken] == nil {
			t.Fatalf("default token %q is not configured", c.DefaultToken)
		}
		for name, tc := range c.Tokens {
			if tc.Name != name || tc.RetryMax <= 0 || tc.RequestTimeout <= 0 || tc.MinRemaining < 0 || tc.TokenURL == "" {
				t.Fatalf("token %q: %+v", name, tc)
			}
		}
		if c.SocketMode > 0o777 || c.MaxConnections < 1 || c.MaxPerUID < 1 || c.IdleTimeout <= 0 {
			t.Fatalf("config %+v", c)
		}
	})
}
